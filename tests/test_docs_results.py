"""The student table of docs/real_run.md is what `scott-distill report` makes of the per-question results committed
beside it: re-running the documented report command on docs/real_run_results/cpu-200 gives its report.txt, and its
figure lays out (a recipe's long condition names once ran over the neighbouring panels)."""

from __future__ import annotations

import warnings
from pathlib import Path

from scott_distill.commands.report import main as report_main

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "real_run_results" / "cpu-200"
CELLS = ["contrastive-a0", "contrastive-a0.5", "greedy-a0", "greedy-a0.5"]


def test_the_documented_cpu_report_is_what_the_committed_results_give(tmp_path, monkeypatch, capsys):
    a0, a5, g0, g5 = (f"student (counterfactual_alpha={alpha}, perturbation={perturbation}, run={cell})"
                      for cell, alpha, perturbation in zip(CELLS, ["0.0", "0.5", "0.0", "0.5"],
                                                           ["wrong", "wrong", "none", "none"]))
    # every cell has the same three seeds: the paired differences need them
    for cell in CELLS:
        assert sorted(p.parent.name for p in (RESULTS / cell).glob("seed_*/results.json")) == [
            "seed_0", "seed_1", "seed_2"]
    monkeypatch.chdir(RESULTS)  # the report names runs as given: the documented command runs from this folder
    with warnings.catch_warnings():
        # matplotlib warns "Tight layout not applied" when the row labels do not fit beside their panels
        warnings.simplefilter("error", UserWarning)
        assert report_main([*CELLS, "--output_dir", str(tmp_path), "--compare", a5, a0, g5, g0, a0, g0, a5, g5]) == 0
    assert (tmp_path / "report.txt").read_text() == (RESULTS / "report.txt").read_text()


def test_row_labels_wrap_at_spaces_and_keep_every_character():
    from scott_distill.report.plots import LABEL_WIDTH, row_label

    name = "accuracy: student (counterfactual_alpha=0.5, perturbation=wrong, run=contrastive-a0.5) - student " \
           "(counterfactual_alpha=0.0, perturbation=wrong, run=contrastive-a0)"
    lines = row_label(name).split("\n")
    assert len(lines) > 1 and all(len(line) <= LABEL_WIDTH for line in lines)
    assert " ".join(lines) == name
    assert row_label("a" * (LABEL_WIDTH + 5)) == "a" * (LABEL_WIDTH + 5)  # one long word: never cut
