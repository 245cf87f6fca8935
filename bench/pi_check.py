"""`make pi-check`: the device side on Raspberry-Pi-like Debian userlands (arm64, armhf) under qemu-user.

    sudo python bench/pi_check.py [--arch arm64 armhf] [--cache /var/tmp/ser-edge-pi] [--seconds 20]

For each architecture:

1. a Debian bookworm userland (what Raspberry Pi OS bookworm is built on) made with ``debootstrap``
   (``--variant=minbase``, Python 3.11 and Debian's numpy), cached under ``--cache``;
2. ARM binaries run through ``qemu-user-static`` registered with binfmt_misc, with the CPU pinned:
   ``QEMU_CPU=cortex-a72`` (Raspberry Pi 4) for arm64 and ``cortex-a7`` (ARMv7 with NEON-VFPv4,
   Raspberry Pi 2/3 in 32-bit mode) for armhf. QEMU's default ``max`` CPU advertises extensions
   (SVE, ...) that XNNPACK then uses and that QEMU emulates wrongly, giving garbage scores;
3. the device extra installed from PyPI wheels into a venv that sees Debian's numpy: arm64 gets
   ``ai-edge-litert``, armhf ``tflite-runtime`` (its last 32-bit ARM wheel, 2.14);
4. the device-side tests (front end, protocol codec, runtime, serial device over ptys) run with
   pytest inside the userland;
5. ``bench/pi_parity.py`` runs there and on this x86 machine with the same interpreter package
   (arm64: LiteRT; armhf: tflite-runtime 2.14, in an x86 venv of its own), and every array is
   compared bit for bit: fixed-point features, int8 quantised inputs, int8 scores and labels of
   every window. (LiteRT and tflite-runtime 2.14 themselves differ in some int8 scores on the same
   CPU; that is reported as ``x86_litert_vs_tflite_runtime_2_14``.)

Needs root (debootstrap, chroot, mounts, binfmt registration) and the Debian packages
``debootstrap``, ``qemu-user-static`` (``binfmt-support`` optional). The first run downloads two
userlands (~2 × 150 MB) and the wheels; later runs reuse them (a few minutes per architecture, most
of it pytest under emulation). Too slow for the CI budget, so it is a benchmark target.

Writes bench/results/pi.json: ``arm64_bit_exact``, ``armhf_bit_exact``, per-architecture test
counts, interpreter/numpy versions, what differed if anything did, and the git commit measured
(``commit_measured``, taken when the run starts).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, git_commit, machine, write_result  # noqa: E402

import numpy as np  # noqa: E402

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
APT_INCLUDE = "python3,python3-venv,python3-pip,python3-numpy,ca-certificates"
ARCHES = {
    "arm64": {"qemu": "aarch64", "cpu": "cortex-a72", "wheels": ["ai-edge-litert"], "backend": "litert"},
    "armhf": {"qemu": "arm", "cpu": "cortex-a7", "wheels": ["tflite-runtime"], "backend": "tflite_runtime"},
}
# The x86 reference for an arch runs the same interpreter package: LiteRT here, and for armhf
# tflite-runtime 2.14 in a venv of its own (cache/x86-tflite): the question is whether the *CPU*
# changes any bit. (LiteRT and tflite-runtime 2.14 differ from each other in some int8 scores.)
X86_LEGACY = ["tflite-runtime==2.14.0", "numpy<2"]
VENV = "/opt/ser-edge-venv"
HOST_CA = "/etc/ssl/certs/ser-edge-host-ca.crt"
# Device-side tests: numpy + interpreter + termios only (what a Pi runs). The runtime tests that
# build their own tiny models need TensorFlow (model_build), which a Pi does not have; the
# interpreter path is covered there by the parity run with the shipped model instead.
DEVICE_TESTS = ["tests/test_frontend_fixed.py", "tests/test_frontend_streaming.py",
                "tests/test_protocol_codec.py", "tests/test_protocol_reassembly.py",
                "tests/test_serial_device.py", "tests/test_serial_reliability.py"]
COPY = ["edge_runtime", "tests", "bench/__init__.py", "bench/common.py", "bench/pi_parity.py",
        "firmware_bridge/__init__.py", "firmware_bridge/ptylink.py", "pyproject.toml"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def ensure_binfmt(qemu: str) -> None:
    """Mount binfmt_misc and register qemu-<arch> from /usr/lib/binfmt.d if not done yet."""
    bdir = Path("/proc/sys/fs/binfmt_misc")
    if not (bdir / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(bdir)])
    if (bdir / f"qemu-{qemu}").exists():
        return
    conf = Path(f"/usr/lib/binfmt.d/qemu-{qemu}.conf")
    if not conf.exists():
        raise SystemExit(f"pi-check: {conf} missing: apt-get install qemu-user-static")
    (bdir / "register").write_text(conf.read_text().strip() + "\n")


def ensure_rootfs(root: Path, arch: str) -> None:
    if (root / "usr/bin/python3").exists() and (root / ".ser-edge-debootstrap-ok").exists():
        return
    if shutil.which("debootstrap") is None:
        raise SystemExit("pi-check: debootstrap not found: apt-get install debootstrap qemu-user-static")
    shutil.rmtree(root, ignore_errors=True)
    run(["debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={APT_INCLUDE}", SUITE,
         str(root), MIRROR])
    (root / ".ser-edge-debootstrap-ok").touch()


@contextlib.contextmanager
def mounted(root: Path):
    """/proc, /dev and /dev/pts inside the userland (ptys for the serial tests), DNS for pip."""
    done = []
    try:
        for src, dst, opts in (("proc", "proc", ["-t", "proc"]), ("/dev", "dev", ["--bind"]),
                               ("/dev/pts", "dev/pts", ["--bind"])):
            target = root / dst
            target.mkdir(parents=True, exist_ok=True)
            run(["mount", *opts, src, str(target)])
            done.append(target)
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        # this machine's trust store, so that pip inside works behind the same TLS proxy as here
        cafile = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
        if os.path.exists(cafile):
            shutil.copyfile(cafile, root / HOST_CA.lstrip("/"))
        yield
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], check=False)


def chroot(root: Path, cpu: str, args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {"PATH": f"{VENV}/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
           "QEMU_CPU": cpu, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if (root / HOST_CA.lstrip("/")).exists():
        env.update(PIP_CERT=HOST_CA, SSL_CERT_FILE=HOST_CA, REQUESTS_CA_BUNDLE=HOST_CA)
    for k in ("PIP_INDEX_URL", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        if k in os.environ:
            env[k] = os.environ[k]
    chroot_bin = shutil.which("chroot") or "/usr/sbin/chroot"  # found on this machine's PATH
    return subprocess.run([chroot_bin, str(root), *args], env=env, **kw)


TEST_WHEELS = ["pytest", "hypothesis", "pyserial", "cobs"]


def ensure_venv(root: Path, arch: str, cpu: str) -> None:
    wheels = ARCHES[arch]["wheels"] + TEST_WHEELS
    stamp = root / f"opt/.ser-edge-venv-{'-'.join(wheels)}"
    if stamp.exists():
        return
    log(f"[{arch}] venv + PyPI wheels: {wheels}")
    if not (root / VENV.lstrip("/") / "bin/python").exists():
        chroot(root, cpu, ["python3", "-m", "venv", "--system-site-packages", VENV], check=True)
    chroot(root, cpu, [f"{VENV}/bin/pip", "install", "--quiet", "--only-binary=:all:", *wheels], check=True)
    stamp.touch()


def copy_tree(dst: Path) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    for rel in COPY:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dst / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def parse_pytest(out: str) -> dict:
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors")}
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?)", out.splitlines()[-1] if out else ""):
        counts["errors" if what.startswith("error") else what] = int(n)
    return counts


def x86_reference(backend: str, cache: Path, seconds: float) -> dict:
    """pi_parity on this machine with ``backend`` (tflite_runtime: in its own venv)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ref.npz"
        py = sys.executable
        if backend == "tflite_runtime":
            venv = cache / "x86-tflite"
            if not (venv / "bin/python").exists():
                run([sys.executable, "-m", "venv", str(venv)])
            run([str(venv / "bin/pip"), "install", "--quiet", *X86_LEGACY])
            py = str(venv / "bin/python")
        env = dict(os.environ, SER_EDGE_BACKEND=backend, PYTHONPATH=str(ROOT))
        subprocess.run([py, str(ROOT / "bench/pi_parity.py"), str(out), "--seconds", str(seconds)],
                       check=True, env=env, capture_output=True)
        return dict(np.load(out))


def check_arch(arch: str, cache: Path, ref: dict, seconds: float, tests: list[str]) -> dict:
    from bench.pi_parity import compare

    spec = ARCHES[arch]
    root = cache / arch
    t0 = time.monotonic()
    ensure_binfmt(spec["qemu"])
    ensure_rootfs(root, arch)
    res: dict = {"qemu_cpu": spec["cpu"], "debian": SUITE}
    with mounted(root):
        ensure_venv(root, arch, spec["cpu"])
        copy_tree(root / "ser-edge")
        ver = chroot(root, spec["cpu"], ["python3", "-c",
                     "import platform, numpy; print(platform.machine(), platform.python_version(), numpy.__version__)"],
                     capture_output=True, text=True, check=True).stdout.split()
        res.update({"uname_m": ver[0], "python": ver[1], "numpy": ver[2]})
        log(f"[{arch}] parity run ({seconds:g} s per signal)")
        p = chroot(root, spec["cpu"], ["sh", "-c", f"cd /ser-edge && SER_EDGE_BACKEND={spec['backend']} "
                                                    f"python bench/pi_parity.py /tmp/parity.npz --seconds {seconds}"],
                   capture_output=True, text=True)
        if p.returncode != 0:
            res.update({"bit_exact": False, "parity_error": p.stderr.strip().splitlines()[-5:]})
        else:
            meta = json.loads(p.stdout.strip().splitlines()[-1])
            got = dict(np.load(root / "tmp/parity.npz"))
            res.update({"backend": meta["backend"], **compare(ref, got)})
        log(f"[{arch}] device-side tests under qemu ({len(tests)} files)")
        t1 = time.monotonic()
        p = chroot(root, spec["cpu"], ["sh", "-c", "cd /ser-edge && python -m pytest -q -p no:cacheprovider "
                                                    "-o addopts= --continue-on-collection-errors "
                                                    + " ".join(tests)],
                   capture_output=True, text=True)
        tail = p.stdout.strip().splitlines()
        res["tests"] = parse_pytest(p.stdout.strip())
        res["tests_files"] = tests
        res["tests_exit_code"] = p.returncode
        res["tests_seconds"] = round(time.monotonic() - t1, 1)
        if p.returncode != 0:
            res["tests_failures"] = [ln for ln in tail if ln.startswith(("FAILED", "ERROR"))][:20]
    res["seconds"] = round(time.monotonic() - t0, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=list(ARCHES), choices=list(ARCHES))
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("SER_EDGE_PI_CACHE", "/var/tmp/ser-edge-pi")))
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each parity signal")
    ap.add_argument("--tests", nargs="*", default=DEVICE_TESTS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("pi-check: needs root (debootstrap, chroot, binfmt_misc); run with sudo")
    from bench.pi_parity import compare

    commit = git_commit()  # now: the tree may change during the ~10-minute run
    refs: dict = {}
    for backend in sorted({ARCHES[a]["backend"] for a in args.arch}):
        log(f"x86 reference parity run ({backend})")
        refs[backend] = x86_reference(backend, args.cache, args.seconds)
    out = {"reference": {b: {**json.loads(str(r["meta"])), "machine": machine()} for b, r in refs.items()},
           "parity_signal_seconds": args.seconds, "commit_measured": commit}
    if len(refs) == 2:  # the two interpreter packages on the same x86 CPU
        c = compare(refs["litert"], refs["tflite_runtime"])
        out["x86_litert_vs_tflite_runtime_2_14"] = {k: c[k] for k in ("bit_exact", "arrays_differing")}
    for arch in args.arch:
        try:
            r = check_arch(arch, args.cache, refs[ARCHES[arch]["backend"]], args.seconds, args.tests)
        except (subprocess.CalledProcessError, OSError) as exc:
            log(f"[{arch}] failed: {exc}")
            r = {"bit_exact": False, "error": str(exc)}
        out[arch] = r
        out[f"{arch}_bit_exact"] = bool(r.get("bit_exact"))
        out[f"{arch}_tests_passed"] = r.get("tests", {}).get("passed", 0)
        out[f"{arch}_tests_failed"] = r.get("tests", {}).get("failed", 0) + r.get("tests", {}).get("errors", 0)
        log(f"[{arch}] bit_exact={out[f'{arch}_bit_exact']} tests={r.get('tests')}")
    path = write_result("pi", out)
    print("| arch | qemu cpu | interpreter | numpy | bit-exact | tests passed/failed/skipped |\n|---|---|---|---|---|---|")
    for arch in args.arch:
        r = out[arch]
        t = r.get("tests", {})
        print(f"| {arch} | {r.get('qemu_cpu')} | {r.get('backend')} | {r.get('numpy')} | {r.get('bit_exact')} | "
              f"{t.get('passed')}/{t.get('failed')}/{t.get('skipped')} |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
