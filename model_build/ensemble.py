"""One full-int8 model from N member models: a shared input, every member's logits, one combined output.

    from model_build.ensemble import build_ensemble
    res = build_ensemble(["runs/cv/ravdess_s0_fold0_float.npz", "runs/cv/ravdess_s1_fold0_float.npz",
                          "runs/cv/ravdess_s2_fold0_float.npz"], "runs/ens/ravdess_e0_fold0.tflite",
                         combine="mean_logits", val_audios=audios, val_y=y, val_feats=feats)
    res.path, res.metadata["calibration"]["temperature"], res.float_model  # the Keras twin, same graph

Members are the ``<stem>_float.npz`` files that :func:`model_build.pipeline.save_float` keeps next
to every built ``<stem>.tflite``: the float weights (uncalibrated logits) and the calibration
windows. Each member's ``.tflite`` must sit next to its ``.npz``: its metadata supplies the front end,
labels and window, which must be the same for every member (the ensemble is refused otherwise).

The combination (``combine``, :data:`COMBINES`; default ``mean_logits``, chosen by
``bench/ensemble_combine.py`` on the shipped recipe's 3-seed CV fold models in float through the
runtime: validation actors UAR 0.581 vs 0.577 for ``mean_prob``, test actors 0.573 vs 0.575, i.e.
level, and the mean of logits is the smaller graph that TFLite Micro runs too):

* ``mean_prob`` — the usual ensemble, the mean of the members' probabilities. The runtime applies a
  (log-)softmax to the model's output (:func:`edge_runtime.window_policy.score_log_probabilities`),
  so the graph outputs the *log* of the mean, a logit vector (metadata ``output_kind: "logits"``).
  Computed as ``m + log(sum_k exp(a_k - m))`` with ``a_k = log_softmax(z_k)`` and ``m = max_k a_k``
  (``log N`` dropped: a constant per row does not change a softmax): every int8 intermediate stays in
  a small range (``exp`` in (0, 1], the sum in [1, N]), where a plain ``log(mean softmax)`` would
  round every probability below 1/256 to 0 and its log to the bottom of the range. Ops:
  ``LOG_SOFTMAX``, ``MAXIMUM``, ``SUB``, ``EXP``, ``ADD``, ``LOG`` (int8 in LiteRT / tflite-runtime;
  TFLite Micro has no int8 ``EXP``/``LOG`` kernels, so this graph is a Raspberry Pi model).
* ``mean_logits`` — the mean of the members' logits (the normalised geometric mean of their
  probabilities): ``ADD`` and ``MUL`` only, which TFLite Micro runs too (its size, ~3x a member,
  is the limit there, not its ops).

The temperature is that of the single models' clip-level calibration
(:mod:`model_build.recalibrate`): fitted on validation clips through the runtime (window policy,
speech gate) with the float twin of the ensemble, applied to the combined output (``MUL`` by ``1/T``),
recorded as metadata ``calibration``. Members' own temperatures are not used (their ``_float.npz``
holds the uncalibrated logits). Calibration windows for the int8 conversion are the members' kept
calibration windows, pooled. The graph check (:func:`model_build.convert.check_int8_graph`) requires
int8 in/out, builtin ops only and one fused LSTM per member.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMBINES = ("mean_prob", "mean_logits")
_SAME_KEYS = ("labels", "frontend_hash", "window_frames", "hop_frames", "n_features")  # must agree across members


@dataclass
class EnsembleBuild:
    """What :func:`build_ensemble` made: the int8 model (``path``, ``model_bytes``, ``metadata``,
    ``graph``), its float twin (``float_model``: the same combination over the members' float
    models, temperature included; callable and ``predict``-able like a Keras model) and the members."""

    path: Path | None
    model_bytes: bytes
    metadata: dict
    graph: object  # convert.GraphReport
    float_model: object
    members: list[Path]
    params: int


def member_tflite(npz) -> Path:
    """The ``.tflite`` kept next to a member's ``<stem>_float.npz``."""
    p = Path(npz)
    if not p.name.endswith("_float.npz"):
        raise ValueError(f"{p}: not a member's float weights (<stem>_float.npz of model_build.pipeline.save_float)")
    return p.with_name(p.name[: -len("_float.npz")] + ".tflite")


def _members(member_npzs):
    """``[(keras_trained, model_cfg, calib, metadata_dict)]``, checked to share front end, labels, window."""
    from edge_runtime.model_metadata import read_metadata_json

    from .pipeline import load_float

    if len(member_npzs) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(member_npzs)}")
    out = []
    for p in member_npzs:
        t = member_tflite(p)
        if not Path(p).is_file() or not t.is_file():
            raise FileNotFoundError(f"{p}: member needs both {Path(p).name} and {t.name}")
        md = read_metadata_json(t)
        keras, mcfg, calib = load_float(p)
        out.append((keras, mcfg, calib, md))
    ref = out[0][3]
    for p, (_, _, calib, md) in zip(member_npzs, out):
        diff = [k for k in _SAME_KEYS if md[k] != ref[k]]
        if diff:
            raise ValueError(f"{p}: member differs from {member_npzs[0]} in {diff}")
        if tuple(calib.shape[1:]) != (ref["window_frames"], ref["n_features"]):
            raise ValueError(f"{p}: calibration windows {calib.shape[1:]}, metadata says "
                             f"({ref['window_frames']}, {ref['n_features']})")
    return out


def _combine_layers():
    """The combination as small layers (no Lambda: plain TF ops, so the int8 graph stays builtin)."""
    import tensorflow as tf
    import tf_keras as tfk

    class LogMeanProb(tfk.layers.Layer):
        """``log(sum_k softmax(z_k))`` of the members' logits ``[z_1..z_N]`` (the log of N times the mean
        probability; the constant ``log N`` is left out, a softmax does not see it)."""

        def call(self, zs):
            a = [tf.nn.log_softmax(z, axis=-1) for z in zs]
            m = a[0]
            for v in a[1:]:
                m = tf.maximum(m, v)
            s = tf.exp(a[0] - m)
            for v in a[1:]:
                s = s + tf.exp(v - m)
            return m + tf.math.log(s)

    class MeanLogits(tfk.layers.Layer):
        """The mean of the members' logits."""

        def call(self, zs):
            s = zs[0]
            for z in zs[1:]:
                s = s + z
            return s * (1.0 / len(zs))

    class Scale(tfk.layers.Layer):
        """``x * factor`` (a temperature's ``1/T``), a constant kept in the layer's config."""

        def __init__(self, factor: float = 1.0, **kw):
            super().__init__(**kw)
            self.factor = float(factor)

        def call(self, x):
            return x * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    return {"mean_prob": LogMeanProb, "mean_logits": MeanLogits}, Scale


def ensemble_graph(member_models, combine: str, temperature: float = 1.0, batch_size: int | None = None):
    """A tf-keras model ``features -> combined output / temperature`` over ``member_models`` (each
    ``features -> logits``, all taking the same input shape). ``batch_size=1`` for the int8 conversion
    (the fused LSTM needs it), ``None`` for batched float evaluation."""
    import tf_keras as tfk

    if combine not in COMBINES:
        raise ValueError(f"unknown combine {combine!r}; choose from {COMBINES}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    combiners, Scale = _combine_layers()
    shape = tuple(member_models[0].input_shape[1:])
    inp = tfk.layers.Input(shape=shape, batch_size=batch_size, name="features")
    zs = []
    for i, m in enumerate(member_models):
        m._name = f"member{i}"  # nested models need distinct names; their own layers may repeat
        zs.append(m(inp))
    x = combiners[combine](name=combine)(zs)
    if temperature != 1.0:
        x = Scale(1.0 / temperature, name="temperature")(x)
    return tfk.Model(inp, x, name=f"ensemble{len(member_models)}_{combine}")


def _float_members(members):
    """Each member's trained float model cut at its logits (training-time normaliser kept, batched)."""
    import tf_keras as tfk

    return [tfk.Model(k.input, k.get_layer("logits").output) for k, _, _, _ in members]


def _export_members(members):
    """Each member as its batch-1 export model (normaliser folded into the first layer, logits out)."""
    from .models import export_model

    return [export_model(k, mcfg, md["window_frames"], md["n_features"], len(md["labels"]))
            for k, mcfg, _, md in members]


def fit_ensemble_temperature(float_model, meta, val_audios, val_y, val_feats=None, log=None) -> dict:
    """The clip-level temperature of an ensemble (its float twin at T = 1, ``meta``: the members'
    metadata) on validation clips, through the runtime as :func:`model_build.recalibrate.recalibrate`
    fits a single model's; returns the metadata ``calibration`` record."""
    from .calibrate import clip_nll, clip_probabilities, fit_clip_temperature
    from .evaluate import KerasWindowModel, clip_ece, runtime_eval

    r = runtime_eval(KerasWindowModel(float_model, meta), val_audios, val_feats)
    y = np.asarray(val_y, int)
    t = fit_clip_temperature(r.speech_log_probs, y)
    cal = {"method": "temperature scaling of the runtime's clip probabilities (mean over speech windows) on the "
                     "validation speakers' clips, float twin of the ensemble; applied to the combined output",
           "level": "clip", "temperature": round(t, 4), "n_clips": int(len(y)),
           "n_windows": int(sum(len(c) for c in r.speech_log_probs)),
           "val_clip_ece_before": round(clip_ece(r.pred, clip_probabilities(r.speech_log_probs), y), 4),
           "val_clip_ece_after": round(clip_ece(r.pred, clip_probabilities(r.speech_log_probs, t), y), 4),
           "val_clip_nll_before": round(clip_nll(r.speech_log_probs, y), 4),
           "val_clip_nll_after": round(clip_nll(r.speech_log_probs, y, t), 4)}
    if log:
        log(f"ensemble clip-level temperature {t:.3f}: validation clip ECE {cal['val_clip_ece_before']:.3f} -> "
            f"{cal['val_clip_ece_after']:.3f}")
    return cal


def build_ensemble(member_npzs, out_path=None, *, combine: str = "mean_logits", val_audios=None, val_y=None,
                   val_feats=None, temperature: float | None = None, n_calib: int = 1000,
                   model_name: str = "ser_edge_ensemble", trained_on: str | None = None,
                   extra_metadata: dict | None = None, log=None) -> EnsembleBuild:
    """Build ONE full-int8 ``.tflite`` from N member models and return an :class:`EnsembleBuild`.

    ``member_npzs``: the members' ``<stem>_float.npz`` (each with ``<stem>.tflite`` beside it, same
    front end, labels, window). ``out_path``: where to write the model (+ ``.json`` sidecar); ``None``
    keeps it in memory. ``combine``: ``"mean_prob"`` or ``"mean_logits"`` (module docstring).
    Temperature: ``temperature`` if given, else fitted on the validation clips ``val_audios`` (int16
    PCM) / ``val_y`` (label indices) / ``val_feats`` (their cached raw front-end features, optional)
    through the runtime (:func:`fit_ensemble_temperature`), else 1. ``n_calib``: calibration windows
    for the int8 conversion, drawn from the members' kept ones. The metadata is a single model's
    (front end, labels, window, int8 scales, ``feature_norm`` per member) plus ``members`` (count),
    ``ensemble`` (combination, member files, their architecture) and ``calibration``.
    """
    from edge_runtime.model_metadata import ModelMetadata

    from . import convert as C
    from .embed_metadata import embed, make_metadata, write_model
    from .models import count_params

    log = log or (lambda s: None)
    member_npzs = [Path(p) for p in member_npzs]
    members = _members(member_npzs)
    md0 = members[0][3]
    meta = ModelMetadata.from_dict(md0, str(member_tflite(member_npzs[0])))
    calib_md = {}
    if temperature is None and val_audios is not None:
        calib_md = fit_ensemble_temperature(ensemble_graph(_float_members(members), combine), meta, val_audios,
                                            val_y, val_feats, log=log)
        temperature = calib_md["temperature"]
    elif temperature is not None:
        calib_md = {"method": "given", "level": "clip", "temperature": round(float(temperature), 4)}
    t = float(temperature or 1.0)
    float_model = ensemble_graph(_float_members(members), combine, t)
    exp = ensemble_graph(_export_members(members), combine, t, batch_size=1)
    calib = np.concatenate([c for _, _, c, _ in members])
    log(f"converting the {len(members)}-member ensemble ({combine}) to int8 "
        f"(calibration: {min(n_calib, len(calib))} of the members' {len(calib)} windows)")
    raw, _ = C.convert_int8(exp, calib, n_calib=n_calib, check=False)
    graph = C.check_int8_graph(raw, require_fused_lstm=True)
    n_lstm = graph.op_counts.get("UNIDIRECTIONAL_SEQUENCE_LSTM", 0)
    if n_lstm != len(members):
        raise C.GraphCheckError([f"{n_lstm} fused LSTM ops for {len(members)} members"], graph.ops)
    params = sum(count_params(k) for k, _, _, _ in members)
    fe = meta.frontend_config()
    member_arch = sorted({m[3].get("arch", "") for m in members})
    md = make_metadata(
        labels=md0["labels"], frontend_cfg=fe, window_frames=md0["window_frames"], hop_frames=md0["hop_frames"],
        quant=C.io_quant(raw), model_name=model_name,
        arch=f"ensemble{len(members)}-{combine}[{'|'.join(member_arch)}]", params=params,
        trained_on=trained_on if trained_on is not None else "; ".join(
            sorted({str(m[3].get("trained_on", "")) for m in members})),
        feature_norm={"kind": "global_affine_folded_per_member",
                      "note": "each member's own training-window normaliser folded into its first layer; "
                              "feed raw front-end features (no per-utterance norm)",
                      "members": [m[3].get("feature_norm") for m in members]},
        output_kind="logits", ops=graph.op_counts, members=len(members),
        ensemble={"combine": combine, "members": len(members),
                  "member_files": [p.name for p in member_npzs],
                  "member_models": [m[3].get("model_name", "") for m in members],
                  "member_arch": member_arch, "tflm_runnable": combine == "mean_logits",
                  "member_model_config": [json.loads(json.dumps(m[1].to_dict())) for m in members]},
        **({"calibration": calib_md} if calib_md else {}),
        **{k: md0[k] for k in ("licence", "test_speakers", "validation_speakers") if k in md0},
        **(extra_metadata or {}))
    if out_path is not None:
        path = write_model(out_path, raw, md)
        model_bytes = path.read_bytes()
    else:
        path, model_bytes = None, embed(raw, md)
    log(f"ensemble: {len(model_bytes)} bytes, {params} parameters, ops {graph.op_counts}")
    return EnsembleBuild(path=path, model_bytes=model_bytes, metadata=md, graph=graph, float_model=float_model,
                         members=member_npzs, params=params)
