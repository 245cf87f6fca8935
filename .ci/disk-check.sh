#!/usr/bin/env bash
# Usage: disk-check.sh DIR NEEDED_MB WHAT
# Prints one line when the filesystem holding DIR (or pip's temporary directory) has less than
# NEEDED_MB free, so that a later "No space left on device" from pip or apt has its cause named up
# front. It only warns: the step then runs and fails, or succeeds, on its own terms.
set -euo pipefail
dir=$1 need=$2 what=$3
seen=""
for d in "$dir" "${TMPDIR:-/tmp}"; do
  read -r free mnt < <(df -Pm "$d" | awk 'NR==2 {print $4, $6}')
  case " $seen " in *" $mnt "*) continue ;; esac
  seen="$seen $mnt"
  if [ "$free" -lt "$need" ]; then
    echo "!! $what needs about $need MB free; $d has $free MB (df -h $d): it may fail with 'No space left on device'" >&2
  fi
done
