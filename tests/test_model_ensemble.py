"""The int8 ensemble (``model_build.ensemble``): two real tiny members (tf-keras, fused LSTM) become one
full-int8 LiteRT model that loads through the runtime's classifier, whose output on generated audio is
the float members' mean probability within quantisation tolerance, whose graph passes the int8 check,
and whose temperature is fitted on validation clips through the runtime."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.conftest import require_module


@pytest.fixture(scope="module")
def members(tiny_model_build, tmp_path_factory):
    """Two tiny members side by side: the session's tiny model (seed 0) and one trained with seed 1."""
    require_module("tensorflow")
    from model_build.pipeline import build_tiny_model

    d = tmp_path_factory.mktemp("members")
    src = tiny_model_build.path
    for suffix in (".tflite", "_float.npz"):
        shutil.copyfile(src.with_name(src.stem + suffix), d / f"m0{suffix}")
    build_tiny_model(d / "m1.tflite", seed=1, epochs=2)
    return [d / "m0_float.npz", d / "m1_float.npz"]


@pytest.fixture(scope="module")
def clips():
    """Generated labelled audio (other speakers than the members' training corpus, seed 7)."""
    from model_build.corpora.synth import generate_corpus
    from model_build.pipeline import TINY_LABELS

    pairs = generate_corpus(n_speakers=2, clips_per_label=4, labels=TINY_LABELS, duration=(1.2, 2.0), seed=7)
    return [a for _, a in pairs], np.array([TINY_LABELS.index(c.label) for c, _ in pairs])


@pytest.fixture(scope="module")
def ensemble(members, clips, tmp_path_factory):
    from model_build.ensemble import build_ensemble

    audios, y = clips
    out = tmp_path_factory.mktemp("ens") / "ens.tflite"
    return build_ensemble(members, out, combine="mean_prob", val_audios=audios, val_y=y, n_calib=200)


def _float_mean_prob(members, windows):
    """numpy reference: log of the mean of the members' float softmax outputs (uncalibrated)."""
    from model_build.pipeline import load_float

    p = [np.asarray(load_float(m)[0].predict(windows, verbose=0), np.float64) for m in members]
    return np.log(np.mean(p, axis=0))


def test_int8_ensemble_matches_the_float_members_and_runs_in_the_runtime(members, clips, ensemble):
    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.interpreter import IntModel
    from edge_runtime.window_policy import log_softmax
    from model_build.convert import check_int8_graph

    rep = check_int8_graph(ensemble.model_bytes, require_fused_lstm=True)
    assert rep.op_counts["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 2  # one per member, shared input
    assert {"LOG_SOFTMAX", "EXP", "LOG"} <= set(rep.op_counts)
    md = ensemble.metadata
    assert md["members"] == 2 and md["ensemble"]["combine"] == "mean_prob" and md["output_kind"] == "logits"
    T = md["calibration"]["temperature"]
    assert T > 0 and md["calibration"]["val_clip_nll_after"] <= md["calibration"]["val_clip_nll_before"]

    model = IntModel(ensemble.path, backend="litert")
    clf = StreamingClassifier(model, gate=None)
    audios, _ = clips
    from edge_runtime.frontend import compute_features

    fe = model.frontend_config
    lp_int8, windows = [], []
    for a in audios[:6]:
        wins, _, summary = clf.classify_clip(a)
        assert summary.label_index is not None
        lp_int8 += [w.log_probs for w in wins]
        feats = compute_features(a, fe)
        W, H = model.meta.window_frames, model.meta.hop_frames
        windows += [feats[s:s + W] for s in range(0, len(feats) - W + 1, H)]
    # the same full windows in float: the members' mean probability at the fitted temperature
    X = np.stack(windows).astype(np.float64) * 2.0 ** -fe.frac_bits
    ref = log_softmax(_float_mean_prob(members, X.astype(np.float32)) / T)
    got = []
    for w in windows:
        got.append(model.log_probabilities(model.predict_window(model.quantize(w))))
    got = np.array(got)
    # int8 rounding of inputs, members and the combination: a few output steps, top-1 nearly always kept
    err = np.abs(np.exp(got) - np.exp(ref))
    assert err.max() < 0.08, err.max()
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.9
    # the classifier's window log-probabilities are the model's on its own windows (policy, not new numbers)
    assert np.isfinite(np.array(lp_int8)).all()

    # the float twin is the same combination (temperature included)
    np.testing.assert_allclose(log_softmax(np.asarray(ensemble.float_model.predict(X.astype(np.float32), verbose=0),
                                                      np.float64)), ref, atol=1e-4)


def test_mean_logits_graph_and_member_checks(members, tmp_path):
    from model_build.ensemble import _float_members, _members, ensemble_graph
    from model_build.pipeline import load_float

    ms = _members(members)
    X = np.concatenate([c for _, _, c, _ in ms])[:32]
    g = ensemble_graph(_float_members(ms), "mean_logits", temperature=2.0)
    z = [np.log(np.asarray(load_float(m)[0].predict(X, verbose=0), np.float64)) for m in members]
    from edge_runtime.window_policy import log_softmax

    np.testing.assert_allclose(log_softmax(np.asarray(g.predict(X, verbose=0), np.float64)),
                               log_softmax(np.mean(z, axis=0) / 2.0), atol=1e-4)
    with pytest.raises(ValueError, match="at least 2 members"):
        _members(members[:1])
    with pytest.raises(ValueError, match="_float.npz"):
        _members([members[0], tmp_path / "x.npz"])
