"""Export a model and its front end as C for a microcontroller build.

    ser-edge export [--model M.tflite | --frontend-only] [--output logmel|mfcc] --out DIR [--prefix ser]

writes ``DIR/<prefix>_model.h`` and ``DIR/<prefix>_model.c``, with a model also the model compiled
ahead of time to C (``DIR/<prefix>_net.h``, ``DIR/<prefix>_net.c``: weights, requantisation
constants, a static memory plan and calls of the ``ser_nn`` kernels; see
:mod:`firmware_bridge.nn_export`), plus copies of the portable sources ``ser_frontend.{h,c}``,
``ser_protocol.{h,c}`` and ``ser_nn.{h,c}`` unless ``--no-sources``. Without ``--model`` (and
without ``--output``) the shipped model ``edge_runtime/models/default.tflite`` is exported.

- every front-end parameter as a ``#define`` and every table of :func:`make_tables` as a const
  integer array (the C code never regenerates a table with floats), tied together in a
  ``const ser_fe_tables_t <prefix>_fe_tables`` that ``ser_fe_init`` takes;
- with ``--flatbuffer``, the int8 ``.tflite`` as a 16-byte aligned ``const unsigned char`` array
  (for a TensorFlow Lite Micro build; the project's own firmware uses ``<prefix>_net.c`` instead);
- labels, front-end hash, model hash, window geometry, and the input quantisation as an integer
  multiplier + right shift (TFLite's QuantizeMultiplier, computed here on the host) with the float
  scale / zero point in comments.

The C front end consumes the tables through ``ser_fe_tables_t`` (firmware/ser_frontend.h); the
field list below (:func:`c_params`, :func:`c_arrays`) is the single description of that layout,
also used by :mod:`firmware_bridge.cbuild` to hand the same tables to the host-built library.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.frontend import FrontendConfig, make_tables

FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware"
FIRMWARE_SOURCES = ("ser_frontend.h", "ser_frontend.c", "ser_protocol.h", "ser_protocol.c", "ser_nn.h", "ser_nn.c")
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "edge_runtime" / "models" / "default.tflite"

# ser_fe_tables_t scalar fields, in struct order.
PARAM_FIELDS = ("frame_length", "hop_length", "n_mels", "n_out", "output", "frac_bits", "window_bits",
                "block_bits", "twiddle_bits", "mel_bits", "log_table_bits", "dct_bits",
                "log_floor_q16", "bin_lo", "bin_hi")
# ser_fe_tables_t pointer fields, in struct order, with their C element type.
ARRAY_FIELDS = (("window_q", "int32_t"), ("bitrev", "uint16_t"), ("fft_cos_q", "int32_t"),
                ("fft_sin_q", "int32_t"), ("rfft_cos_q", "int32_t"), ("rfft_sin_q", "int32_t"),
                ("seg_len", "uint16_t"), ("rise_q", "int32_t"), ("log_table_q", "int32_t"),
                ("dct_q", "int32_t"))
# ser_fe_tables_t scalar fields added with front-end version 2, after the pointers (struct order).
V2_FIELDS = ("algorithm_version", "fft_shift", "norm", "norm_shift")
_NP = {"int32_t": np.int32, "uint16_t": np.uint16}


class ExportError(ValueError):
    """The model / configuration cannot be exported (message names the file and the problem)."""


def c_params(cfg: FrontendConfig) -> dict[str, int]:
    """The scalar fields of ``ser_fe_tables_t`` for ``cfg``."""
    t = make_tables(cfg)
    return {
        "frame_length": cfg.frame_length, "hop_length": cfg.hop_length, "n_mels": cfg.n_mels,
        "n_out": cfg.n_features, "output": 0 if cfg.output == "mfcc" else 1,
        "frac_bits": cfg.frac_bits, "window_bits": cfg.window_bits, "block_bits": cfg.block_bits,
        "twiddle_bits": cfg.twiddle_bits, "mel_bits": cfg.mel_bits,
        "log_table_bits": cfg.log_table_bits, "dct_bits": cfg.dct_bits,
        "log_floor_q16": int(t.log_floor_q16), "bin_lo": int(t.mel.bin_lo), "bin_hi": int(t.mel.bin_hi),
        "algorithm_version": cfg.algorithm_version, "fft_shift": cfg.fft_shift,
        "norm": 1 if cfg.norm == "mean" else 0, "norm_shift": cfg.norm_shift,
    }


def c_arrays(cfg: FrontendConfig) -> dict[str, np.ndarray | None]:
    """The table arrays of ``ser_fe_tables_t`` for ``cfg`` (C dtypes, contiguous; ``dct_q`` is None
    for log-mel output). Values are checked to fit their C type (no silent wrap)."""
    t = make_tables(cfg)
    src = {
        "window_q": t.window_q, "bitrev": t.bitrev, "fft_cos_q": t.fft_cos_q, "fft_sin_q": t.fft_sin_q,
        "rfft_cos_q": t.rfft_cos_q, "rfft_sin_q": t.rfft_sin_q, "seg_len": t.mel.seg_len,
        "rise_q": t.mel.rise_q, "log_table_q": t.log_table_q,
        "dct_q": t.dct_q.reshape(-1) if cfg.output == "mfcc" else None,
    }
    out: dict[str, np.ndarray | None] = {}
    for name, ctype in ARRAY_FIELDS:
        a = src[name]
        if a is None:
            out[name] = None
            continue
        a = np.asarray(a)
        info = np.iinfo(_NP[ctype])
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise ExportError(f"table {name} has values outside {ctype} [{a.min()}, {a.max()}]")
        out[name] = np.ascontiguousarray(a.astype(_NP[ctype]))
    return out


def tables_checksum(cfg: FrontendConfig) -> int:
    """FNV-1a 32 over the parameters and tables, each value as a little-endian int32; the same
    number ``ser_fe_tables_checksum()`` computes in C (so firmware can verify its tables)."""
    p = c_params(cfg)
    vals = [np.asarray([p[k] for k in PARAM_FIELDS], np.int64)]
    vals += [a.astype(np.int64) for a in c_arrays(cfg).values() if a is not None]
    if cfg.algorithm_version >= 2:  # v1 checksums stay what they were before these fields existed
        vals.append(np.asarray([p[k] for k in V2_FIELDS], np.int64))
    h = 0x811C9DC5
    for b in np.concatenate(vals).astype("<i4").tobytes():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


@dataclass(frozen=True)
class ModelInfo:
    """What the export needs from a model file."""

    data: bytes
    metadata: dict
    model_hash: str
    source: str  # "embedded" or the sidecar path


def read_model(model_path: str | Path) -> ModelInfo:
    """Bytes + ``ser_edge`` metadata of a .tflite: embedded metadata (via
    ``edge_runtime.model_metadata``) when present, else the ``<model>.json`` sidecar."""
    p = Path(model_path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ExportError(f"{p}: cannot read model ({e.strerror or e})") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ExportError(f"{p}: not a TFLite model (no 'TFL3' identifier)")
    from edge_runtime import model_metadata as mm  # the one metadata reader

    md, source, err = None, "embedded", None
    try:
        md = mm.read_metadata_json(data, str(p))
    except ValueError as e:
        err = str(e)
    if md is None:
        side = p.with_suffix(p.suffix + ".json") if p.with_suffix(p.suffix + ".json").exists() else p.with_suffix(".json")
        if not side.exists():
            raise ExportError(f"{p}: no embedded ser_edge metadata ({err or 'reader unavailable'}) "
                              f"and no sidecar {p.with_suffix('.json').name}")
        try:
            md = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ExportError(f"{side}: unreadable metadata sidecar ({e})") from None
        source = str(side)
    for k in ("labels", "frontend", "input_scale", "input_zero_point"):
        if k not in md:
            raise ExportError(f"{p}: model metadata has no {k!r}")
    return ModelInfo(data, md, hashlib.sha256(data).hexdigest()[:16], source)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier (``edge_runtime.interpreter.quantize_multiplier``, the one owner)."""
    from edge_runtime.interpreter import quantize_multiplier as qm

    return qm(real)


def _c_array(ctype: str, name: str, a: np.ndarray, per_line: int = 8, qual: str = "") -> str:
    vals = [str(int(v)) for v in np.asarray(a).reshape(-1)]
    if ctype == "int32_t":  # INT32_MIN cannot be written as a plain literal
        vals = [("(-2147483647 - 1)" if v == "-2147483648" else v) for v in vals]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)] or ["0"]
    body = ",\n    ".join(lines)
    return f"{qual}const {ctype} {name}[{max(len(vals), 1)}] = {{\n    {body}\n}};\n"


def _c_string(s: str) -> str:
    out = []
    for ch in s.encode("utf-8"):
        c = chr(ch)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= ch < 127 and c != "?":  # '?' avoided: trigraphs
            out.append(c)
        else:
            out.append(f"\\{ch:03o}")
    return '"' + "".join(out) + '"'


def export_c(model_path: str | Path | None, cfg: FrontendConfig | None, out_dir: str | Path,
             prefix: str = "ser", copy_sources: bool = True, net: bool = True,
             flatbuffer: bool = False) -> dict[str, Path]:
    """Write ``<prefix>_model.{h,c}``, with a model ``<prefix>_net.{h,c}`` (unless ``net`` is False)
    and the firmware sources into ``out_dir``. ``flatbuffer`` also embeds the .tflite bytes (for
    TensorFlow Lite Micro). An operator the C kernels do not support is an :class:`ExportError`
    naming it (use ``net=False`` with ``flatbuffer=True`` for a TFLM-only export).

    ``cfg`` None means "the model's front end"; with a model, a ``cfg`` whose hash differs from the
    model's recorded front end is refused (the tables would not match what the model was trained
    on). Returns the written paths by role.
    """
    if not prefix.isidentifier():
        raise ExportError(f"prefix {prefix!r} is not a C identifier")
    model = read_model(model_path) if model_path is not None else None
    if model is not None:
        mcfg = FrontendConfig.from_dict(model.metadata["frontend"])
        if cfg is None:
            cfg = mcfg
        elif cfg.hash != mcfg.hash:
            diff = ", ".join(f"{k}: model {a!r} vs requested {b!r}" for k, (a, b) in mcfg.diff(cfg).items())
            raise ExportError(f"{model_path}: the model was trained with front end {mcfg.hash}, "
                              f"the requested configuration is {cfg.hash} ({diff})")
    cfg = cfg or FrontendConfig()
    lowered = None
    if model is not None and net:
        from .nn_export import NetExportError, lower
        from .tflite_graph import read_graph

        try:
            lowered = lower(read_graph(model.data, str(model_path)), str(model_path))
        except (NetExportError, ValueError) as e:
            raise ExportError(str(e)) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    P = prefix.upper()
    params, arrays, t = c_params(cfg), c_arrays(cfg), make_tables(cfg)
    checksum = tables_checksum(cfg)
    guard = f"{P}_MODEL_H"

    h: list[str] = [
        f"/* {prefix}_model.h - generated by `ser-edge export`; do not edit. */",
        f"#ifndef {guard}", f"#define {guard}", "", "#include <stddef.h>", "#include <stdint.h>",
        '#include "ser_frontend.h"', "",
        "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
        "/* Front end (edge_runtime.frontend.FrontendConfig). */",
        f'#define {P}_FRONTEND_HASH "{cfg.hash}"',
        f"#define {P}_SAMPLE_RATE {cfg.sample_rate}",
        f"#define {P}_FRAME_LENGTH {cfg.frame_length}",
        f"#define {P}_HOP_LENGTH {cfg.hop_length}",
        f"#define {P}_N_MELS {cfg.n_mels}",
        f"#define {P}_N_MFCC {cfg.n_mfcc}",
        f"#define {P}_N_FEATURES {cfg.n_features}",
        f"#define {P}_OUTPUT_{cfg.output.upper()} 1",
        f"#define {P}_OUTPUT SER_FE_OUTPUT_{cfg.output.upper()}",
        f"#define {P}_FMIN_HZ {int(round(cfg.fmin))} /* {cfg.fmin!r} Hz (tables only) */",
        f"#define {P}_FMAX_HZ {int(round(cfg.fmax))} /* {cfg.fmax!r} Hz (tables only) */",
        f"#define {P}_FRAC_BITS {cfg.frac_bits} /* features are Q{cfg.frac_bits} log2 units */",
        f"#define {P}_LOG_FLOOR_Q16 ({params['log_floor_q16']}) /* {cfg.log_floor!r} log2 */",
    ]
    for k in ("window_bits", "block_bits", "twiddle_bits", "mel_bits", "log_table_bits", "dct_bits", "algorithm_version"):
        h.append(f"#define {P}_{k.upper()} {getattr(cfg, k)}")
    h += [f"#define {P}_BIN_LO {params['bin_lo']}", f"#define {P}_BIN_HI {params['bin_hi']}",
          f"#define {P}_TABLES_CHECKSUM 0x{checksum:08X}u /* ser_fe_tables_checksum(&{prefix}_fe_tables) */",
          "",
          f"#if SER_FE_MAX_FRAME_LENGTH < {P}_FRAME_LENGTH || SER_FE_MAX_MELS < {P}_N_MELS",
          f'#error "compile everything with -DSER_FE_MAX_FRAME_LENGTH>={cfg.frame_length} -DSER_FE_MAX_MELS>={cfg.n_mels}"',
          "#endif", "",
          "/* Tables (edge_runtime.frontend.make_tables), bound in one struct for ser_fe_init. */"]
    for name, ctype in ARRAY_FIELDS:
        a = arrays[name]
        if a is not None:
            h.append(f"extern const {ctype} {prefix}_{name}[{a.size}];")
    h += [f"extern const ser_fe_tables_t {prefix}_fe_tables;", ""]

    if model is not None:
        md = model.metadata
        labels = list(md["labels"])
        m0, shift = quantize_multiplier(2.0 ** -cfg.frac_bits / float(md["input_scale"]))
        om0, oshift = quantize_multiplier(float(md.get("output_scale", 1.0) or 1.0))
        wf, hf = md.get("window_frames"), md.get("hop_frames")
        h += [
            "/* Model. */",
            "#define " + f"{P}_HAS_MODEL 1",
            f'#define {P}_MODEL_HASH "{model.model_hash}" /* sha256(model)[:16] */',
            f"#define {P}_MODEL_LEN {len(model.data)}u /* bytes of the .tflite */",
            f"#define {P}_HAS_FLATBUFFER {int(flatbuffer)} /* {prefix}_model_data[]: the .tflite for TFLM */",
            f"#define {P}_HAS_NET {int(lowered is not None)} /* {prefix}_net.h: the model compiled to C */",
            *([f"extern const unsigned char {prefix}_model_data[{len(model.data)}];",
               f"extern const unsigned int {prefix}_model_len;"] if flatbuffer else []),
            *([f'#include "{prefix}_net.h"'] if lowered is not None else []),
            f"#define {P}_WINDOW_FRAMES {int(wf) if wf else 0} /* frames per model input window */",
            f"#define {P}_HOP_FRAMES {int(hf) if hf else 0} /* frames between windows */",
            f"#define {P}_N_LABELS {len(labels)}",
            f"extern const char *const {prefix}_labels[{len(labels)}];",
            "",
            "/* Input quantisation, integer only (edge_runtime.interpreter.FeatureQuantizer):",
            f" * q8 = clamp(round_half_away(q * {P}_INPUT_MULTIPLIER / 2^{P}_INPUT_RIGHT_SHIFT) + zp, -128, 127)",
            f" * input_scale = {float(md['input_scale'])!r}, input_zero_point = {int(md['input_zero_point'])},",
            f" * feature scale 2^-{cfg.frac_bits}; ratio = {2.0 ** -cfg.frac_bits / float(md['input_scale'])!r} */",
            f"#define {P}_INPUT_MULTIPLIER {m0}",
            f"#define {P}_INPUT_RIGHT_SHIFT {31 - shift}",
            f"#define {P}_INPUT_ZERO_POINT ({int(md['input_zero_point'])})",
            f"/* output_scale = {float(md.get('output_scale', 0.0))!r}: logit = (q - zp) * scale ~ (q - zp) * M / 2^S */",
            f"#define {P}_OUTPUT_ZERO_POINT ({int(md.get('output_zero_point', 0))})",
            f"#define {P}_OUTPUT_MULTIPLIER {om0}",
            f"#define {P}_OUTPUT_RIGHT_SHIFT {31 - oshift}",
            "",
        ]
    else:
        h += [f"#define {P}_HAS_MODEL 0", ""]
    h += ["#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]

    c: list[str] = [
        f"/* {prefix}_model.c - generated by `ser-edge export`; do not edit.",
        f" * front end {cfg.hash}: {json.dumps(cfg.to_dict(), sort_keys=True)}",
        " */", f'#include "{prefix}_model.h"', "",
    ]
    for name, ctype in ARRAY_FIELDS:
        a = arrays[name]
        if a is not None:
            c.append(_c_array(ctype, f"{prefix}_{name}", a))
    fields = [f"    /* {k} */ {params[k]}," for k in PARAM_FIELDS]
    ptrs = [f"    /* {n} */ {prefix}_{n}," if arrays[n] is not None else f"    /* {n} */ NULL," for n, _ in ARRAY_FIELDS]
    v2 = [f"    /* {k} */ {params[k]}," for k in V2_FIELDS]
    c += [f"const ser_fe_tables_t {prefix}_fe_tables = {{", *fields, *ptrs, *v2, "};", ""]
    if model is not None and flatbuffer:
        c += [
            "/* 16-byte aligned: TFLite Micro reads the flatbuffer in place. */",
            "#if defined(__cplusplus)",
            "#define SER_MODEL_ALIGN alignas(16)",
            "#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L",
            "#define SER_MODEL_ALIGN _Alignas(16)",
            "#else",
            "#define SER_MODEL_ALIGN",
            "#endif",
            "#if defined(__GNUC__) || defined(__clang__)",
            "#define SER_MODEL_ALIGN_ATTR __attribute__((aligned(16)))",
            "#else",
            "#define SER_MODEL_ALIGN_ATTR",
            "#endif",
            f"SER_MODEL_ALIGN const unsigned char {prefix}_model_data[{len(model.data)}] SER_MODEL_ALIGN_ATTR = {{",
        ]
        hexes = [f"0x{b:02x}" for b in model.data]
        c += ["    " + ", ".join(hexes[i:i + 16]) + "," for i in range(0, len(hexes), 16)]
        c += ["};", f"const unsigned int {prefix}_model_len = {len(model.data)}u;", ""]
    if model is not None:
        labels = list(model.metadata["labels"])
        c.append(f"const char *const {prefix}_labels[{len(labels)}] = {{" + ", ".join(_c_string(s) for s in labels) + "};")
        c.append("")
    files = {"header": out / f"{prefix}_model.h", "source": out / f"{prefix}_model.c"}
    files["header"].write_text("\n".join(h))
    files["source"].write_text("\n".join(c))
    if lowered is not None:
        from .nn_export import write_net

        files.update(write_net(lowered, out, prefix))
    if copy_sources:
        for name in FIRMWARE_SOURCES:
            dst = out / name
            shutil.copyfile(FIRMWARE_DIR / name, dst)
            files[name] = dst
    return files


def _cmd_export(args) -> int:
    cfg = None
    if args.model is None and args.output is None and not args.frontend_only:
        args.model = str(DEFAULT_MODEL)  # the shipped model and its front end
    if args.frontend_only:
        args.model = None
    if args.no_net and not args.flatbuffer and args.model is not None:
        raise ExportError("--no-net without --flatbuffer would export no model; add --flatbuffer "
                          "(TFLite Micro) or drop --no-net")
    if args.output is not None or args.model is None:
        base = FrontendConfig()
        if args.model is not None:  # start from the model's config, change only the output kind
            base = FrontendConfig.from_dict(read_model(args.model).metadata["frontend"])
        cfg = FrontendConfig.from_dict({**base.to_dict(), "output": args.output or base.output})
    # ExportError (a ValueError, also for an unsupported operator) and OSError reach
    # edge_runtime.cli: one line, exit code 2
    files = export_c(args.model, cfg, args.out, prefix=args.prefix, copy_sources=not args.no_sources,
                     net=not args.no_net, flatbuffer=args.flatbuffer)
    for role, p in files.items():
        print(f"{role:>16}: {p} ({p.stat().st_size} bytes)")
    return 0


def register_export(subparsers) -> None:
    """Add the ``export`` subcommand to an argparse subparsers object."""
    from edge_runtime.cli_types import existing_file, output_dir

    p = subparsers.add_parser("export", help="export model + front-end tables as C source for a microcontroller",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=existing_file, help="int8 .tflite with ser_edge metadata (default: the "
                                                       "shipped model, unless --output or --frontend-only is given)")
    p.add_argument("--frontend-only", action="store_true", help="export the front-end tables without a model")
    p.add_argument("--flatbuffer", action="store_true",
                   help="also embed the .tflite bytes as an array (for a TensorFlow Lite Micro build)")
    p.add_argument("--no-net", action="store_true",
                   help="do not compile the model to C (only with --flatbuffer: a TFLM-only export)")
    p.add_argument("--output", choices=("logmel", "mfcc"), help="feature kind (default: the model's, else mfcc)")
    p.add_argument("--out", required=True, type=output_dir, help="output directory")
    p.add_argument("--prefix", default="ser", help="C identifier prefix (default: ser)")
    p.add_argument("--no-sources", action="store_true", help="do not copy ser_frontend/ser_protocol/ser_nn sources")
    p.set_defaults(func=_cmd_export)
