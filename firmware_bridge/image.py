"""Build the device firmware image for a Cortex-M4 (Arm MPS2 AN386, QEMU ``-M mps2-an386``).

    ser-edge firmware build [--model M.tflite] [--out DIR] [--opt -O2]
    ser-edge firmware run [--elf ser_fw.elf]      # QEMU behind a pty: talk to it with stream/validate

:func:`build_image` exports the model (``ser-edge export``: front-end tables, geometry, input
quantisation), writes ``ser_fw_info.h`` (INFO constants, the window gate threshold, gap limits) and
runs ``firmware/mps2/Makefile`` with arm-none-eabi-gcc + newlib (nano). The result is cached by the
hash of every input (sources, model, options, compiler), so tests and benchmarks share one build.

Image sizes come from the ELF's sections: flash = everything stored in flash (``.text`` with its
``.rodata``, ``.ARM.exidx``, the ``.data`` initialisers), RAM = ``.data + .bss + .stack`` (no heap).
"""
from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cbuild import CBuildError, cache_dir
from edge_runtime.frontend import FrontendConfig

from .export import FIRMWARE_DIR, ExportError, export_c, read_model

BOARD_DIR = FIRMWARE_DIR / "mps2"
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "edge_runtime" / "models" / "default.tflite"
MAX_GAP_S = 10.0  # SerialDevice's default max_gap_s
INFO_BUFFER = 320  # SER_DEV_TX_PAYLOAD (ser_device.h): the largest reply the firmware builds

__all__ = ["FirmwareImage", "build_image", "image_sizes", "run_selftest", "add_cli"]


@dataclass(frozen=True)
class FirmwareImage:
    """A linked image and what it holds."""

    elf: Path
    flash_bytes: int
    ram_bytes: int
    sections: dict = field(default_factory=dict)
    model_hash: str = ""
    engine: str = ""
    opt: str = "-O2"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CBuildError(f"{name} not found (Debian/Ubuntu: apt-get install gcc-arm-none-eabi "
                          "libnewlib-arm-none-eabi; see .ci/apt-packages.txt)")
    return path


def image_sizes(elf: str | Path) -> tuple[int, int, dict]:
    """(flash bytes, RAM bytes, {section: size}) of a linked image (``arm-none-eabi-size -A``)."""
    out = subprocess.run([_tool("arm-none-eabi-size"), "-A", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sec = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].startswith(".") and parts[1].isdigit():
            sec[parts[0]] = int(parts[1])
    flash = sec.get(".text", 0) + sec.get(".ARM.exidx", 0) + sec.get(".data", 0)
    ram = sec.get(".data", 0) + sec.get(".bss", 0) + sec.get(".stack", 0)
    return flash, ram, {k: v for k, v in sec.items() if not k.startswith(".debug")}


def _f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


def _exp_q31(output_scale: float) -> list[int]:
    """``exp(-d * output_scale)`` for the int8 logit differences ``d = 0..255``, in Q31: the firmware's
    softmax of a window (the zero point cancels), for the probability tie-break of utterance labels."""
    return [min(1 << 31, int(round(np.exp(-d * output_scale) * (1 << 31)))) for d in range(256)]


def fw_info_header(model_path: Path) -> str:
    """``ser_fw_info.h``: INFO constants and the device policy numbers for ``model_path``: the
    speech gate's integer constants and the window policy of ``StreamingClassifier``'s defaults
    (what ``ser-edge serve`` runs), and the int8 padding frame of a short stream."""
    from edge_runtime import __version__
    from edge_runtime.classifier import DEFAULT_GATE, silence_features
    from edge_runtime.frontend import FrontendConfig
    from edge_runtime.interpreter import FeatureQuantizer
    from edge_runtime.window_policy import WindowPolicy

    md = read_model(model_path).metadata
    cfg = FrontendConfig.from_dict(md["frontend"])
    w, h = int(md["window_frames"]), int(md["hop_frames"])
    policy = WindowPolicy().resolve(w, h)
    if policy.min_confidence != 0.0:
        raise CBuildError("the firmware implements min_confidence = 0 only")
    version = f"ser-edge-fw {__version__} mps2-an386"
    info_bytes = (32 + 1 + len(version.encode()) + 2 * (1 + 16) + sum(1 + len(str(x).encode()) for x in md["labels"])
                  + 17)  # ser_device.c send_info: head, strings, labels, revision-2 extension
    if info_bytes > INFO_BUFFER:
        raise CBuildError(f"the model's INFO needs {info_bytes} bytes, more than the firmware's {INFO_BUFFER}-byte "
                          "reply buffer (SER_DEV_TX_PAYLOAD in ser_device.h): use shorter label names")
    g = DEFAULT_GATE.constants(cfg.frame_length)
    pad = FeatureQuantizer(2.0 ** -cfg.frac_bits, float(md["input_scale"]), int(md["input_zero_point"])
                           )(silence_features(cfg)[None])[0]
    return "\n".join([
        "/* ser_fw_info.h - generated by firmware_bridge/image.py; do not edit. */",
        "#ifndef SER_FW_INFO_H", "#define SER_FW_INFO_H",
        f'#define SER_FW_VERSION "{version}"',
        f"#define SER_FW_INPUT_SCALE_BITS 0x{_f32_bits(md['input_scale']):08X}u /* {md['input_scale']!r} */",
        f"#define SER_FW_OUTPUT_SCALE_BITS 0x{_f32_bits(md.get('output_scale', 0.0) or 0.0):08X}u"
        f" /* {md.get('output_scale')!r} */",
        f"#define SER_FW_MAX_GAP_SAMPLES {int(MAX_GAP_S * cfg.sample_rate)}u",
        f"#define SER_FW_MAX_GAP_FRAMES {int(MAX_GAP_S * cfg.sample_rate / cfg.hop_length)}u",
        "/* speech gate (edge_runtime.speech_gate, DEFAULT_GATE): Q8 log2 levels */",
        f"#define SER_FW_GATE_MARGIN_Q8 {g.margin_q8}",
        f"#define SER_FW_GATE_ABS_FLOOR_Q8 {g.abs_floor_q8}",
        f"#define SER_FW_GATE_MIN_RUN {g.min_run}u",
        f"#define SER_FW_GATE_MIN_ACTIVE {g.min_active}u",
        f"#define SER_FW_GATE_BLOCK_FRAMES {g.floor_block_frames}u",
        f"#define SER_FW_GATE_FLOOR_BLOCKS {g.floor_blocks}u",
        "/* window policy (edge_runtime.window_policy.WindowPolicy defaults, resolved for the model) */",
        f"#define SER_FW_FLUSH_MIN_FRAMES {policy.flush_min_frames}u",
        f"#define SER_FW_MIN_FRAMES {policy.min_frames}u",
        f"#define SER_FW_UTTERANCE_GAP_WINDOWS {policy.utterance_gap_windows}u",
        "/* exp(-d * output_scale) in Q31 for d = 0..255: window softmax for the utterance tie-break */",
        "#define SER_FW_EXP_Q31 {" + ", ".join(f"{v}u" for v in _exp_q31(float(md.get("output_scale") or 0.0))) + "}",
        "/* the int8 frame a short stream is padded with (digital silence through the front end) */",
        "#define SER_FW_PAD_FRAME {" + ", ".join(str(int(v)) for v in np.asarray(pad).ravel()) + "}",
        "#endif", ""])


def _engine_sources(gen: Path) -> tuple[str, list[Path]]:
    """(engine name, C sources) implementing ser_engine.h: the model compiled ahead of time to C
    (``ser_net.c`` + the ``ser_nn`` kernels) when the export produced it."""
    if (gen / "ser_net.c").is_file():
        return "ser_nn", [BOARD_DIR / "engine_net.c", FIRMWARE_DIR / "ser_nn.c", gen / "ser_net.c"]
    return "none", [BOARD_DIR / "engine_none.c"]


def _inputs_hash(model_bytes: bytes, options: list[str]) -> str:
    h = hashlib.sha256(model_bytes)
    for d in (FIRMWARE_DIR, BOARD_DIR):
        for p in sorted(d.iterdir()):
            if p.is_file():
                h.update(p.name.encode() + b"\0" + p.read_bytes())
    for mod in ("export.py", "image.py", "nn_export.py", "tflite_graph.py"):
        h.update((Path(__file__).parent / mod).read_bytes())
    h.update("\0".join(options).encode())
    h.update(subprocess.run([_tool("arm-none-eabi-gcc"), "--version"], capture_output=True, text=True).stdout.encode())
    return h.hexdigest()[:16]


def build_image(model: str | Path | None = None, out_dir: str | Path | None = None, *, opt: str = "-O2",
                semihosting: bool = True, extra_cflags: tuple[str, ...] = ()) -> FirmwareImage:
    """Build (or reuse from the cache) the firmware for ``model`` (default: the shipped model).

    ``out_dir``: where to put the image (default: the cache). ``semihosting``: faults end QEMU with
    exit code 3 (for tests; a production build leaves it off)."""
    model_path = Path(model) if model is not None else DEFAULT_MODEL
    data = model_path.read_bytes() if model_path.is_file() else b""
    if not data:
        raise CBuildError(f"{model_path}: no such model")
    make = _tool("make")
    _tool("arm-none-eabi-gcc")
    options = [opt, f"semihosting={int(semihosting)}", *extra_cflags]
    key = _inputs_hash(data, options)
    out = Path(out_dir) if out_dir is not None else cache_dir() / "firmware" / key
    elf = out / "ser_fw.elf"
    stamp = out / f".built-{key}"
    gen = out / "gen"
    if not stamp.exists():
        out.mkdir(parents=True, exist_ok=True)
        export_c(model_path, None, gen, copy_sources=False)
        (gen / "ser_fw_info.h").write_text(fw_info_header(model_path))
        engine, srcs = _engine_sources(gen)
        # the table formats as build-time constants for the Cortex-M paths of ser_frontend.c
        fe_cfg = FrontendConfig.from_dict(read_model(model_path).metadata["frontend"])
        fe_defs = [f"-DSER_FE_TWIDDLE_BITS={fe_cfg.twiddle_bits}", f"-DSER_FE_MEL_BITS={fe_cfg.mel_bits}"]
        (gen / "engine.txt").write_text(engine)
        cmd = [make, "-s", "-C", str(BOARD_DIR), f"GEN={gen}", f"OUT={out}", f"OPT={opt}",
               f"SEMIHOSTING={int(semihosting)}", f"ENGINE_SRCS={' '.join(str(s) for s in srcs)}",
               f"EXTRA_CFLAGS={' '.join([*fe_defs, *extra_cflags])}", "-B"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise CBuildError(f"building the firmware failed:\n{' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
        for old in out.glob(".built-*"):
            old.unlink()
        stamp.touch()
    flash, ram, sec = image_sizes(elf)
    engine = (gen / "engine.txt").read_text().strip() if (gen / "engine.txt").exists() else "?"
    return FirmwareImage(elf, flash, ram, sec, hashlib.sha256(data).hexdigest()[:16], engine, opt)


# ------------------------------------------------------------------------------------------ CLI
def _cmd_build(args) -> int:
    from edge_runtime.cli_errors import BadInput, Failure

    _check_model_file(args.model)  # exists (parse time); empty / not a TFLite file: exit 2 here
    try:
        img = build_image(args.model, args.out, opt=args.opt, semihosting=not args.no_semihosting)
    except ExportError as e:
        raise BadInput(str(e)) from None
    except (CBuildError, OSError) as e:
        raise Failure(str(e).strip().splitlines()[0] if str(e).strip() else repr(e)) from None
    print(f"image: {img.elf}")
    print(f"model {img.model_hash}, engine {img.engine}, {img.opt}: flash {img.flash_bytes} B, RAM {img.ram_bytes} B "
          f"({', '.join(f'{k} {v}' for k, v in img.sections.items())})")
    return 0


def _cmd_run(args) -> int:
    from edge_runtime.cli_errors import BadInput, Failure

    from .qemu import QemuDevice, QemuError

    if args.elf is None:
        _check_model_file(args.model)
    try:
        elf = Path(args.elf) if args.elf else build_image(args.model).elf
        with QemuDevice(elf) as dev:
            print(f"firmware {elf} running in QEMU {dev.command()[2]}; serial port: {dev.port}", flush=True)
            print("(talk to it with e.g. `ser-edge stream --port PORT --mode features clip.wav`; Ctrl-C stops)",
                  flush=True)
            try:
                while dev.alive:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            return 0 if dev.returncode in (None, 0) else 1
    except ExportError as e:  # a model the C export cannot take (an op it lacks): the user's input
        raise BadInput(str(e)) from None
    except (CBuildError, QemuError, OSError) as e:
        raise Failure(str(e).strip().splitlines()[0] if str(e).strip() else repr(e)) from None


def _elf_file(text: str) -> str:
    """argparse type of ``--elf``: an existing, readable file that starts like an ELF image."""
    import argparse

    from edge_runtime.cli_types import existing_file

    existing_file(text)
    with open(text, "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise argparse.ArgumentTypeError(f"{text}: not an ELF image (build one with `ser-edge firmware build`)")
    return text


def _check_model_file(path: str | None) -> None:
    """A ``--model`` that exists (checked at parse time) but is empty or not a TFLite file: exit 2 with
    one line, before any compiler or QEMU is started."""
    if path is not None:
        from edge_runtime.model_metadata import check_tflite

        check_tflite(Path(path).read_bytes(), path)


def add_cli(subparsers) -> None:
    """Add ``firmware build`` and ``firmware run`` (path options checked at parse time, like every
    ``ser-edge`` subcommand: :mod:`edge_runtime.cli_types`)."""
    from edge_runtime.cli_types import existing_file, output_dir

    p = subparsers.add_parser("firmware", help="build / run the Cortex-M4 device firmware (QEMU mps2-an386)",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="firmware_cmd", required=True)
    b = sub.add_parser("build", help="export the model and link the firmware image (arm-none-eabi-gcc)")
    b.add_argument("--model", default=None, type=existing_file, help="int8 .tflite (default: the shipped model)")
    b.add_argument("--out", default=None, type=output_dir, help="output directory (default: the build cache)")
    b.add_argument("--opt", default="-O2", help="optimisation flag (default -O2)")
    b.add_argument("--no-semihosting", action="store_true", help="faults park the core instead of ending QEMU")
    b.set_defaults(func=_cmd_build)
    r = sub.add_parser("run", help="run the firmware in QEMU behind a host pty")
    r.add_argument("--elf", default=None, type=_elf_file, help="image to run (default: build for --model)")
    r.add_argument("--model", default=None, type=existing_file, help="model to build for when --elf is not given")
    r.set_defaults(func=_cmd_run)


def run_selftest(model: str | Path | None = None, *, opt: str = "-O2", timeout: float = 300.0) -> dict:
    """Build the self-test variant of the image (``-DSER_FW_SELFTEST``: mps2/selftest.c), run it in
    QEMU with ``-icount shift=0`` and return its figures, converted to guest instructions with the
    calibration loop it also runs: ``instructions_per_tick``, ``fe_instructions_per_frame``,
    ``nn_instructions_per_inference`` (fastest of the windows), ``quantize_instructions_per_frame``,
    ``arena_bytes``, ``stack_used_bytes`` and the raw ``ticks``."""
    import re

    from .qemu import QemuDevice, QemuError

    img = build_image(model, opt=opt, extra_cflags=("-DSER_FW_SELFTEST",))
    dev = QemuDevice(img.elf)
    dev.start()
    try:
        rc = dev.wait(timeout)
    finally:
        dev.stop()
    text = dev.output.decode(errors="replace")
    vals = {k: int(v) for k, v in re.findall(r"SER_SELFTEST (\w+)=(\d+)", text)}
    if rc != 0 or "nn_min_ticks" not in vals:
        raise QemuError(f"self-test failed (QEMU exit {rc}): {text[-400:]}")
    ipt = vals["calibration_instructions"] / vals["calibration_ticks"]
    if abs(ipt - round(ipt)) * vals["calibration_ticks"] <= 2 * ipt:  # within the +-1 tick of reading
        ipt = float(round(ipt))  # a whole number of instructions per tick (40 on QEMU 7.2)
    return {
        "instructions_per_tick": ipt,
        "fe_instructions_per_frame": vals["fe_ticks"] * ipt / vals["frames"],
        "quantize_instructions_per_frame": vals["quantize_ticks"] * ipt / vals["frames"],
        "nn_instructions_per_inference": vals["nn_min_ticks"] * ipt,
        "nn_instructions_mean": vals["nn_ticks"] * ipt / vals["windows"],
        "frames": vals["frames"], "windows": vals["windows"],
        "arena_bytes": vals["arena_bytes"], "stack_used_bytes": vals["stack_used_bytes"],
        "ticks": vals, "opt": opt, "elf": str(img.elf),
    }
