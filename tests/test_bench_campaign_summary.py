"""bench/campaign_summary.py: the campaign's rows, the decision rule applied to them, the table and the plot."""
from __future__ import annotations

import json

import pytest

from bench import campaign_summary as cs


def _compare(uar: list[float], babble: list[float], agreement: list[float], base_uar: float = 0.5) -> dict:
    """A cv_compare JSON as bench/compare_cv.py writes it (only the fields the summary reads)."""
    def key(diffs, base):
        m = sum(diffs) / len(diffs)
        sd = (sum((d - m) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5
        return {"base_mean": base, "option_mean": base + m, "diff_mean": m, "diff_seed_sd": sd,
                "diff_per_seed": diffs, "seeds_higher": sum(d > 0 for d in diffs)}

    return {"seeds": list(range(len(uar))), "n_pairs": 5 * len(uar),
            "keys": {cs.UAR_KEY: key(uar, base_uar), cs.BABBLE_KEY: key(babble, 0.4),
                     cs.AGREEMENT_KEY: key(agreement, 0.98)}}


ROW = cs.Row("x", "option x", cs.TWO_COPY, "not adopted")


@pytest.mark.parametrize("uar, babble, agreement, passes", [
    ([0.02, 0.015, 0.011], [0.0] * 3, [0.0] * 3, True),
    ([0.04, 0.02, -0.001], [0.0] * 3, [0.0] * 3, False),  # mean +0.02 but one seed lower
    ([0.009, 0.01, 0.01], [0.0] * 3, [0.0] * 3, False),  # every seed higher, mean under +0.010
    ([0.02] * 3, [-0.011] * 3, [0.0] * 3, False),  # babble under -0.01
    ([0.02] * 3, [0.0] * 3, [-0.0031] * 3, False),  # agreement under -0.003
    ([0.02] * 3, [-0.0099] * 3, [-0.0029] * 3, True),  # just inside both thresholds
])
def test_rule_applies_every_condition(uar, babble, agreement, passes):
    row = cs.summarise(ROW, _compare(uar, babble, agreement))
    assert row["passes_rule"] is passes
    assert row["uar_seeds_higher"] == sum(d > 0 for d in uar)
    assert row["uar_diff"] == pytest.approx(sum(uar) / 3)


@pytest.mark.parametrize("uar, babble, agreement, passes", [
    ([-0.010, 0.026, 0.009], [0.022, 0.064, 0.019], [0.0] * 3, True),  # the babble8 row's figures
    ([-0.010, 0.026, 0.009], [0.04, 0.04, -0.001], [0.0] * 3, False),  # mean +0.026 but one seed lower
    ([0.0] * 3, [0.019] * 3, [0.0] * 3, False),  # babble under +0.02
    ([-0.006] * 3, [0.03] * 3, [0.0] * 3, False),  # UAR down more than 0.005
    ([0.0] * 3, [0.03] * 3, [-0.0031] * 3, False),  # agreement under -0.003
])
def test_a_row_with_its_own_rule_is_judged_by_it(uar, babble, agreement, passes):
    """The babble row's rule, fixed before it ran, decides for it; the campaign's would have failed it
    (UAR not higher in every seed) and still decides for every other row."""
    own = cs.Row("y", "option y", cs.EIGHT_COPY, "adopted", rule=cs.BABBLE_RULE)
    row = cs.summarise(own, _compare(uar, babble, agreement))
    assert row["passes_rule"] is passes and row["rule"]["min_babble"] == 0.02
    assert cs.summarise(ROW, _compare(uar, babble, agreement))["passes_rule"] is False
    assert cs.summarise(ROW, _compare(uar, babble, agreement))["rule"] is None


def test_missing_key_names_the_file():
    cmp = _compare([0.0] * 3, [0.0] * 3, [0.0] * 3)
    del cmp["keys"][cs.BABBLE_KEY]
    with pytest.raises(ValueError, match="cv_compare_x.json.*uar_babble_10db"):
        cs.summarise(ROW, cmp)


def test_main_writes_table_json_and_plot(tmp_path, capsys, monkeypatch):
    rows = (cs.Row("a", "row a", cs.PREQAT, "adopted"), cs.Row("b", "row b", cs.TWO_COPY, "not adopted"),
            cs.Row("c", "row c never compared", cs.TWO_COPY, "not adopted"))
    (tmp_path / "cv_compare_a.json").write_text(json.dumps(_compare([0.02, 0.03, 0.01], [0.01] * 3, [0.0] * 3)))
    (tmp_path / "cv_compare_b.json").write_text(json.dumps(_compare([0.01, -0.02, 0.0], [0.0] * 3, [0.0] * 3)))
    loaded = cs.load_rows(tmp_path, rows)
    assert [r["name"] for r in loaded] == ["a", "b"]  # c has no file: skipped, order kept
    assert [r["passes_rule"] for r in loaded] == [True, False]

    out = tmp_path / "summary.json"
    monkeypatch.setattr(cs, "ROWS", rows)
    assert cs.main(["--results-dir", str(tmp_path), "--results", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_rows"] == 2 and res["n_adopted"] == 1 and res["n_pass_rule"] == 1
    assert res["rule"] == {"min_uar_gain": 0.010, "min_babble": -0.01, "min_agreement": -0.003,
                           "uar_every_seed": True, "babble_every_seed": False}
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 4 and table[2].startswith("| row a |") and "| pass | adopted |" in table[2]
    assert "| -0.003" in table[3] or "| -0.0033" in table[3]


def test_main_without_rows_says_so(tmp_path, capsys):
    assert cs.main(["--results-dir", str(tmp_path), "--results", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0]


def test_committed_rows_parse_and_adopted_rows_pass_their_rule():
    """Every campaign row with a committed comparison parses; the adopted ones cleared the rule."""
    rows = cs.load_rows(cs.RESULTS_DIR)
    assert len(rows) >= 19
    for r in rows:
        assert r["n_seeds"] >= 3, r["name"]
        if r["decision"] == "adopted":
            assert r["passes_rule"], r["name"]
    # the row whose recipe ships is adopted, by its own rule
    b8 = next(r for r in rows if r["name"] == "babble8")
    assert b8["decision"] == "adopted" and b8["rule"] is not None and b8["passes_rule"]
