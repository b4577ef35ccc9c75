"""`scott-distill demo --quick`: the pipeline's invariants (files, ranges, determinism), not effect directions."""

from __future__ import annotations

import json

import pytest

from scott_distill.commands.demo import main as demo_main
from scott_distill.demo.world import PLACES, make_world


def test_world_is_seeded_and_has_the_designed_shortcut():
    a, b = make_world(3), make_world(3)
    assert a.train == b.train and a.teacher_corpus == b.teacher_corpus
    assert make_world(4).train != a.train
    adjective_names_answer = [r["adjective"] == ["rusty", "dusty", "shiny", "soft"][PLACES.index(r["answer"])]
                              for r in a.train]
    assert 0.75 < sum(adjective_names_answer) / len(a.train) < 0.95
    assert not any(r["adjective"] == ["rusty", "dusty", "shiny", "soft"][PLACES.index(r["answer"])]
                   for r in a.anti_shortcut)
    row = a.train[0]
    assert a.judge(row["rationale"], row["answer"]) == "supports" and a.is_true(row["rationale"], row["object"])
    assert a.judge("Let us think about where such things are usually kept.", row["answer"]) == "vacuous"


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    assert demo_main(["--quick", "--output_dir", str(tmp_path), "--seed", "0"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(results["decoding"]) == {"greedy", "contrastive_empty", "contrastive_wrong"}
    for m in results["decoding"].values():
        assert all(0 <= v <= 1 for v in m.values()) and m["supports_gold"] + m["vacuous"] <= 1 + 1e-9
    assert len(results["students"]) == 4
    for m in results["students"].values():
        for key in ("accuracy", "accuracy_anti_shortcut", "counterfactual_consistency"):
            assert 0 <= m[key] <= 1
        assert -1 <= m["las_ci_low"] <= m["las"] <= m["las_ci_high"] <= 1
    out = capsys.readouterr().out
    assert "Teacher decoding" in out and "Students" in out
    # determinism: a second run from scratch (teacher, decodings, students, simulators) repeats every figure
    again = tmp_path / "again"
    demo_main(["--quick", "--output_dir", str(again), "--seed", "0"])
    second = json.loads((again / "results.json").read_text())
    assert second["decoding"] == results["decoding"] and second["students"] == results["students"]
