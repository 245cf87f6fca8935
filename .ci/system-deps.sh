#!/usr/bin/env bash
# Installs the Debian packages listed in .ci/apt-packages.txt that are not installed yet.
# Needs root (or sudo). Without either it says so loudly and exits 0: the tests that need a
# missing package then FAIL in the full environment (SER_EDGE_FULL_ENV=1), they never skip silently.
set -euo pipefail
cd "$(dirname "$0")"
mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' apt-packages.txt | tr -d ' ')
[ ${#pkgs[@]} -gt 0 ] || exit 0
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "!! system packages missing and no root/sudo to install them: ${missing[*]}" >&2
  echo "!! the tests that need them will fail; install them with apt-get" >&2
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
bash ./disk-check.sh / 2000 "the Debian packages (ARM toolchain, QEMU, Chromium, ...)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The downloaded .debs are not needed once installed; the Python install that follows needs the room.
$SUDO apt-get clean
