"""The firmware C is integer-only, warning-free, and cross-compiles for a Cortex-M4."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import require_module, require_tool  # noqa: F401

from firmware_bridge.cbuild import FIRMWARE_DIR, SOURCES, build_library, cross_compile_m4

ALL_C = sorted(FIRMWARE_DIR.glob("*.[ch]"))
# x86-64 scalar/packed floating-point arithmetic and conversions (integer SIMD is fine)
X86_FLOAT = re.compile(r"\s(cvt\w*|(add|sub|mul|div|sqrt|min|max)[sp][sd]|u?comis[sd]|fld\w*|fst\w*)\s")
FLOAT_HELPER = re.compile(r"__aeabi_([fd]\w+|u?[il]2[fd])$|__\w+[sdt]f[23i]?$")


def _strip_comments(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", " ", src)


def test_sources_have_no_float_types_or_literals():
    assert {p.name for p in ALL_C} >= {"ser_frontend.c", "ser_frontend.h", "ser_protocol.c", "ser_protocol.h"}
    for p in ALL_C:
        code = _strip_comments(p.read_text())
        assert not re.search(r"\b(float|double)\b", code), p.name
        assert not re.search(r"\b\d+\.\d*([eE][-+]?\d+)?[fF]?\b|\b\d+[eE][-+]?\d+\b", code), p.name
        assert "malloc" not in code and "free(" not in code, p.name


def test_host_build_strict_and_no_float_instructions(tmp_path):
    build_library()  # -Wall -Wextra -Werror -Wdouble-promotion -Wfloat-conversion -pedantic
    for src in SOURCES:
        obj = tmp_path / (src + ".o")
        r = subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror=double-promotion",
                            "-Werror=float-conversion", "-Werror", "-c", "-o", str(obj), str(FIRMWARE_DIR / src)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        if shutil.which("objdump"):
            dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(obj)], capture_output=True,
                                 text=True, check=True).stdout
            bad = [ln for ln in dis.splitlines() if X86_FLOAT.search(ln + " ")]
            assert not bad, bad[:5]
        und = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split()
        assert not [s for s in und if FLOAT_HELPER.search(s)], und


def test_cortex_m4_build_has_no_float(tmp_path):
    require_tool("arm-none-eabi-gcc")
    sizes = cross_compile_m4(tmp_path)
    assert sizes is not None
    assert not [s for s in sizes["undefined"] if FLOAT_HELPER.search(s)], sizes["undefined"]
    fe = sizes["ser_frontend.c"]
    # v1 + v2 with inlined radix-4 stages (speed over size, see docs/firmware.md): ~9 KB; the whole
    # image is held to its 100 KB flash budget by test_firmware_image
    assert 500 < fe["text"] < 16000 and fe["bss"] == 0 and fe["data"] == 0  # state is caller-owned
    # with the FPU enabled, the compiler would use VFP instructions for any float work: there are none
    obj = tmp_path / "fpu.o"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                    "-O2", "-std=c99", "-c", "-o", str(obj), str(FIRMWARE_DIR / "ser_frontend.c")], check=True)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True, text=True, check=True).stdout
    vfp = [ln for ln in dis.splitlines() if re.search(r"\tv[a-z]+(\.[a-z0-9]+)*\s", ln)]
    assert not vfp, vfp[:5]
    assert "smull" in dis or "smlal" in dis  # int64 products map to the 32x32->64 multiplier
