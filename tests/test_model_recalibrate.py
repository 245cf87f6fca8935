"""Clip-level temperature scaling (the probability the runtime reports for a clip), the re-conversion
that folds a temperature into a kept model, and the ECE noise floor."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_module, require_tool  # noqa: F401

from model_build.calibrate import (clip_nll, clip_probabilities, ece_noise_floor, expected_calibration_error,
                                   fit_clip_temperature)


def _clips(rng, n_clips=600, n_classes=6, scale=1.2):
    """Clips of 1-4 windows whose windows share a clip-level logit vector plus window noise; each
    label is drawn from the clip's reported probability (mean of the window softmaxes) at T = 1."""
    out = []
    for _ in range(n_clips):
        z = rng.normal(0, scale, n_classes)
        out.append(z + rng.normal(0, 0.5, (int(rng.integers(1, 5)), n_classes)))
    p = clip_probabilities(out)
    y = (rng.random(n_clips)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return out, np.minimum(y, n_classes - 1)


def test_clip_probabilities_are_the_runtime_summary_rule():
    from edge_runtime.window_policy import aggregate, log_softmax

    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 2, (k, 5)) for k in (1, 3, 7)] + [np.zeros((0, 5))]
    p = clip_probabilities(clips, 1.7)
    for c, row in zip(clips[:3], p[:3]):
        np.testing.assert_allclose(row, aggregate(log_softmax(c / 1.7))[1])
        assert row.sum() == pytest.approx(1.0)
    assert not p[3].any()  # no speech window: no probability, as the runtime reports it


def test_fit_clip_temperature_undoes_a_scaled_model():
    rng = np.random.default_rng(1)
    clips, y = _clips(rng)
    over = [3.0 * c for c in clips]  # over-confident: same clip labels, logits 3x too large
    t = fit_clip_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.2)
    assert clip_nll(over, y, t) < clip_nll(over, y, 1.0)
    before = expected_calibration_error(clip_probabilities(over), y)
    after = expected_calibration_error(clip_probabilities(over, t), y)
    assert before > 0.1 and after < before / 2
    # the clip label (argmax of the mean log-probability) does not move with the temperature
    lab = [np.mean(c, axis=0).argmax() for c in over]
    assert lab == [np.mean(c / t, axis=0).argmax() for c in over]


def test_ece_noise_floor_shrinks_with_more_examples():
    rng = np.random.default_rng(2)
    small, large = rng.uniform(0.2, 0.9, 240), rng.uniform(0.2, 0.9, 2400)
    f_small, f_large = ece_noise_floor(small), ece_noise_floor(large)
    assert 0.02 < f_small < 0.12
    assert f_large < f_small / 2  # roughly 1/sqrt(n)
    assert ece_noise_floor(np.full(500, 1.0)) == 0.0  # always right at confidence 1: no noise


@pytest.mark.slow
def test_reconvert_folds_temperature_and_recalibrate_writes_clip_level(tiny_model_build, tmp_path):
    """reconvert(T) divides the int8 model's logits by T; recalibrate fits T on clips through the
    runtime (float model) and writes a model whose metadata says so."""
    require_module("tf_keras")
    from edge_runtime.interpreter import IntModel
    from edge_runtime.model_metadata import read_metadata
    from model_build.evaluate import KerasWindowModel, runtime_eval
    from model_build.pipeline import reconvert
    from model_build.recalibrate import recalibrate
    from tests.test_runtime_helpers import speechlike

    src = tmp_path / "m.tflite"
    shutil.copyfile(tiny_model_build.path, src)
    shutil.copyfile(tiny_model_build.path.with_name("tiny_float.npz"), tmp_path / "m_float.npz")
    audios = [speechlike(s, seed=i) for i, s in enumerate((1.1, 1.6, 2.3, 1.3, 2.8, 1.9))]
    y = np.array([0, 1, 2, 3, 1, 0])

    hot, _ = reconvert(src, tmp_path / "hot.tflite", temperature=0.5)  # logits x 2
    base = runtime_eval(IntModel(src), audios)
    doubled = runtime_eval(IntModel(hot), audios)
    spread = lambda r: np.concatenate([c.max(1) - c.min(1) for c in r.speech_log_probs])  # noqa: E731
    assert np.median(spread(doubled) / spread(base)) == pytest.approx(2.0, rel=0.15)
    assert (tmp_path / "hot_float.npz").exists()  # the float weights travel with the model

    cal = recalibrate(src, audios, y, tmp_path / "cal.tflite", log=lambda s: None)
    md = read_metadata((tmp_path / "cal.tflite").read_bytes())
    assert md.extra["calibration"]["level"] == "clip"
    assert md.extra["calibration"]["temperature"] == pytest.approx(cal["temperature"])
    assert cal["n_clips"] == len(y) and cal["n_windows"] >= len(y)
    assert cal["val_clip_nll_after"] <= cal["val_clip_nll_before"] + 1e-4  # T minimises the clip NLL
    # the int8 model reports what the float model's windows give at the fitted temperature
    km = KerasWindowModel(tiny_model_build.keras_model, md)
    want = clip_probabilities(runtime_eval(km, audios).speech_log_probs, cal["temperature"])
    got = runtime_eval(IntModel(tmp_path / "cal.tflite"), audios).probs
    np.testing.assert_allclose(got, want, atol=0.05)


def test_cv_merge_of_seed_runs(tmp_path):
    """bench/accuracy.py --merge: seeds scored in separate runs of one recipe become one result
    (means over complete seeds, sd across seeds); another recipe or a repeated (seed, fold) is refused."""
    import json

    from bench.accuracy import main as accuracy_main
    from bench.accuracy import merge_results

    def run(seeds, uar, **cfg):
        folds = [{"seed": s, "fold": f, "uar_int8": uar[s] + 0.1 * f, "uar_float": uar[s],
                  "window_agreement_int8_vs_float_fixed": 0.98, "ece_clip": 0.1, "clips_without_label": 0}
                 for s in seeds for f in (0, 1)]
        return {"config": {"folds": "0,1", "epochs": 20, "seeds": ",".join(map(str, seeds)), "out": "x", **cfg},
                "eval_path": "runtime", "window_policy": {"hop_frames": 62}, "speech_gate": {"margin_db": 9.0},
                "ravdess_folds": folds, "seeds": list(seeds), "ravdess8_uar_int8": -1.0, "seconds": 5}

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(run([0], {0: 0.5})))
    # where models were kept, or which folder each seed's QAT started from, does not matter
    b.write_text(json.dumps(run([1, 2], {1: 0.4, 2: 0.6}, out="y", qat_from="cv_s1")))
    res = merge_results([a, b])
    assert res["seeds"] == 3 and res["seeds_done"] == [0, 1, 2] and len(res["ravdess_folds"]) == 6
    assert res["n_seeds"] == 3  # complete seeds, as a number (a goal can compare it)
    per_seed = [0.55, 0.45, 0.65]  # each seed's mean over folds 0 and 1
    assert res["ravdess8_uar_int8"] == pytest.approx(np.mean(per_seed))  # recomputed, not copied
    assert res["ravdess8_uar_int8_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert res["per_seed"][1]["ravdess8_uar_int8"] == pytest.approx(0.45)
    assert res["seed_sd"]["ece_clip"] == pytest.approx(0.0)
    assert [m["seeds"] for m in res["merged_from"]] == [[0], [1, 2]]

    c = tmp_path / "c.json"
    c.write_text(json.dumps(run([3], {3: 0.5}, epochs=30)))
    with pytest.raises(SystemExit, match="epochs"):
        merge_results([a, c])
    with pytest.raises(SystemExit, match="seed 0 fold 0"):
        merge_results([a, a])
    out = tmp_path / "merged.json"
    assert accuracy_main(["--merge", str(a), str(b), "--results", str(out)]) == 0
    assert json.loads(out.read_text())["seeds_done"] == [0, 1, 2]


def test_compare_cv_pairs_by_seed_and_fold():
    from bench.compare_cv import compare

    def run(uar, seeds=(0, 1, 2), **cfg):
        return {"config": {"fold_seed": 0, "folds": "0,1", "frontend": {"v": 2}, **cfg}, "eval_path": "runtime",
                "window_policy": {}, "speech_gate": {},
                "ravdess_folds": [{"seed": s, "fold": f, "uar_int8": uar(s, f)} for s in seeds for f in (0, 1)]}

    base = run(lambda s, f: 0.5 + 0.01 * s + 0.1 * f)
    opt = run(lambda s, f: 0.5 + 0.01 * s + 0.1 * f + (0.02 if f == 0 else -0.01), seeds=(0, 1))  # seed 2 missing
    res = compare(base, opt)
    assert res["seeds"] == [0, 1] and res["n_pairs"] == 4  # only seeds both runs completed
    v = res["keys"]["uar_int8"]
    assert v["diff_mean"] == pytest.approx(0.005) and v["diff_seed_sd"] == pytest.approx(0.0, abs=1e-12)
    assert v["seeds_higher"] == 2 and (v["fold_runs_higher"], v["fold_runs_lower"]) == (2, 2)
    with pytest.raises(SystemExit, match="fold_seed"):
        compare(base, run(lambda s, f: 0.5, fold_seed=1))


def test_compare_cv_names_an_unreadable_results_file(tmp_path):
    """A missing or non-results file is one line naming it, not a traceback."""
    from bench.compare_cv import main

    bad = tmp_path / "not_results.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="missing.json: cannot read"):
        main([str(tmp_path / "missing.json"), str(bad)])
    with pytest.raises(SystemExit, match="not_results.json: not a bench/accuracy.py results file"):
        main([str(bad), str(bad)])


def _shipped_like(tiny_model_build, tmp_path):
    """The tiny model as an installed model: metadata naming its validation speakers (plus a key a
    build does not write, as the shipped model's re-embedded note), float weights elsewhere, and a
    RAVDESS-named folder of generated speech for those speakers."""
    import soundfile as sf

    from model_build.embed_metadata import read_metadata as read_md, write_model
    from model_build.pipeline import TINY_LABELS
    from tests.test_runtime_helpers import speechlike

    md = read_md(tiny_model_build.path)
    md.update(validation_speakers=["A01", "A02"], reembedded_note="kept verbatim")
    model = write_model(tmp_path / "models" / "default.tflite", tiny_model_build.model_bytes, md)
    npz = tmp_path / "build" / "default_float.npz"
    npz.parent.mkdir()
    shutil.copyfile(tiny_model_build.path.with_name("tiny_float.npz"), npz)
    codes = {"neutral": "01", "happy": "03", "sad": "04", "angry": "05"}
    for a, actor in enumerate(("01", "02", "03")):  # A03 is not a validation speaker: left out
        d = tmp_path / "data" / "ravdess" / f"Actor_{actor}"
        d.mkdir(parents=True)
        for k, lab in enumerate(TINY_LABELS):
            for stmt in ("01", "02"):
                audio = speechlike(1.2 + 0.3 * k, seed=100 * a + 10 * k + int(stmt))
                sf.write(d / f"03-01-{codes[lab]}-01-{stmt}-01-{actor}.flac", audio, 16000)
    return model, npz, md


@pytest.mark.slow
def test_recalibrate_entry_point_keeps_metadata_and_refuses_a_bad_result(tiny_model_build, tmp_path, capsys,
                                                                         monkeypatch):
    """``python -m model_build.recalibrate``: fits on the metadata's validation speakers only, writes a
    model whose metadata differs only in calibration and output quantisation; a result that fails a
    check is refused with one line, exit 1, nothing written."""
    import json

    import model_build.recalibrate as rc
    from model_build.embed_metadata import read_metadata as read_md

    model, npz, md = _shipped_like(tiny_model_build, tmp_path)
    out = tmp_path / "out" / "default.tflite"
    summary = tmp_path / "summary.json"
    args = ["--model", str(model), "--float", str(npz), "--data", str(tmp_path / "data"), "--out", str(out),
            "--summary", str(summary)]
    assert rc.main(args) == 0
    s = json.loads(summary.read_text())
    assert s["n_clips"] == 16  # 2 validation actors x 4 labels x 2 statements; A03 left out
    new = read_md(out)
    assert new["calibration"]["level"] == "clip" and new["calibration"]["temperature"] == s["temperature_after"]
    assert s["temperature_before"] == md.get("calibration", {}).get("temperature")  # the tiny model has none
    assert {k for k in md.keys() | new.keys() if new.get(k) != md.get(k)} <= rc._CHANGED_KEYS
    assert new["reembedded_note"] == "kept verbatim" and new["frontend_tables_checksum"] == md["frontend_tables_checksum"]
    assert json.loads(out.with_suffix(".json").read_text()) == new  # the sidecar mirrors the embedded metadata
    assert all(c["old_top2_margin"] < md["output_scale"] for c in s["clip_labels_changed_at_int8_ties"])
    assert not out.with_name("default_float.npz").exists()  # float weights stay with the build

    capsys.readouterr()
    monkeypatch.setattr(rc, "MAX_MODEL_BYTES", 1000)
    out2 = tmp_path / "out2" / "default.tflite"
    assert rc.main(args[:-4] + ["--out", str(out2)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "refused (nothing written)" in err and "> 1000" in err
    assert not out2.exists()


def test_cv_merge_of_one_seed_split_by_folds(tmp_path):
    """Two processes sharing one seed's folds (--folds 0,1 and --folds 2) merge into that seed complete over
    the union of their folds; a seed that only one of them covered stays out of the headline keys."""
    import json

    from bench.accuracy import merge_results

    def run(seed, folds, uar):
        recs = [{"seed": seed, "fold": f, "uar_int8": uar + 0.1 * f, "uar_float": uar,
                 "window_agreement_int8_vs_float_fixed": 0.98, "ece_clip": 0.1, "clips_without_label": 0}
                for f in folds]
        return {"config": {"folds": ",".join(map(str, folds)), "epochs": 20, "seeds": str(seed), "out": "x"},
                "eval_path": "runtime", "window_policy": {"hop_frames": 62}, "speech_gate": {"margin_db": 9.0},
                "ravdess_folds": recs, "seeds": [seed], "seconds": 5}

    paths = []
    for name, seed, folds, uar in (("s0.json", 0, [0, 1, 2], 0.5), ("s2a.json", 2, [0, 1], 0.4),
                                   ("s2b.json", 2, [2], 0.4)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(run(seed, folds, uar)))
    res = merge_results(paths)
    assert res["config"]["folds"] == "0,1,2" and res["n_folds_done"] == 3
    assert res["seeds_done"] == [0, 2] and res["partial_seed_runs"] == 0
    assert res["per_seed"][2]["ravdess8_uar_int8"] == pytest.approx(0.5)  # 0.4, 0.5, 0.6 from two runs
    assert [m["folds"] for m in res["merged_from"]] == ["0,1,2", "0,1", "2"]
    # seed 2's fold 2 missing: seed 2 is incomplete over folds 0-2, only seed 0 counts
    res = merge_results(paths[:2])
    assert res["seeds_done"] == [0] and res["partial_seed_runs"] == 2
    with pytest.raises(SystemExit, match="seed 2 fold 0"):
        merge_results([paths[1], paths[1]])


def _record_many(manifest_path: str, seed: int, n: int) -> None:
    from bench.accuracy import record_fold_model

    man = {"corpus": "ravdess", "fold_seed": 0, "k": 5, "frontend_hash": "h", "models": []}
    for f in range(n):
        man = record_fold_model(Path(manifest_path), man, {"name": f"ravdess_s{seed}_fold{f}", "seed": seed, "fold": f})


def test_two_processes_sharing_an_out_folder_keep_each_others_fold_models(tmp_path):
    """Two bench/accuracy.py processes with one --out (a seed's folds split between them) each list their fold
    models in manifest.json; neither write may drop the other's entries (bench/robustness.py reads that list)."""
    import json
    import multiprocessing as mp

    path = tmp_path / "manifest.json"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_record_many, args=(str(path), seed, 25)) for seed in (2, 3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    names = sorted(m["name"] for m in json.loads(path.read_text())["models"])
    assert names == sorted(f"ravdess_s{s}_fold{f}" for s in (2, 3) for f in range(25))
    # a manifest of another front end is not merged into this one
    from bench.accuracy import record_fold_model

    other = {"corpus": "ravdess", "fold_seed": 0, "k": 5, "frontend_hash": "other", "models": []}
    out = record_fold_model(path, other, {"name": "ravdess_s0_fold0", "seed": 0, "fold": 0})
    assert [m["name"] for m in out["models"]] == ["ravdess_s0_fold0"]
