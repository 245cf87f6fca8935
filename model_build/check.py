"""``ser-edge check-model``: is this .tflite something ``ser-edge run`` and a microcontroller can run?

:func:`check_model` gathers the facts (graph: ops, tensor types, I/O; sizes; ``ser_edge`` metadata:
labels, front end, window; TFLite Micro arena) and a verdict; :func:`summary_lines` renders them for
a person, ``--json`` prints the dict. No TensorFlow: the flatbuffer is parsed with LiteRT's generated
schema and the file is first checked by the device runtime's own reader (edge_runtime.model_metadata),
so a truncated, empty or random file is one clear error (exit code 2), never a parser traceback.
"""
from __future__ import annotations

import time
from pathlib import Path

from edge_runtime.model_metadata import ModelFileError, check_tflite, read_metadata, read_metadata_entries


def check_model(path: str | Path, arena: bool = True) -> dict:
    """Everything check-model reports about ``path``; ``out["ok"]`` is the verdict.

    Raises :class:`ModelFileError` when the file is not a readable TFLite flatbuffer at all.
    """
    from .convert import GraphCheckError, check_int8_graph, inspect_graph

    t0 = time.perf_counter()
    p = Path(path)
    data = p.read_bytes()
    name = str(p)
    check_tflite(data, name)
    try:
        read_metadata_entries(p)  # bounds-checked walk of the table layout, errors name the file
        graph = inspect_graph(data)
    except ModelFileError:
        raise
    except Exception as e:  # the generated parser fails on damaged offsets with struct/Type errors
        raise ModelFileError(f"{name}: corrupt TFLite flatbuffer ({type(e).__name__}: "
                             f"{' '.join(str(e).split()) or 'unreadable table'})") from None
    problems: list[str] = []
    try:
        check_int8_graph(data)
    except GraphCheckError as e:
        problems += e.problems
    out: dict = {"model": name, "bytes": len(data), "graph": graph.to_dict(), "int8_check":
                 "ok" if not problems else "FAILED", "problems": problems}
    try:
        md = read_metadata(data, name)
        out["metadata"] = md.to_dict()
        if md.n_features != (graph.input_shape[-1] if graph.input_shape else None):
            problems.append(f"metadata says {md.n_features} features, the model input is {graph.input_shape}")
        if len(md.labels) != (graph.output_shape[-1] if graph.output_shape else None):
            problems.append(f"metadata lists {len(md.labels)} labels, the model output is {graph.output_shape}")
        try:
            fe = md.frontend_config()
            out["frontend"] = {"output": fe.output, "n_features": fe.n_features, "sample_rate": fe.sample_rate,
                               "hop_ms": fe.hop_ms, "hash": fe.hash, "matches_metadata_hash":
                               fe.hash == md.frontend_hash}
            if fe.hash != md.frontend_hash:
                problems.append(f"front-end hash {md.frontend_hash} in the metadata does not match its "
                                f"parameters ({fe.hash}): this runtime computes different features")
        except Exception as e:  # an unknown parameter: a newer/older front end
            problems.append(f"front-end parameters not understood by this runtime: {e}")
    except ModelFileError as e:
        out["metadata"] = None
        problems.append(f"ser-edge run cannot load it: {str(e).split(': ', 1)[-1]}")
    out["check_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    from edge_runtime.cli_errors import missing_modules

    if arena and not out["problems"] and missing_modules("tflite_micro"):
        out["arena_note"] = "not measured: TFLite Micro is not installed (pip install 'ser-edge[train]')"
    elif arena and not out["problems"]:
        from edge_runtime.interpreter import min_arena_size

        t1 = time.perf_counter()
        try:
            out.update(min_arena_size(data))
        except Exception as e:  # TFLM refuses the graph (an op it lacks): part of the verdict
            problems.append(f"TFLite Micro cannot run it: {' '.join(str(e).split())}")
        out["arena_ms"] = round((time.perf_counter() - t1) * 1000, 1)
    out["ok"] = not problems
    return out


def summary_lines(r: dict) -> list[str]:
    """A person's view of :func:`check_model`'s dict: one fact per line, the verdict last."""
    g = r["graph"]
    ops = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in g["op_counts"].items())
    lines = [
        f"model      {r['model']}  ({r['bytes']:,} bytes)",
        f"ops        {ops}",
        f"tensors    {', '.join(f'{v} {k}' for k, v in sorted(g['tensor_types'].items()))}",
        f"input      {g['input_dtype']} {g['input_shape']}   output {g['output_dtype']} {g['output_shape']}",
    ]
    if "arena_bytes" in r:
        lines.append(f"arena      {r['arena_bytes']:,} bytes (TFLite Micro, smallest that runs)")
    elif "arena_note" in r:
        lines.append(f"arena      {r['arena_note']}")
    md = r.get("metadata")
    if md:
        fe = r.get("frontend") or {}
        lines += [
            f"front end  {fe.get('output', '?')} x {md['n_features']} @ {fe.get('sample_rate', '?')} Hz, "
            f"{fe.get('hop_ms', '?')} ms hop, hash {md['frontend_hash']}",
            f"window     {md['window_frames']} frames, hop {md['hop_frames']} frames",
            f"labels     {', '.join(md['labels'])}",
        ]
        if md.get("trained_on"):
            lines.append(f"trained on {md['trained_on']}")
    else:
        lines.append("metadata   none")
    lines.append(f"checked in {r['check_ms']:.0f} ms" + (f" + {r['arena_ms']:.0f} ms for the arena"
                                                         if "arena_ms" in r else ""))
    if r["ok"]:
        lines.append("verdict    OK: pure int8 builtins, metadata consistent"
                     + (", runs in TFLite Micro" if "arena_bytes" in r else ""))
    else:
        lines.append("verdict    FAILED:")
        lines += [f"  - {p}" for p in r["problems"]]
    return lines
