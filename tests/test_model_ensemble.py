"""The int8 ensemble (``model_build.ensemble``): two real tiny members (tf-keras, fused LSTM) become one
full-int8 LiteRT model that loads through the runtime's classifier, whose output on generated audio is
the float members' mean probability within quantisation tolerance, whose graph passes the int8 check,
and whose temperature is fitted on validation clips through the runtime."""
from __future__ import annotations

import json
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


_BUILT: dict = {}


def _ensemble(combine, members, clips, tmp_path_factory):
    """One int8 ensemble per combination, built once per module (each conversion takes ~10 s)."""
    from model_build.ensemble import build_ensemble

    if combine not in _BUILT:
        audios, y = clips
        out = tmp_path_factory.mktemp("ens") / f"ens_{combine}.tflite"
        _BUILT[combine] = build_ensemble(members, out, combine=combine, val_audios=audios, val_y=y, n_calib=200)
    return _BUILT[combine]


def _float_reference(combine, members, windows):
    """numpy reference of the combination of the members' float outputs (uncalibrated): the log of the
    mean probability, or the mean of the logits (log-probabilities differ from logits by a constant)."""
    from model_build.pipeline import load_float

    p = [np.asarray(load_float(m)[0].predict(windows, verbose=0), np.float64) for m in members]
    return np.log(np.mean(p, axis=0)) if combine == "mean_prob" else np.mean(np.log(p), axis=0)


@pytest.mark.parametrize("combine", ["mean_logits", "mean_prob"])
def test_int8_ensemble_matches_the_float_members_and_runs_in_the_runtime(combine, members, clips, tmp_path_factory):
    ensemble = _ensemble(combine, members, clips, tmp_path_factory)
    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.interpreter import IntModel
    from edge_runtime.window_policy import log_softmax
    from model_build.convert import check_int8_graph

    rep = check_int8_graph(ensemble.model_bytes, require_fused_lstm=True)
    assert rep.op_counts["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 2  # one per member, shared input
    if combine == "mean_prob":
        assert {"LOG_SOFTMAX", "EXP", "LOG"} <= set(rep.op_counts)
    else:
        assert set(rep.op_counts) - {"ADD", "MUL"} == set(check_int8_graph(
            _single_bytes(members[0])).op_counts)  # a member's ops, plus the mean and the temperature
    md = ensemble.metadata
    assert md["members"] == 2 and md["ensemble"]["combine"] == combine and md["output_kind"] == "logits"
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
    ref = log_softmax(_float_reference(combine, members, X.astype(np.float32)) / T)
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
    # TFLite Micro: the mean of logits is plain ADD/MUL and runs (within the interpreters' LSB); the mean
    # probability needs int8 EXP/LOG, which TFLM does not have, so it is refused at load
    if combine == "mean_logits":
        tflm = IntModel(ensemble.path, backend="tflm")
        q = [model.quantize(w) for w in windows[:8]]
        diff = np.abs(np.array([tflm.predict_window(x) for x in q], int) - np.array([model.predict_window(x) for x in q], int))
        assert diff.max() <= 2
    else:
        with pytest.raises(Exception, match="tflm"):
            IntModel(ensemble.path, backend="tflm").predict_window(model.quantize(windows[0]))


def _single_bytes(npz):
    from model_build.ensemble import member_tflite

    return member_tflite(npz).read_bytes()


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


def _manifest(d, models):
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({"corpus": "ravdess", "fold_seed": 0, "k": 5, "frontend_hash": "fh",
                                                 "models": models}))


def _entry(seed, fold, test, val):
    name = f"ravdess_s{seed}_fold{fold}"
    return {"name": name, "seed": seed, "fold": fold, "path": f"{name}.tflite", "test_speakers": test,
            "validation_speakers": val}


def test_ensemble_from_picks_each_runs_fold_models_and_refuses_what_does_not_fit(tmp_path):
    """bench/accuracy.py --ensemble-from DIR[:SEED],...: the fold's kept models of each run, only from the
    same folds, front end, test and validation actors; never writing into a member's directory."""
    from types import SimpleNamespace

    from bench.accuracy import ensemble_fold_members

    a, b = tmp_path / "a", tmp_path / "b"
    _manifest(a, [_entry(s, f, ["A01"], ["A02"]) for s in (0, 1) for f in (0, 1)])
    _manifest(b, [_entry(3, 0, ["A01"], ["A02"]), _entry(3, 1, ["A03"], ["A02"])])
    args = SimpleNamespace(ensemble_from=f"{a}:0,{a}:1,{b}", out=str(tmp_path / "out"), fold_seed=0)
    got = ensemble_fold_members(args, 0, ["A01"], ["A02"], "fh")
    assert got == [a / "ravdess_s0_fold0_float.npz", a / "ravdess_s1_fold0_float.npz", b / "ravdess_s3_fold0_float.npz"]
    with pytest.raises(SystemExit, match="test_speakers"):  # b's fold 1 had other test actors
        ensemble_fold_members(args, 1, ["A01"], ["A02"], "fh")
    with pytest.raises(SystemExit, match="validation_speakers"):
        ensemble_fold_members(args, 0, ["A01"], ["A09"], "fh")
    with pytest.raises(SystemExit, match="front end"):
        ensemble_fold_members(args, 0, ["A01"], ["A02"], "other")
    with pytest.raises(SystemExit, match="overwrite"):
        ensemble_fold_members(SimpleNamespace(ensemble_from=str(a), out=str(a), fold_seed=0), 0, ["A01"], ["A02"], "fh")
    with pytest.raises(SystemExit, match="twice"):
        ensemble_fold_members(SimpleNamespace(ensemble_from=f"{a}:0,{a}:0", out="x", fold_seed=0), 0, ["A01"],
                              ["A02"], "fh")
    assert ensemble_fold_members(SimpleNamespace(ensemble_from="", out="x", fold_seed=0), 0, [], [], "fh") is None


def test_compare_cv_groups_pair_an_ensemble_with_the_mean_of_its_members():
    from bench.compare_cv import compare, parse_groups

    common = {"eval_path": "runtime", "window_policy": {}, "speech_gate": {},
              "config": {"fold_seed": 0, "folds": "0,1", "frontend": {}}}
    base = {**common, "ravdess_folds": [{"seed": s, "fold": f, "uar_int8": 0.4 + 0.1 * s + 0.01 * f}
                                        for s in range(4) for f in (0, 1)]}
    option = {**common, "ravdess_folds": [{"seed": 0, "fold": f, "uar_int8": 0.6} for f in (0, 1)]
              + [{"seed": 1, "fold": 0, "uar_int8": 0.6}]}  # group 1 incomplete: not paired
    groups = parse_groups("0=0,1,2;1=3")
    assert groups == {0: [0, 1, 2], 1: [3]}
    r = compare(base, option, groups)
    assert r["seeds"] == [0] and r["groups"] == {"0": [0, 1, 2]}
    k = r["keys"]["uar_int8"]
    assert k["base_mean"] == pytest.approx(0.505)  # mean over seeds 0-2 (0.5) and folds (+0.005)
    assert k["diff_mean"] == pytest.approx(0.095) and k["fold_runs_higher"] == 2
    with pytest.raises(SystemExit):
        parse_groups("0:1,2")


def test_merge_refuses_to_mix_ensembles_and_single_models(tmp_path):
    from bench.accuracy import merge_results

    def run(seed, ens):
        r = {"config": {"folds": "0", "ensemble_from": ens, "seed": seed}, "eval_path": "runtime", "window_policy": {},
             "speech_gate": {}, "ravdess_folds": [{"seed": seed, "fold": 0, "uar_int8": 0.5, "clips_without_label": 0}]}
        p = tmp_path / f"r{seed}_{bool(ens)}.json"
        p.write_text(json.dumps(r))
        return p

    assert merge_results([run(0, "a:0,a:1"), run(1, "b,c")])["seeds_done"] == [0, 1]  # groups differ in members only
    with pytest.raises(SystemExit, match="ensemble"):
        merge_results([run(0, "a:0,a:1"), run(1, "")])


def test_compare_cv_base_extra_adds_seeds_once():
    from bench.compare_cv import with_extra_seeds

    common = {"eval_path": "runtime", "window_policy": {}, "speech_gate": {},
              "config": {"fold_seed": 0, "folds": "0", "frontend": {}}}
    base = {**common, "ravdess_folds": [{"seed": 0, "fold": 0, "uar_int8": 0.5}]}
    extra = {**common, "ravdess_folds": [{"seed": 3, "fold": 0, "uar_int8": 0.6}]}
    assert len(with_extra_seeds(base, [("x", extra)])["ravdess_folds"]) == 2
    with pytest.raises(SystemExit, match="already"):
        with_extra_seeds(base, [("x", base)])
    with pytest.raises(SystemExit, match="fold_seed"):
        with_extra_seeds(base, [("x", {**extra, "config": {**common["config"], "fold_seed": 1}})])


def test_compare_cv_window_row_allows_only_the_window_shape_to_differ():
    from bench.compare_cv import compare

    def run(window, hop, gap=2, uar=0.5):
        return {"eval_path": "runtime", "speech_gate": {},
                "window_policy": {"window_frames": window, "hop_frames": hop, "utterance_gap_windows": gap},
                "config": {"fold_seed": 0, "folds": "0", "frontend": {}},
                "ravdess_folds": [{"seed": 0, "fold": 0, "uar_int8": uar}]}

    base, longer = run(125, 62), run(188, 94, uar=0.45)
    with pytest.raises(SystemExit, match="window_policy"):
        compare(base, longer)  # a window-length change is refused unless the row says it is one
    assert compare(base, longer, window_row=True)["keys"]["uar_int8"]["diff_mean"] == pytest.approx(-0.05)
    with pytest.raises(SystemExit, match="window_policy"):
        compare(base, run(188, 94, gap=3), window_row=True)  # any other policy field still refuses
