"""The pure-Python flatbuffer metadata reader against TF's schema writer (real .tflite files)."""
from __future__ import annotations

import json
import struct

import pytest
from tests.test_runtime_helpers import LABELS, build_int8_lstm, embed, make_metadata, tiny_model_bytes

from edge_runtime.model_metadata import (ModelFileError, ModelMetadata, read_metadata,
                                         read_metadata_entries, read_metadata_json)


def test_round_trip_inline(tmp_path):
    raw = build_int8_lstm()
    md = make_metadata(raw, extra_key=[1, 2])
    p = tmp_path / "m.tflite"
    p.write_bytes(embed(raw, md))
    assert read_metadata_json(p) == json.loads(json.dumps(md))
    meta = read_metadata(p)
    assert isinstance(meta, ModelMetadata)
    assert meta.labels == tuple(LABELS) and meta.window_frames == 16 and meta.hop_frames == 4
    assert meta.input_scale == md["input_scale"] and meta.output_zero_point == md["output_zero_point"]
    assert meta.extra == {"feature_norm": {}, "extra_key": [1, 2],
                          "frontend_tables_checksum": md["frontend_tables_checksum"]}
    assert meta.frontend_config().hash == md["frontend_hash"]
    assert ModelMetadata.from_dict(meta.to_dict()) == meta


def test_round_trip_external_buffer():
    """Buffer.offset/size layout (data after the flatbuffer, used for > 2 GB models)."""
    raw = build_int8_lstm()
    md = make_metadata(raw)
    data = embed(raw, md, external=True)
    payload = json.dumps(md).encode()
    assert data.endswith(payload)
    assert read_metadata_json(data) == md
    # and the reader really follows the offset: corrupt the appended copy -> different JSON
    bad = data[:-len(payload)] + json.dumps({**md, "labels": ["x"]}).encode().ljust(len(payload))
    assert read_metadata_json(bad)["labels"] == ["x"]


def test_other_metadata_entries_are_listed():
    raw = build_int8_lstm()  # TF's converter adds min_runtime_version / CONVERSION_METADATA
    entries = read_metadata_entries(tiny_model_bytes())
    assert "ser_edge" in entries and len(entries) >= 2
    assert set(read_metadata_entries(raw)) == set(entries) - {"ser_edge"}


def test_model_build_writer_is_read(tmp_path):
    """The model_build engineer's writer (if present) produces what this reader expects."""
    import model_build.embed_metadata as eb

    raw = build_int8_lstm()
    md = make_metadata(raw)
    p = eb.write_model(tmp_path / "mb.tflite", raw, md)
    assert read_metadata(p).to_dict()["labels"] == LABELS
    assert read_metadata_json(p) == eb.read_metadata(p)


@pytest.mark.parametrize("content, needle", [
    (b"", "too small"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40), "not a TFLite model"),
    (b"\x10\x00\x00\x00TFL3" + bytes(4), "too small"),
    (struct.pack("<I", 10 ** 6) + b"TFL3" + bytes(64), "root table offset"),
])
def test_not_a_flatbuffer(tmp_path, content, needle):
    p = tmp_path / "bad.tflite"
    p.write_bytes(content)
    with pytest.raises(ModelFileError, match=needle) as e:
        read_metadata(p)
    assert str(p) in str(e.value)


def test_corrupt_vtable_is_a_clear_error(tmp_path):
    data = bytearray(tiny_model_bytes())
    root = struct.unpack_from("<I", data, 0)[0]
    struct.pack_into("<i", data, root, -(10 ** 8))  # vtable pointer far outside the file
    p = tmp_path / "corrupt.tflite"
    p.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"corrupt\.tflite: corrupt TFLite flatbuffer"):
        read_metadata(p)


def test_missing_metadata(tmp_path):
    p = tmp_path / "plain.tflite"
    p.write_bytes(build_int8_lstm())
    with pytest.raises(ModelFileError, match=r"plain\.tflite: no 'ser_edge' metadata"):
        read_metadata(p)


def test_unknown_format_and_missing_keys():
    raw = build_int8_lstm()
    with pytest.raises(ModelFileError, match="unknown model metadata format 'ser-edge-model/9'"):
        read_metadata(embed(raw, make_metadata(raw, format="ser-edge-model/9")))
    md = make_metadata(raw)
    del md["labels"], md["hop_frames"]
    with pytest.raises(ModelFileError, match=r"missing \['labels', 'hop_frames'\]"):
        read_metadata(embed(raw, md))
    with pytest.raises(ModelFileError, match="window_frames must be a positive integer"):
        read_metadata(embed(raw, make_metadata(raw, window_frames=0)))
    with pytest.raises(ModelFileError, match="not valid UTF-8 JSON"):
        read_metadata(embed(raw, b"{not json"))


def test_frontend_tables_checksum_is_recorded_and_checked(tmp_path):
    """A model whose recorded table checksum differs from the tables this runtime generates is refused."""
    from edge_runtime.frontend import FrontendConfig
    from edge_runtime.frontend.tables import tables_checksum
    from edge_runtime.interpreter import IntModel, ModelMismatchError

    raw = build_int8_lstm()
    md = make_metadata(raw)
    assert md["frontend_tables_checksum"] == tables_checksum(FrontendConfig()) and len(md["frontend_tables_checksum"]) == 8
    ok = tmp_path / "ok.tflite"
    ok.write_bytes(embed(raw, md))
    assert IntModel(ok).meta.extra["frontend_tables_checksum"] == md["frontend_tables_checksum"]
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(embed(raw, {**md, "frontend_tables_checksum": "00000000"}))
    with pytest.raises(ModelMismatchError, match=r"bad\.tflite: front-end table checksum mismatch.*00000000"):
        IntModel(bad)
