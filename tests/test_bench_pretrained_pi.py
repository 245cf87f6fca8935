"""bench/pretrained_pi.py's install rule: the Pi model ships only when its CV gain pays (issue #11)."""
from __future__ import annotations

import json

from bench import pretrained_pi as P


def test_install_rule():
    assert P.decide(0.031, 200_000, force=False) == (True, "installed: CV gain +0.031 UAR >= 0.03")
    ok, why = P.decide(0.029, 200_000, force=False)
    assert not ok and why == "not installed: CV gain +0.029 UAR < 0.03"
    ok, why = P.decide(None, 200_000, force=False)
    assert not ok and "no CV comparison yet" in why
    assert P.decide(None, 200_000, force=True)[0] is True
    ok, why = P.decide(0.2, (1 << 20) + 1, force=True)  # over 1 MB never ships, not even on request
    assert not ok and why == f"not installed: {(1 << 20) + 1} bytes > {1 << 20}"


def test_cv_figures_read_the_paired_gain(tmp_path, monkeypatch):
    cmp = {"keys": {"uar_int8": {"base_mean": 0.52, "option_mean": 0.57, "diff_mean": 0.05}}, "pairs": [1, 2]}
    (tmp_path / "cmp.json").write_text(json.dumps(cmp))
    (tmp_path / "acc.json").write_text(json.dumps({"ravdess8_uar_int8": 0.57, "ravdess_folds": [{}]}))
    monkeypatch.setattr(P, "PI_CV_COMPARE", tmp_path / "cmp.json")
    monkeypatch.setattr(P, "PI_CV", tmp_path / "acc.json")
    got = P.cv_figures()
    assert got["cv_gain_uar_int8"] == 0.05 and "pairs" not in got["cv_compare_pi"]
    assert got["accuracy_pi"] == {"ravdess8_uar_int8": 0.57}  # per-fold lists stay in accuracy_pi.json
    monkeypatch.setattr(P, "PI_CV_COMPARE", tmp_path / "absent.json")
    assert "cv_gain_uar_int8" not in P.cv_figures()


def test_seed0_without_its_tflite_is_refused_in_one_line(tmp_path):
    """A member seed 0 (``default_float.npz``) without the ``default.tflite`` its build wrote beside it is
    refused before any member trains, naming both files; with it, or without seed 0 at all, it passes."""
    import pytest

    from bench.pretrained_pi import check_seed0

    npz = tmp_path / "default_float.npz"
    check_seed0(npz)  # absent: member 0 is trained afresh
    npz.write_bytes(b"x")
    with pytest.raises(SystemExit, match="default_float.npz: no default.tflite beside it"):
        check_seed0(npz)
    (tmp_path / "default.tflite").write_bytes(b"x")
    check_seed0(npz)


def _shipped_recipe_cv() -> dict:
    """A complete 5-fold result whose config is what bench/accuracy.py records for RECIPE's flags."""
    from bench.accuracy import parse_args
    from bench.pretrained import RECIPE, recipe_flags

    cfg = vars(parse_args(recipe_flags(RECIPE) + ["--seeds", "0,1,2", "--robustness", "--urdu", "--no-tess"]))
    return {"config": cfg, "n_folds_done": 5, "ravdess_folds": [{}]}


def test_after_the_recipe_moved_on_the_gain_is_against_the_small_model_that_ships(tmp_path, monkeypatch):
    """Members of an older recipe: their own-recipe gain no longer counts; the comparison against the
    shipped recipe's CV does, and only when its base really is that CV."""
    from bench.pretrained import RECIPE

    own = {"keys": {"uar_int8": {"diff_mean": 0.045}}}
    vs = {"keys": {"uar_int8": {"diff_mean": 0.021}}, "pairs": [1], "base": str(tmp_path / "shipped.json")}
    (tmp_path / "own.json").write_text(json.dumps(own))
    (tmp_path / "vs.json").write_text(json.dumps(vs))
    (tmp_path / "shipped.json").write_text(json.dumps(_shipped_recipe_cv()))
    monkeypatch.setattr(P, "PI_CV_COMPARE", tmp_path / "own.json")
    monkeypatch.setattr(P, "PI_CV_VS_SMALL", tmp_path / "vs.json")
    monkeypatch.setattr(P, "PI_CV", tmp_path / "absent.json")
    assert P.cv_figures(RECIPE)["cv_gain_uar_int8"] == 0.045  # same recipe: ensembles vs their own members
    older = {**RECIPE, "augment": RECIPE["augment"] // 2}
    got = P.cv_figures(older)
    assert got["cv_gain_uar_int8"] == 0.021 and got["cv_gain_against"] == "vs.json"
    assert "pairs" not in got["cv_compare_pi_vs_small"]
    assert P.decide(got["cv_gain_uar_int8"], 200_000, force=False)[0] is False  # 0.021 < 0.03: a Pi falls back
    # a comparison against some other recipe's CV shows nothing about the small model that ships
    (tmp_path / "shipped.json").write_text(json.dumps({**_shipped_recipe_cv(), "n_folds_done": 4}))
    got = P.cv_figures(older)
    assert "cv_gain_uar_int8" not in got and got["cv_gain_against"] is None
    assert "augment" in P.recipe_words(older) and P.recipe_words(RECIPE) == "the shipped recipe"


def test_json_only_rejudges_the_installed_model_and_takes_it_out_when_it_no_longer_pays(tmp_path, monkeypatch):
    """``--pi --json-only`` with no build record re-reads the installed pi.tflite's own figures and the recipe in
    its metadata; once RECIPE has moved on, the gain against the small model that ships decides: above the bar it
    stays (and is not copied again), below it pi.tflite, pi.json and pi_report.md are removed.

    The installed model is built here (a real int8 model whose metadata names an older recipe, with the figures
    record of the last real Pi build re-hashed to it), so the rule is checked whether or not this install ships
    a Pi model."""
    import argparse

    from bench.pretrained import RECIPE
    from edge_runtime.model_metadata import model_hash, read_metadata
    from tests.conftest import require_module
    from tests.test_runtime_helpers import build_int8_lstm, embed, make_metadata

    require_module("ai_edge_litert")
    models = tmp_path / "models"
    models.mkdir()
    older = {**RECIPE, "augment": RECIPE["augment"] // 2}
    raw = build_int8_lstm()
    pi_bytes = embed(raw, make_metadata(raw, recipe=older, members=3))
    (models / "pi.tflite").write_bytes(pi_bytes)
    (models / "pi.json").write_text(json.dumps({"recipe": older}))
    (models / "pi_report.md").write_text("# an older Pi model\n")
    assert read_metadata(models / "pi.tflite").extra["recipe"] == older
    results = tmp_path / "pretrained_pi.json"
    last = json.loads(P.PI_RESULTS.read_text())  # the last real build's record: members, validation, combine
    results.write_text(json.dumps({**last, "model_hash": model_hash(pi_bytes), "model_bytes": len(pi_bytes)}))
    (tmp_path / "shipped.json").write_text(json.dumps(_shipped_recipe_cv()))
    for name, value in (("MODEL_DIR", models), ("PI_RESULTS", results), ("PI_CV", tmp_path / "absent.json"),
                        ("RUNTIME", tmp_path / "absent.json"), ("PI_CV_COMPARE", tmp_path / "own.json"),
                        ("PI_CV_VS_SMALL", tmp_path / "vs.json")):
        monkeypatch.setattr(P, name, value)
    (tmp_path / "own.json").write_text(json.dumps({"keys": {"uar_int8": {"diff_mean": 0.05}}}))
    args = argparse.Namespace(work=str(tmp_path / "work"), members=3, json_only=True, install=False,
                              seed0_float=None, members_only=False, data=None)

    def judge(gain: float) -> dict:
        (tmp_path / "vs.json").write_text(json.dumps({"keys": {"uar_int8": {"diff_mean": gain, "option_mean": 0.6,
                                                                    "base_mean": 0.6 - gain}},
                                                      "base": str(tmp_path / "shipped.json")}))
        assert P.main_pi(args) == 0
        return json.loads(results.read_text())

    res = judge(0.04)  # an older recipe: the own-recipe gain (0.05) does not count, the one against RECIPE does
    assert res["installed"] is True and res["cv_gain_uar_int8"] == 0.04 and res["recipe"] == older
    assert (models / "pi.tflite").read_bytes() == pi_bytes and (models / "pi_report.md").is_file()
    res = judge(0.02)
    assert res["installed"] is False and res["install_decision"] == "not installed: CV gain +0.020 UAR < 0.03"
    assert not any((models / f).exists() for f in ("pi.tflite", "pi.json", "pi_report.md"))
    # nothing left to re-read: one line, not a traceback
    import pytest

    with pytest.raises(SystemExit, match="no earlier --pi build and no installed pi model to re-read"):
        P.main_pi(args)
