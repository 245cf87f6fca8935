"""The exported model's kernels on a Cortex-M4 under QEMU: guest instructions per inference and the
scores of every window (for bit-exactness against tflite-micro), from a bare-metal harness.

    r = run_m4(model_bytes, windows_int8)     # needs arm-none-eabi-gcc + newlib, qemu-system-arm
    r.instructions_per_inference, r.scores, r.per_op

The harness (``firmware/nnbench/harness.c`` + ``link.ld``) links ``ser_nn.c`` and the generated
``ser_net.c`` for ``-mcpu=cortex-m4`` (SMLAD/SXTB16/SSAT paths), boots on ``-M mps2-an386`` with
``-icount shift=0`` (a fixed virtual time per guest instruction) and semihosting, and reads SysTick
around ``ser_model_run()``. SysTick ticks at the board clock, so a calibration loop of a known
instruction count converts ticks to instructions (40 instructions per tick on QEMU 7.2: the count
is exact to +-40 instructions). This is a measuring harness, not the device firmware.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cbuild import CBuildError, cache_dir
from .export import FIRMWARE_DIR
from .nn_export import lower, render
from .tflite_graph import read_graph

HARNESS_DIR = FIRMWARE_DIR / "nnbench"
M4_CFLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft", "-std=c99", "-Wall", "-Wextra", "-Werror",
             "-ffunction-sections", "-fdata-sections", "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections")
QEMU_CMD = ("qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
            "-semihosting", "-icount", "shift=0")


@dataclass
class M4Run:
    """What the harness measured."""

    instructions_per_inference: list[int]
    scores: np.ndarray
    per_op: dict = field(default_factory=dict)   # "index NAME" -> instructions (first window)
    ticks_per_instruction: float = 0.0
    text_bytes: int = 0
    bss_bytes: int = 0
    opt: str = "-O2"


def tools_available() -> bool:
    return all(shutil.which(t) for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"))


def _windows_header(windows: np.ndarray) -> str:
    rows = ",\n".join("{" + ",".join(str(int(v)) for v in w.reshape(-1)) + "}" for w in windows)
    return (f"#define BENCH_N {len(windows)}\n"
            f"static const int8_t bench_windows[BENCH_N][SER_NET_INPUT_SIZE] = {{\n{rows}\n}};\n")


def build_harness(data: bytes, windows: np.ndarray, name: str = "<model>", opt: str = "-O2",
                  profile: bool = False) -> tuple[Path, object]:
    """Cross-compile the harness for ``windows`` (cached); returns the ELF path and the lowered net."""
    net = lower(read_graph(data, name), name)
    htxt, ctxt = render(net, "ser")
    w = np.ascontiguousarray(windows, np.int8).reshape(len(windows), -1)
    flags = [*M4_CFLAGS, opt, *(["-DSER_NET_PROFILE=bench_step"] if profile else [])]
    h = hashlib.sha256()
    for p in (FIRMWARE_DIR / "ser_nn.c", FIRMWARE_DIR / "ser_nn.h", HARNESS_DIR / "harness.c", HARNESS_DIR / "link.ld"):
        h.update(p.read_bytes())
    h.update(htxt.encode() + ctxt.encode() + w.tobytes() + "\0".join(flags).encode())
    out = cache_dir() / "nnm4" / h.hexdigest()[:16]
    elf = out / "nn.elf"
    if elf.exists():
        return elf, net
    out.mkdir(parents=True, exist_ok=True)
    (out / "ser_net.h").write_text(htxt)
    (out / "ser_net.c").write_text(ctxt)
    (out / "windows.h").write_text(_windows_header(w))
    cmd = ["arm-none-eabi-gcc", *flags, "-I", str(out), "-I", str(FIRMWARE_DIR), "-T", str(HARNESS_DIR / "link.ld"),
           "-o", str(out / "nn.tmp.elf"), str(HARNESS_DIR / "harness.c"), str(FIRMWARE_DIR / "ser_nn.c"),
           str(out / "ser_net.c")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CBuildError(f"cross-compiling the M4 harness failed:\n{' '.join(cmd)}\n{r.stderr}")
    (out / "nn.tmp.elf").replace(elf)
    return elf, net


def _size(elf: Path, section_objs: tuple[str, ...] = ()) -> tuple[int, int]:
    line = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True, check=True).stdout.splitlines()[1]
    text, data, bss = (int(v) for v in line.split()[:3])
    return text + data, bss + data


def run_m4(data: bytes, windows: np.ndarray, name: str = "<model>", opt: str = "-O2", profile: bool = False,
           timeout: float = 300.0) -> M4Run:
    """Build and run the harness in QEMU; scores of every window and instructions per inference."""
    elf, net = build_harness(data, windows, name, opt, profile)
    r = subprocess.run([*QEMU_CMD, "-kernel", str(elf)], capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr  # semihosting console output goes to stderr
    if r.returncode != 0 or "fault" in out:
        raise CBuildError(f"QEMU run of {elf} failed (exit {r.returncode}): {out[-400:]}")
    m = re.search(r"^calib (\d+) (\d+)$", out, re.M)
    if not m:
        raise CBuildError(f"no calibration line in the harness output: {out[:400]}")
    tpi = int(m.group(1)) / int(m.group(2))
    runs = [round(int(v) / tpi) for v in re.findall(r"^run (\d+)$", out, re.M)]
    scores = np.array([[int(v) for v in ln.split()[1:]] for ln in re.findall(r"^scores.*$", out, re.M)], np.int8)
    names = {st.op.index: st.op.name for st in net.steps}
    per_op = {f"{k} {names.get(int(k), '?')}": round(int(v) / tpi) for k, v in re.findall(r"^op (-?\d+) (\d+)$", out, re.M)}
    text, _ = _size(elf)
    return M4Run(runs, scores, per_op, tpi, text, net.arena_bytes, opt)
