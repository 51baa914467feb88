"""The card's score distributions: quantiles, histogram and flagged counts against the thresholds."""

import jinja2
import pytest

from data_cards.scores import score_distributions


def test_score_distributions_and_template():
    rows = [{"flow": i / 100, "frozen": 1.0 if i < 10 else 0.0, "text_area": None} for i in range(100)]
    table = score_distributions(rows, {"min_motion": 0.2, "max_frozen": 0.8, "max_text_area": 0.01})
    by = {d["name"]: d for d in table}
    assert set(by) == {"flow", "frozen"}  # text_area never measured: no entry
    assert by["flow"]["flagged"] == 20 and by["frozen"]["flagged"] == 10
    assert by["flow"]["quantiles"][0.5] == pytest.approx(0.495)
    assert sum(by["flow"]["histogram"]["counts"]) == 100 and by["flow"]["missing"] == 0
    env = jinja2.Environment(loader=jinja2.PackageLoader("data_cards", "templates"), trim_blocks=True)
    md = env.get_template("scores.md.j2").render(score_table=table)
    assert "| `flow` | frame diagonals / s | 100 |" in md and "`min_motion` below 0.2 | 20 |" in md
