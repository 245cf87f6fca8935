"""bench/pretrained.py: which cross-validation counts as the shipped recipe's (``cv_matches``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _cv(**config) -> dict:
    """A complete 5-fold result whose config is what bench/accuracy.py records for RECIPE's flags."""
    from bench.accuracy import parse_args
    from bench.pretrained import RECIPE, recipe_flags

    cfg = vars(parse_args(recipe_flags(RECIPE) + ["--seeds", "0,1,2", "--robustness", "--urdu", "--no-tess"]))
    return {"config": {**cfg, **config}, "n_folds_done": 5}


def test_recipe_has_the_qat_phase_the_cv_measured():
    from bench.pretrained import RECIPE

    cv = json.loads((ROOT / "bench" / "results" / "accuracy.json").read_text())["config"]
    assert (RECIPE["qat_epochs"], RECIPE["qat_lr"]) == (cv["qat_epochs"], cv["qat_lr"]) == (3, 2e-4)


@pytest.mark.parametrize("config", [{}, {"qat_from": "/elsewhere/runs/cv_seeds"}, {"seed": 2, "seeds": "2"},
                                    {"out": "runs/x", "results": "x.json", "reuse_models": True},
                                    {"folds": "0,1,2,3,4", "tflm": True},
                                    # kept fold models re-fitted at clip level (older runs recorded "window")
                                    {"recalibrate_from": "runs/cv", "calibrate_level": "window"},
                                    {"recalibrate_from": "runs/cv", "calibrate_level": "clip"}])
def test_bookkeeping_options_do_not_make_another_recipe(config):
    from bench.pretrained import RECIPE, cv_matches

    assert cv_matches(_cv(**config), RECIPE)


@pytest.mark.parametrize("config", [{"qat_epochs": 0}, {"qat_lr": 1e-3}, {"qat_control": True},
                                    {"qat_consistency": 50.0}, {"pooling": "attention"}, {"p_noise": 0.5},
                                    {"p_babble": 0.5}, {"snr_db": "0,30"}, {"margin": 1.0}, {"calibrate_level": "window"}, {"fold_seed": 1},
                                    {"calibrate": False}])
def test_any_training_option_makes_another_recipe(config):
    from bench.pretrained import RECIPE, cv_matches

    assert not cv_matches(_cv(**config), RECIPE)


def test_incomplete_cv_is_not_the_recipes():
    from bench.pretrained import RECIPE, cv_matches

    assert not cv_matches({**_cv(), "n_folds_done": 4}, RECIPE)


def test_recipe_fits_the_temperature_per_clip():
    # the level the runtime reports; the flags bench/pretrained.py hands bench/accuracy.py say so
    from bench.accuracy import parse_args
    from bench.pretrained import RECIPE, recipe_flags

    assert RECIPE["calibrate"] and RECIPE["calibrate_level"] == "clip"
    assert parse_args(recipe_flags(RECIPE)).calibrate_level == "clip"


def test_recalibrate_from_is_recorded_as_the_clip_level():
    from bench.accuracy import effective_config, parse_args

    assert parse_args(["--recalibrate-from", "runs/cv"]).calibrate_level == "clip"
    assert parse_args([]).calibrate_level == "window"
    assert effective_config({"recalibrate_from": "runs/cv", "calibrate_level": "window"})["calibrate_level"] == "clip"
    assert effective_config({"recalibrate_from": None, "calibrate_level": "window"})["calibrate_level"] == "window"


def test_merge_counts_a_recalibration_run_as_clip_level(tmp_path):
    # an older --recalibrate-from run (recorded "window") merges with a --calibrate-level clip run of the
    # same recipe, never with a window-level one
    from bench.accuracy import merge_results

    fold = {"fold": 0, "uar_int8": 0.5, "clips_without_label": 0}

    def write(name, seed, **cfg):
        p = tmp_path / name
        p.write_text(json.dumps({"config": {**_cv(**cfg)["config"], "folds": "0"},
                                 "ravdess_folds": [{**fold, "seed": seed}]}))
        return p

    old = write("recal.json", 0, recalibrate_from="runs/cv", calibrate_level="window")
    clip = write("clip.json", 1, calibrate_level="clip")
    window = write("window.json", 2, calibrate_level="window")
    assert merge_results([old, clip])["seeds_done"] == [0, 1]
    with pytest.raises(SystemExit, match="calibrate_level"):
        merge_results([old, window])


def test_model_recipe_note():
    # the shipped model: window-level fit, then model_build.recalibrate at clip level = RECIPE's model
    from bench.pretrained import RECIPE, model_recipe_note

    before = {k: v for k, v in RECIPE.items() if k != "calibrate_level"}
    assert model_recipe_note({"recipe": dict(RECIPE), "calibration": {"level": "clip"}}) is None
    assert "model_build.recalibrate" in model_recipe_note({"recipe": before, "calibration": {"level": "clip"}})
    # not recalibrated, or another recipe: named as a difference
    assert "calibrate_level" in model_recipe_note({"recipe": before, "calibration": {"temperature": 2.0}})
    assert "qat_epochs" in model_recipe_note({"recipe": {**RECIPE, "qat_epochs": 0}, "calibration": {"level": "clip"}})
    # an option the model's recipe predates counts as its default (what that model was trained with)
    older = {k: v for k, v in RECIPE.items() if k != "lr_schedule"}
    note = model_recipe_note({"recipe": older, "calibration": {"level": "clip"}})
    if RECIPE["lr_schedule"] == "constant":
        assert note is None
    else:
        assert "lr_schedule" in note
    other = "cosine" if RECIPE["lr_schedule"] == "constant" else "constant"
    assert "lr_schedule" in model_recipe_note({"recipe": {**RECIPE, "lr_schedule": other},
                                               "calibration": {"level": "clip"}})


def test_committed_results():
    # accuracy.json is the shipped recipe's CV (eight augmented copies per clip with the noise-heavier mix;
    # float phase, QAT and the clip-level temperature in one go per fold: accuracy_babble8.json); eight copies
    # of the default mix before it (accuracy_aug8.json), the four-, two- and one-copy ones (accuracy_aug4.json,
    # accuracy_aug2.json, accuracy_clip_calibration_qat.json), the window-level temperature, the pre-QAT CV and
    # the no-rounding control are other recipes
    from bench.pretrained import RECIPE, cv_matches, model_recipe_note

    res = ROOT / "bench" / "results"
    assert cv_matches(json.loads((res / "accuracy.json").read_text()), RECIPE)
    assert cv_matches(json.loads((res / "accuracy_babble8.json").read_text()), RECIPE)
    for other in ("accuracy_qat.json", "accuracy_preqat.json", "accuracy_clip_calibration.json",
                  "accuracy_qat_control.json", "accuracy_babble.json", "accuracy_aug8.json",
                  "accuracy_clip_calibration_qat.json",  # one augmented copy per clip
                  "accuracy_aug2.json", "accuracy_aug3.json",  # two (the recipe before aug4) and three copies
                  "accuracy_aug4.json", "accuracy_aug6.json"):  # four (the recipe before aug8) and six copies
        assert not cv_matches(json.loads((res / other).read_text()), RECIPE), other
    # pretrained.json copies the CV it matched and says how the installed model relates to RECIPE
    pre = json.loads((res / "pretrained.json").read_text())
    cv = json.loads((res / "accuracy.json").read_text())
    assert pre["cv_recipe_matches"] is True and pre["recipe"] == RECIPE
    assert pre["ece_clip"] == cv["ece_clip"] and pre["ravdess8_uar_int8"] == cv["ravdess8_uar_int8"]
    md = json.loads((ROOT / "edge_runtime" / "models" / "default.json").read_text())
    assert pre["model_recipe_note"] == model_recipe_note(md)


@pytest.mark.slow
def test_recalibrate_trained_refits_the_trained_model_in_place(tiny_model_build, tmp_path):
    """The recipe's clip-level step (train_final(), bench/accuracy.py's --calibrate-level clip): the model train_and_convert wrote is re-fitted on the validation
    clips through the runtime and re-converted in place; the returned TrainedModel is that model."""
    import dataclasses
    import shutil

    import numpy as np

    from model_build.recalibrate import recalibrate_trained
    from tests.conftest import require_module
    from tests.test_runtime_helpers import speechlike

    require_module("tf_keras")
    src = tmp_path / "default.tflite"
    shutil.copyfile(tiny_model_build.path, src)
    shutil.copyfile(tiny_model_build.path.with_name("tiny_float.npz"), tmp_path / "default_float.npz")
    tm = dataclasses.replace(tiny_model_build, path=src)
    audios = [speechlike(s, seed=i) for i, s in enumerate((1.1, 1.6, 2.3, 1.3, 2.8, 1.9))]
    out = recalibrate_trained(tm, src, audios, np.array([0, 1, 2, 3, 1, 0]))
    assert out.metadata["calibration"]["level"] == "clip"
    assert out.metadata["calibration"]["n_clips"] == 6
    assert out.model_bytes == src.read_bytes() != tiny_model_build.model_bytes
    assert json.loads((tmp_path / "default.json").read_text())["calibration"] == out.metadata["calibration"]
    assert out.graph.op_counts == tiny_model_build.graph.op_counts  # same graph, new scales
    assert out.keras_model is tm.keras_model and out.history is tm.history
