"""Embed the ``ser_edge`` JSON metadata inside a .tflite flatbuffer (and write a JSON sidecar).

Format (read by ``edge_runtime/model_metadata.py``): a ``Model.metadata`` entry named
``"ser_edge"`` whose buffer holds UTF-8 JSON with ``"format": "ser-edge-model/1"`` and the fields
listed in :data:`REQUIRED_KEYS`. Written with TF's generated flatbuffer object API, so every
interpreter (LiteRT, TFLite Micro) still loads the model unchanged.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

METADATA_NAME = "ser_edge"
FORMAT = "ser-edge-model/1"
REQUIRED_KEYS = ("format", "labels", "frontend", "frontend_hash", "window_frames", "hop_frames",
                 "n_features", "input_scale", "input_zero_point", "output_scale",
                 "output_zero_point", "model_name", "arch", "params", "trained_on", "created",
                 "feature_norm")


def make_metadata(*, labels, frontend_cfg, window_frames: int, hop_frames: int, quant: dict,
                  model_name: str, arch: str, params: int, trained_on: str, feature_norm: dict,
                  **extra) -> dict:
    """Assemble the metadata dict (``quant`` = :func:`model_build.convert.io_quant` output)."""
    md = {
        "format": FORMAT,
        "labels": list(labels),
        "frontend": frontend_cfg.to_dict(),
        "frontend_hash": frontend_cfg.hash,
        "window_frames": int(window_frames),
        "hop_frames": int(hop_frames),
        "n_features": int(frontend_cfg.n_features),
        "input_scale": float(quant["input_scale"]),
        "input_zero_point": int(quant["input_zero_point"]),
        "output_scale": float(quant["output_scale"]),
        "output_zero_point": int(quant["output_zero_point"]),
        "model_name": model_name,
        "arch": arch,
        "params": int(params),
        "trained_on": trained_on,
        "created": _dt.date.today().isoformat(),
        "feature_norm": feature_norm,
    }
    md.update(extra)
    return md


def embed(model_bytes: bytes, metadata: dict) -> bytes:
    """Return a copy of ``model_bytes`` with ``metadata`` stored as the ``ser_edge`` entry.

    An existing ``ser_edge`` entry is replaced (its buffer is reused), so embedding is idempotent.
    """
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as S

    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"metadata is missing required keys: {missing}")
    payload = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode("utf-8")
    model = S.ModelT.InitFromObj(S.Model.GetRootAsModel(model_bytes, 0))
    buf = S.BufferT()
    buf.data = list(payload)  # the object API packs a list of ints as a ubyte vector
    model.metadata = list(model.metadata or [])
    existing = [md for md in model.metadata if md.name in (METADATA_NAME, METADATA_NAME.encode())]
    if existing:
        model.buffers[existing[0].buffer] = buf
    else:
        model.buffers.append(buf)
        entry = S.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    b = flatbuffers.Builder(len(model_bytes) + len(payload) + 1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def read_metadata(model: bytes | str | os.PathLike) -> dict:
    """Read the ``ser_edge`` JSON back from a .tflite (path or bytes); KeyError if absent."""
    from tensorflow.lite.python import schema_py_generated as S

    data = Path(model).read_bytes() if not isinstance(model, (bytes, bytearray)) else bytes(model)
    m = S.Model.GetRootAsModel(data, 0)
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        if md.Name() and md.Name().decode() == METADATA_NAME:
            return json.loads(m.Buffers(md.Buffer()).DataAsNumpy().tobytes().decode("utf-8"))
    raise KeyError(f"no {METADATA_NAME!r} metadata in model")


def write_model(path: str | os.PathLike, model_bytes: bytes, metadata: dict) -> Path:
    """Write ``<path>`` (.tflite with embedded metadata) and ``<path stem>.json`` (sidecar)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(embed(model_bytes, metadata))
    p.with_suffix(".json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return p
