"""Small versions of the kinds of work where the old suggestion missed: the reading lands near the best LR.

The cases, their ground truth (a grid of LRs half a decade apart, trained here)
and the scoring are the benchmark's (``benchmarks/_quality_cases.py``,
``_quality_rules.case``). The path each test takes is the one
docs/suggestion-quality.md recommends for that kind of work
(``range_test(..., confirm=True)``). Whether a reading lands in the good band
is a figure, not an assertion: a band edge or the best grid LR can move with
another CPU's rounding. ``python benchmarks/suggestion_quality.py --cases``
reports every case's band and where each reading lands (the over-fitting and
Adadelta cases included). The assertions here keep clear margins: each still
holds if the confirmation picks a neighbouring candidate (half a decade away).
"""

from __future__ import annotations

from _quality_cases import cases


def test_gpt2_style_lm_with_the_llm_recipe_reads_within_a_decade_of_the_best_lr():
    """GPT-2 layout, AdamW (0.9, 0.95) with weight decay 0.1, warm-up: the old default read 1.8 decades high.

    The best grid LR trains 9% better than its neighbours; the confirmed LR lands 0.01 decades from it.
    """
    case = cases()["gpt-prose/adamw-llm"]
    result = case.read("confirm")
    assert case.score(result.lr)["dist"] <= 1.0, (result.lr, case.best())
    assert result.metadata["confirmation"]["by"] == "training"


def test_pre_ln_lm_on_english_prose_reads_within_a_decade_of_the_best_lr():
    """``nn.TransformerEncoderLayer(norm_first=True)`` trained from scratch on prose with AdamW: 0.3 decades off."""
    case = cases()["preln-prose/adamw"]
    result = case.read("confirm")
    assert case.score(result.lr)["dist"] <= 1.0, (result.lr, case.best())


def test_a_longer_sweep_does_not_give_a_worse_answer():
    """100- and 200-step sweeps of the same task both lose less than 5 accuracy points to the best grid LR.

    They lose about 1 and 0.6; an LR half a decade higher loses 4, LRs a decade or more above the band 7 to 11.
    """
    case = cases()["mlp-digits/adam"]
    for how in ("confirm", "confirm-200"):
        result = case.read(how)
        assert case.score(result.lr)["regret"] < 5.0, (how, result.lr, case.best())
