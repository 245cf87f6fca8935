"""Embed the ``ser_edge`` JSON metadata inside a .tflite flatbuffer (and write a JSON sidecar).

The schema, the key list and the dict builder are ``edge_runtime.model_metadata``'s (one owner);
this module packs a validated dict as the ``Model.metadata`` entry ``"ser_edge"``. Written with TF's generated flatbuffer object API, so every
interpreter (LiteRT, TFLite Micro) still loads the model unchanged.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

# the schema, its keys and the dict builder live in the runtime (one owner); this module only packs
from edge_runtime.model_metadata import (FORMAT, METADATA_NAME, WRITTEN_KEYS, ModelMetadata,  # noqa: F401
                                         make_metadata, read_metadata_json)

REQUIRED_KEYS = WRITTEN_KEYS


def embed(model_bytes: bytes, metadata: dict) -> bytes:
    """Return a copy of ``model_bytes`` with ``metadata`` stored as the ``ser_edge`` entry.

    An existing ``ser_edge`` entry is replaced (its buffer is reused), so embedding is idempotent.
    """
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as S

    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"metadata is missing required keys: {missing}")
    ModelMetadata.from_dict(metadata, "<metadata to embed>")  # the runtime must be able to read it
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
    """The ``ser_edge`` JSON of a .tflite (path or bytes): :func:`edge_runtime.model_metadata.read_metadata_json`."""
    return read_metadata_json(model)


def write_model(path: str | os.PathLike, model_bytes: bytes, metadata: dict) -> Path:
    """Write ``<path>`` (.tflite with embedded metadata) and ``<path stem>.json`` (sidecar)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(embed(model_bytes, metadata))
    p.with_suffix(".json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return p
