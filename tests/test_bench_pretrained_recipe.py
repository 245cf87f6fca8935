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
                                    {"folds": "0,1,2,3,4", "tflm": True}])
def test_bookkeeping_options_do_not_make_another_recipe(config):
    from bench.pretrained import RECIPE, cv_matches

    assert cv_matches(_cv(**config), RECIPE)


@pytest.mark.parametrize("config", [{"qat_epochs": 0}, {"qat_lr": 1e-3}, {"qat_control": True},
                                    {"qat_consistency": 50.0}, {"pooling": "attention"}, {"p_noise": 0.8},
                                    {"margin": 1.0}, {"calibrate_level": "clip"}, {"fold_seed": 1},
                                    {"recalibrate_from": "runs/cv"}])
def test_any_training_option_makes_another_recipe(config):
    from bench.pretrained import RECIPE, cv_matches

    assert not cv_matches(_cv(**config), RECIPE)


def test_incomplete_cv_is_not_the_recipes():
    from bench.pretrained import RECIPE, cv_matches

    assert not cv_matches({**_cv(), "n_folds_done": 4}, RECIPE)


def test_committed_results():
    # accuracy.json is the shipped recipe's CV (QAT fine-tuned from kept float models: --qat-from);
    # the pre-QAT CV and the no-rounding control are other recipes
    from bench.pretrained import RECIPE, cv_matches

    res = ROOT / "bench" / "results"
    assert cv_matches(json.loads((res / "accuracy.json").read_text()), RECIPE)
    for other in ("accuracy_preqat.json", "accuracy_qat_control.json", "accuracy_babble.json"):
        assert not cv_matches(json.loads((res / other).read_text()), RECIPE), other
