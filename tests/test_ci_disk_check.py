"""``.ci/disk-check.sh``: the line that names a short disk before pip or apt fail on it.

A CI run once died after 58 s with pip's "No space left on device" while installing TensorFlow; the
Makefile and ``.ci/system-deps.sh`` now call this script first. It only warns (exit 0): the install
then succeeds or fails on its own terms, with the cause named above pip's message.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "disk-check.sh"


def run(directory: Path, need_mb: int, tmpdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(directory), str(need_mb), "the test install"],
                          capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin",
                                                                           "TMPDIR": str(tmpdir)})


def free_mb(path: Path) -> int:
    return shutil.disk_usage(path).free // (1024 * 1024)


def test_short_disk_named_in_one_line_and_exit_0(tmp_path: Path) -> None:
    need = free_mb(tmp_path) + 10**7  # more than any disk here has
    r = run(tmp_path, need, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    # tmp_path and TMPDIR are on one filesystem: one line, not one per path
    assert len(lines) == 1, r.stderr
    assert str(tmp_path) in lines[0] and f"needs about {need} MB" in lines[0]
    assert "the test install" in lines[0] and "No space left on device" in lines[0]
    reported = int(lines[0].split(" has ")[1].split(" MB")[0])
    assert abs(reported - free_mb(tmp_path)) < 512  # df's figure, give or take other writers


def test_enough_disk_prints_nothing(tmp_path: Path) -> None:
    r = run(tmp_path, 1, tmp_path)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == ""


def test_makefile_and_system_deps_call_it_and_pip_keeps_no_cache() -> None:
    make = (ROOT / "Makefile").read_text()
    assert ".ci/disk-check.sh" in make
    pip_lines = [l for l in make.splitlines() if "pip install" in l or "$(PIP_INSTALL)" in l]
    assert pip_lines and all("--no-cache-dir" in l or "$(PIP_INSTALL)" in l for l in pip_lines), pip_lines
    deps = (ROOT / ".ci" / "system-deps.sh").read_text()
    assert "disk-check.sh" in deps and "apt-get clean" in deps
