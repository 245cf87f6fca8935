"""The JSON-lines output of ``ser-edge``: one record schema for ``run``, ``stream``, ``listen``,
``validate`` (and the MQTT/UDP copies of those lines).

Every line is one JSON object with ``"schema": SCHEMA_VERSION`` and ``"record"`` naming its kind:

* ``window``: one classified window (``run`` classifies locally; ``stream``/``listen`` receive it
  from a device over the serial link);
* ``utterance``: a run of speech windows, closed by non-speech windows or the end of the input;
* ``summary``: the whole input (one per file / serial session, after its utterances);
* ``file``: ``validate``'s result for one clip;
* ``validation``: ``validate``'s totals, last.

:data:`FIELDS` is the single description of every key (type, unit, which records carry it, who
produces it); :func:`make` builds a record (and checks it when ``SER_EDGE_DEBUG`` is set),
:func:`check` lists what is wrong with one, :func:`json_schema` gives the same rules as a JSON
Schema (draft 2020-12) for consumers in other languages, and :func:`markdown_table` renders the
table the README shows (``python -m edge_runtime.records`` prints it). A key added to a record
without a row here fails the tests. ``SCHEMA_VERSION`` changes when a key is renamed, removed or
changes meaning; added optional keys keep it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SCHEMA_VERSION = 1
KINDS = ("window", "utterance", "summary", "file", "validation")
LABELLED = ("window", "utterance", "summary")  # records that carry a label
# labels that are not emotions (then "index" is null and "reason" names the case)
REASONS = ("silence", "no_speech", "uncertain", "too_short", "gap")
# serial RESULT flags, lower-case (edge_runtime.protocol.ResultFlags)
FLAGS = ("silence", "uncertain", "gap", "push", "no_speech", "utterance")

_W, _U, _S = frozenset({"window"}), frozenset({"utterance"}), frozenset({"summary"})
_L = frozenset(LABELLED)
_F, _V = frozenset({"file"}), frozenset({"validation"})


@dataclass(frozen=True)
class Field:
    """One key: JSON types (``"null"`` when it may be null), unit, the records that always carry it
    (``required``) and those that may (``optional``), who writes it, and what it means."""

    name: str
    types: tuple[str, ...]
    unit: str
    required: frozenset
    optional: frozenset
    producers: str
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple | None = None
    items: str | None = None  # element type of an array / value type of an object

    @property
    def kinds(self) -> frozenset:
        return self.required | self.optional


FIELDS: tuple[Field, ...] = (
    Field("schema", ("integer",), "", frozenset(KINDS), frozenset(), "all",
          f"record schema version; this is {SCHEMA_VERSION}", enum=(SCHEMA_VERSION,)),
    Field("record", ("string",), "", frozenset(KINDS), frozenset(), "all",
          "what the line is: " + ", ".join(KINDS), enum=KINDS),
    Field("time", ("number",), "s", _L, frozenset(), "run, stream, listen",
          "when the label applies: the end of the audio it covers (= `t_end`), seconds from the start "
          "of the input (file, stdin, microphone or serial session); the key to sort or plot by", minimum=0),
    Field("t_start", ("number",), "s", _L, frozenset(), "run, stream, listen",
          "start of the audio the record covers, seconds from the start of the input", minimum=0),
    Field("t_end", ("number",), "s", _L, frozenset(), "run, stream, listen",
          "end of the audio the record covers (a window is `t_end - t_start` = 2.016 s long with the shipped "
          "model; a tail window may start earlier to stay full length)", minimum=0),
    Field("label", ("string",), "", _L, frozenset(), "run, stream, listen",
          "the emotion, or when there is none one of " + ", ".join(f"`{r}`" for r in REASONS)),
    Field("index", ("integer", "null"), "", _L, frozenset(), "run, stream, listen",
          "position of `label` in the model's label list (metadata order; `ser-edge check-model` and "
          "`run --info` list it); **null** whenever `label` is not an emotion", minimum=0),
    Field("reason", ("string", "null"), "", _L, frozenset(), "run, stream, listen",
          "null for an emotion; else why there is none: `silence` (nothing audible), `no_speech` "
          "(audible but not speech), `uncertain` (top probability below `--min-confidence`, or a tie), "
          "`too_short` (summary of an input shorter than the shortest window), `gap` (stream/listen: the "
          "window overlaps input lost on the serial link and zero-filled; never a label)", enum=(None,) + REASONS),
    Field("scores_int8", ("array",), "int8 LSB", _L, frozenset(), "run, stream, listen",
          "the model's raw int8 outputs in label order (utterance/summary: their mean over the speech "
          "windows, rounded); dequantise with the model's output scale and zero point",
          minimum=-128, maximum=127, items="integer"),
    Field("probs", ("object", "array"), "probability", frozenset(), _L, "run, stream, listen",
          "label → probability (window: after `--smooth`; utterance/summary: mean over its speech windows; "
          "stream/listen: from the device's scores by the same rule, the utterance/summary mean over the speech "
          "windows received); "
          "a list in label order when the producer was not given the labels",
          minimum=0, maximum=1, items="number"),
    Field("confidence", ("number",), "probability", frozenset(), _L, "run, stream, listen",
          "window: the top probability; utterance/summary: the probability of its label (0 when none)",
          minimum=0, maximum=1),
    Field("window", ("integer",), "", _W, frozenset(), "run, stream, listen",
          "window number in the input, from 0; windows start every hop (1 s with the shipped model)", minimum=0),
    Field("latency_ms", ("number",), "ms", frozenset(), _W, "run",
          "`fe_ms + nn_ms`: how long the caller waited after the audio completing this window arrived",
          minimum=0),
    Field("fe_ms", ("number",), "ms", frozenset(), _W, "run",
          "front-end (feature) time for this window's new frames", minimum=0),
    Field("nn_ms", ("number",), "ms", frozenset(), _W, "run", "model inference time for this window", minimum=0),
    Field("active_frames", ("integer",), "frames", frozenset(), _W, "run",
          "frames of this window the speech gate marked as speech (of 125 with the shipped model)", minimum=0),
    Field("kind", ("string",), "", frozenset(), _W, "run",
          "present only for a window that is not a regular hop: `short` (an input shorter than one window, "
          "padded) or `flush` (the tail of the input at its end)", enum=("short", "flush")),
    Field("device_latency_ms", ("number",), "ms", frozenset(), _L, "stream, listen",
          "the device's own time from the window's last input to its RESULT", minimum=0),
    Field("session", ("integer",), "", frozenset(), _L, "stream, listen",
          "the device's session number (one per START); records of one input share it", minimum=0),
    Field("flags", ("array",), "", frozenset(), _L, "stream, listen",
          "RESULT flags that were set: " + ", ".join(f"`{f}`" for f in FLAGS) + " (`gap`: the window "
          "overlaps input lost on the link, do not trust it)", enum=FLAGS, items="string"),
    Field("utterance", ("integer",), "", _U, frozenset(), "run, stream, listen",
          "utterance number in the input, from 0", minimum=0),
    Field("first_window", ("integer",), "", frozenset(), _U, "run",
          "`window` of the utterance's first window", minimum=0),
    Field("last_window", ("integer",), "", frozenset(), _U, "run",
          "`window` of the utterance's last window", minimum=0),
    Field("windows", ("integer",), "windows", _F | _V, _U | _S, "run, validate",
          "utterance/summary: windows it spans; file/validation: windows the host classified", minimum=0),
    Field("speech_windows", ("integer",), "windows", frozenset(), _U | _S, "run",
          "of those, the windows the speech gate passed (the label is their mean log-probability)", minimum=0),
    Field("file", ("string",), "", _F, frozenset(), "validate", "the clip, relative to the corpus folder"),
    Field("truth", ("string", "null"), "", _F, frozenset(), "validate",
          "the clip's class from its folder or file name; null when neither names one"),
    Field("pred", ("string",), "", _F, frozenset(), "validate",
          "the device's summary label for the clip (`missing` if none arrived)"),
    Field("host_pred", ("string",), "", _F, frozenset(), "validate",
          "the host's summary label for what the device was sent (the audio; in `features` mode the int8 "
          "frames, not gated, as the device runs them) and the same model, as a summary record carries it "
          "(`too_short` travels as `silence`)"),
    Field("summary_agree", ("boolean",), "", _F, frozenset(), "validate",
          "`pred == host_pred`: the device's summary record arrived with the host's label"),
    Field("received", ("integer",), "windows", _F, frozenset(), "validate",
          "window records that came back from the device", minimum=0),
    Field("agree", ("integer",), "windows", _F, frozenset(), "validate",
          "windows whose device top-1 equals the host's", minimum=0),
    Field("files", ("integer",), "", _V, frozenset(), "validate", "clips validated", minimum=0),
    Field("missing", ("integer",), "windows", _V, frozenset(), "validate",
          "windows the host classified that never came back", minimum=0),
    Field("gap_flagged", ("integer",), "windows", _V, frozenset(), "validate",
          "windows the device flagged `gap`", minimum=0),
    Field("agreement", ("number", "null"), "fraction", _V, frozenset(), "validate",
          "device top-1 = host top-1, over all windows (1.0 is the goal; the exit code is 0 only then, "
          "with every summary record back and agreeing)",
          minimum=0, maximum=1),
    Field("scores_identical", ("number", "null"), "fraction", _V, frozenset(), "validate",
          "windows whose int8 scores are bit-identical", minimum=0, maximum=1),
    Field("summaries_missing", ("integer",), "", _V, frozenset(), "validate",
          "clips whose summary record never came back (a device sends one for every session, even with no "
          "speech window; the exit code is 0 only with none)", minimum=0),
    Field("summary_agreement", ("number", "null"), "fraction", _V, frozenset(), "validate",
          "clips with `summary_agree`, over all clips (a missing summary disagrees; the exit code is 0 only "
          "at 1.0)", minimum=0, maximum=1),
    Field("summaries_no_emotion", ("integer",), "", _V, frozenset(), "validate",
          "of the agreeing clips, those both sides call `silence`, `no_speech` or `uncertain`", minimum=0),
    Field("clip_accuracy", ("number", "null"), "fraction", _V, frozenset(), "validate",
          "`pred == truth` over the clips with a `truth`; null without any", minimum=0, maximum=1),
    Field("labelled_clips", ("integer",), "", _V, frozenset(), "validate", "clips with a `truth`", minimum=0),
    Field("device_latency_ms", ("object",), "ms", _V, frozenset(), "validate",
          "the device's own latency over all windows: `p50`, `p90`, `p99`, `max`", minimum=0, items="number"),
    Field("label_latency_ms", ("object",), "ms", _V, frozenset(), "validate",
          "end of a window's input sent → its RESULT received: `p50`, `p90`, `p99`, `max` (with "
          "`label_latency_includes_queueing` true this includes the host's own send queue)",
          minimum=0, items="number"),
    Field("mode", ("string",), "", _V, frozenset(), "validate",
          "what the host sent: `audio` or `features`", enum=("audio", "features")),
    Field("baud", ("integer",), "baud", _V, frozenset(), "validate", "serial link speed", minimum=1),
    Field("realtime", ("boolean",), "", _V, frozenset(), "validate", "audio was paced at real time (`--realtime`)"),
    Field("label_latency_includes_queueing", ("boolean",), "", _V, frozenset(), "validate",
          "true without `--realtime`: the host queues audio faster than the link drains it"),
    Field("link", ("object",), "", _V, frozenset(), "validate",
          "host-side link counters (frames received, dropped by reason, reconnects)", items="integer"),
)
# A name may have one row per set of records (device_latency_ms: a number on a window, percentiles
# on the validation record); a record kind sees exactly one row per name.
assert all(len({f.name for f in FIELDS if k in f.kinds}) == sum(k in f.kinds for f in FIELDS) for k in KINDS)

_TYPES = {"integer": int, "number": (int, float), "string": str, "boolean": bool, "array": list,
          "object": dict, "null": type(None)}


def fields_of(kind: str) -> dict[str, Field]:
    """The fields a ``kind`` record may carry, by name."""
    return {f.name: f for f in FIELDS if kind in f.kinds}


def _type_ok(v, types: tuple[str, ...]) -> bool:
    if isinstance(v, bool):
        return "boolean" in types
    return any(isinstance(v, _TYPES[t]) for t in types)


def _range_problems(name: str, v, f: Field) -> list[str]:
    out = []
    if isinstance(v, float) and not math.isfinite(v):
        out.append(f"{name}: {v} is not a finite number")
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        if f.minimum is not None and v < f.minimum:
            out.append(f"{name}: {v} < {f.minimum}")
        if f.maximum is not None and v > f.maximum:
            out.append(f"{name}: {v} > {f.maximum}")
    return out


def check(rec: dict) -> list[str]:
    """What is wrong with ``rec`` against the schema (empty list: nothing)."""
    if not isinstance(rec, dict):
        return [f"a record is a JSON object, got {type(rec).__name__}"]
    kind = rec.get("record")
    if kind not in KINDS:
        return [f"record: {kind!r} is not one of {', '.join(KINDS)}"]
    allowed = fields_of(kind)
    problems = [f"{k}: not a key of a {kind} record" for k in rec if k not in allowed]
    for name, f in allowed.items():
        if name not in rec:
            if kind in f.required:
                problems.append(f"{name}: missing from a {kind} record")
            continue
        v = rec[name]
        if not _type_ok(v, f.types):
            problems.append(f"{name}: {type(v).__name__} {v!r}, expected {' or '.join(f.types)}")
            continue
        if f.enum is not None and not isinstance(v, (list, dict)) and v not in f.enum:
            problems.append(f"{name}: {v!r} is not one of {f.enum}")
        problems += _range_problems(name, v, f)
        if isinstance(v, (list, dict)) and f.items:
            for i, x in (v.items() if isinstance(v, dict) else enumerate(v)):
                if not _type_ok(x, (f.items,)):
                    problems.append(f"{name}[{i!r}]: {x!r} is not {f.items}")
                elif f.enum is not None and x not in f.enum:
                    problems.append(f"{name}[{i!r}]: {x!r} is not one of {f.enum}")
                else:
                    problems += _range_problems(f"{name}[{i!r}]", x, f)
    if kind in LABELLED and not problems:  # index and reason agree with the label
        if rec["index"] is None and rec["reason"] is None:
            problems.append("index is null but reason is null: a label without an emotion needs a reason")
        if rec["index"] is not None and rec["reason"] is not None:
            problems.append(f"index {rec['index']} with reason {rec['reason']!r}: an emotion has no reason")
        if rec["reason"] is not None and rec["label"] != rec["reason"]:
            problems.append(f"label {rec['label']!r} differs from reason {rec['reason']!r}")
        if abs(rec["time"] - rec["t_end"]) > 1e-6:
            problems.append(f"time {rec['time']} != t_end {rec['t_end']}")
        if rec["t_end"] < rec["t_start"]:
            problems.append(f"t_end {rec['t_end']} < t_start {rec['t_start']}")
    return problems


class RecordError(ValueError):
    """A record that breaks the schema (raised by :func:`make` under ``SER_EDGE_DEBUG``)."""


def make(kind: str, fields: dict) -> dict:
    """The record ``{"schema": ..., "record": kind, **fields}`` (keys in that order).

    Every producer builds its lines through this function; with ``SER_EDGE_DEBUG`` set it also
    checks the result and raises :class:`RecordError` naming each problem.
    """
    rec = {"schema": SCHEMA_VERSION, "record": kind}
    rec.update((k, v) for k, v in fields.items() if k not in ("schema", "record"))
    from .native_log import debug_enabled

    if debug_enabled():
        problems = check(rec)
        if problems:
            raise RecordError(f"{kind} record breaks schema {SCHEMA_VERSION}: " + "; ".join(problems))
    return rec


def json_schema() -> dict:
    """The schema as a JSON Schema (draft 2020-12) document: one ``oneOf`` branch per record kind."""
    def prop(f: Field) -> dict:
        p: dict = {"type": list(f.types) if len(f.types) > 1 else f.types[0], "description": f.doc}
        if f.unit:
            p["description"] += f" [{f.unit}]"
        scalar = {k: v for k, v in (("minimum", f.minimum), ("maximum", f.maximum)) if v is not None}
        if f.items:
            inner = {"type": f.items, **(scalar if f.items in ("integer", "number") else {})}
            if f.enum is not None:
                inner["enum"] = list(f.enum)
            p["items" if "array" in f.types else "additionalProperties"] = inner
        else:
            p.update(scalar if set(f.types) & {"integer", "number"} else {})
            if f.enum is not None:
                p["enum"] = list(f.enum)
        return p

    branches = []
    for kind in KINDS:
        fs = fields_of(kind)
        props = {n: prop(f) for n, f in fs.items()}
        props["record"] = {**props["record"], "const": kind}
        props["record"].pop("enum", None)
        branches.append({"type": "object", "properties": props, "additionalProperties": False,
                         "required": [n for n, f in fs.items() if kind in f.required]})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"ser-edge-records-{SCHEMA_VERSION}",
            "title": f"ser-edge JSON-lines records, schema {SCHEMA_VERSION}", "oneOf": branches}


def markdown_table() -> str:
    """The README's table of every key (generated, so it cannot drift from :data:`FIELDS`)."""
    short = {"window": "W", "utterance": "U", "summary": "S", "file": "F", "validation": "V"}
    rows = ["| key | type | unit | in records (* = always) | written by | meaning |", "|---|---|---|---|---|---|"]
    for f in FIELDS:
        kinds = " ".join(short[k] + ("*" if k in f.required else "") for k in KINDS if k in f.kinds)
        types = " or ".join(f.types)
        rows.append(f"| `{f.name}` | {types} | {f.unit or ''} | {kinds} | {f.producers} | {f.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    if sys.argv[1:] == ["--json-schema"]:
        print(json.dumps(json_schema(), indent=1))
    else:
        print(markdown_table())
