"""recipes/cose-smollm2-compare.sh: which recipe runs it makes, with which settings, in which folders.

The recipe runs themselves are tested elsewhere (tests/test_recipes.py, tests/test_real_recipe.py); here a stand-in
`scott-distill` on the PATH records every call and writes the files a real run leaves, so the orchestration (the
teacher once per decoding, the alpha-0 cells sharing its rationales, one run per cell and seed, the reports) is
checked in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "cose-smollm2-compare.sh"

FAKE = r'''
import json, os, sys, time
from pathlib import Path
argv = sys.argv[1:]
if os.environ.get("SLEEP"):
    time.sleep(float(os.environ["SLEEP"]))
with open(os.environ["CALLS"], "a") as f:
    f.write(json.dumps(argv) + "\n")
def value(flag, n=1):
    i = argv.index(flag)
    return argv[i + 1] if n == 1 else argv[i + 1:i + 1 + n]
if argv[0] == "report":
    out = Path(value("--output_dir")); out.mkdir(parents=True, exist_ok=True); (out / "report.txt").write_text("x")
    sys.exit(0)
out = Path(value("--output_dir"))
if "rationalize" in argv:
    for split in ("train", "eval"):
        d = out / "rationales" / split / "dataset"; d.mkdir(parents=True, exist_ok=True)
        (d / "dataset_info.json").write_text(value("--rationalize.perturbation"))
    sys.exit(0)
seeds = argv[argv.index("--seeds") + 1:]
seeds = seeds[:next((i for i, a in enumerate(seeds) if a.startswith("--")), len(seeds))]
if os.environ.get("FAIL") == f"{out.name}:{seeds[0]}":
    sys.exit(3)
for s in seeds:
    (out / f"seed_{s}").mkdir(parents=True, exist_ok=True); (out / f"seed_{s}" / "results.json").write_text("{}")
'''


def run_script(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "scott-distill"
    fake.write_text(f"#!{sys.executable}\n{FAKE}")
    fake.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    calls.unlink(missing_ok=True)
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                                            "CALLS": str(calls), **env})
    return done, [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def _flag(call: list[str], flag: str) -> str:
    return call[call.index(flag) + 1]


def test_the_four_cells_over_three_seeds_then_the_reports(tmp_path):
    done, calls = run_script(tmp_path, "--max_train_rows", "8", PARALLEL="3")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    teacher = [c for c in calls if "rationalize" in c]
    # the teacher runs once per decoding, in the alpha-0.5 cell's folder, greedy = no perturbation
    assert sorted((Path(_flag(c, "--output_dir")).name, _flag(c, "--rationalize.perturbation")) for c in teacher) == [
        ("contrastive-a0.5", "wrong"), ("greedy-a0.5", "none")]
    # the alpha-0 cells share their decoding's rationales
    assert (out / "greedy-a0" / "rationales" / "eval" / "dataset" / "dataset_info.json").read_text() == "none"
    assert (out / "contrastive-a0" / "rationales" / "train" / "dataset" / "dataset_info.json").read_text() == "wrong"
    assert not list(out.glob("*/.rationales.tmp"))  # the copy is made aside and moved in whole
    students = [c for c in calls if c[0] == "run" and "--stage" not in c]
    cells = {(Path(_flag(c, "--output_dir")).name, _flag(c, "--seeds"), _flag(c, "--train.counterfactual_alpha"),
              _flag(c, "--rationalize.perturbation")) for c in students}
    assert cells == {(f"{d}-a{a}", s, a, p) for d, p in (("greedy", "none"), ("contrastive", "wrong"))
                     for a in ("0", "0.5") for s in ("0", "1", "2")}
    assert len(students) == 12 and all(_flag(c, "--max_train_rows") == "8" for c in calls if c[0] == "run")
    summaries = [c for c in calls if "evaluate" in c]
    assert len(summaries) == 4 and all(c[c.index("--seeds") + 1:c.index("--seeds") + 4] == ["0", "1", "2"]
                                       for c in summaries)
    report = calls[-1]
    assert report[0] == "report" and sorted(Path(r).name for r in report[1:5]) == [
        "contrastive-a0", "contrastive-a0.5", "greedy-a0", "greedy-a0.5"]
    assert (out / "report" / "report.txt").exists()


def test_teacher_only_stops_after_the_rationales(tmp_path):
    done, calls = run_script(tmp_path, TEACHER_ONLY="1", SEEDS="0")
    assert done.returncode == 0, done.stderr
    assert len(calls) == 2 and all("rationalize" in c for c in calls)
    assert (tmp_path / "out" / "greedy-a0" / "rationales").is_dir()


def test_a_failed_seed_is_reported_and_the_others_go_on(tmp_path):
    """Seed 0 of one cell fails: the other runs go on, that cell's report covers the seed that finished (its failed
    seed is not retrained in the foreground), the report across cells is written, and the exit status is 1."""
    done, calls = run_script(tmp_path, SEEDS="0 1", CELLS="greedy-a0.5 contrastive-a0.5", FAIL="greedy-a0.5:0")
    assert done.returncode == 1
    assert "greedy-a0.5.seed_0.log: failed" in done.stderr and "greedy-a0.5: seeds 1 of 0 1 finished" in done.stderr
    assert (tmp_path / "out" / "greedy-a0.5" / "seed_1" / "results.json").exists()
    summaries = {Path(_flag(c, "--output_dir")).name: c[c.index("--seeds") + 1:c.index("--stage")]
                 for c in calls if "evaluate" in c}
    assert summaries == {"greedy-a0.5": ["1"], "contrastive-a0.5": ["0", "1"]}
    assert calls[-1][0] == "report" and (tmp_path / "out" / "report" / "report.txt").exists()


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--output_dir", "x"], {}, "--output_dir is set by the script"),
    (["--rationalize.perturbation=empty"], {}, "--rationalize.perturbation=empty is set by the script"),
    (["--seeds", "4"], {}, "--seeds is set by the script"),
    ([], {"PARALLEL": "abc"}, "PARALLEL must be a positive integer"),
    ([], {"PARALLEL": "0"}, "PARALLEL must be a positive integer"),
    ([], {"CELLS": "contrastve-a0.5"}, "CELLS names"),
    ([], {"CELLS": "greedy-a2"}, "CELLS names"),
    ([], {"SEEDS": "0 x"}, "SEEDS must be integers"),
    ([], {"SEEDS": "00"}, "SEEDS must be integers without leading zeros"),
    ([], {"SEEDS": "0 1 0"}, "SEEDS names a seed twice"),
    ([], {"CELLS": "greedy-a0 greedy-a0"}, "CELLS names a cell twice"),
    (["--train.counterfactual-alpha", "0.9"], {}, "--train.counterfactual-alpha is set by the script"),
    (["--output-dir=x"], {}, "--output-dir=x is set by the script"),
])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, args, env, message):
    done, calls = run_script(tmp_path, *args, **env)
    assert done.returncode == 2 and message in done.stderr and calls == []


def test_settings_that_look_like_refused_ones_are_accepted(tmp_path):
    """alpha 1.0 and .25 are alphas; --train.seed only starts like the refused --train.counterfactual_alpha."""
    done, calls = run_script(tmp_path, "--train.seed", "3", SEEDS="0", CELLS="greedy-a1.0 contrastive-a.25",
                             TEACHER_ONLY="1")
    assert done.returncode == 0, done.stderr
    assert len(calls) == 2 and all(c[-2:] == ["--train.seed", "3"] for c in calls)


def test_a_stopped_script_stops_its_recipe_runs(tmp_path):
    """SIGTERM to the script ends the recipe runs it started: a resume must not meet an old run still writing."""
    import signal
    import time

    bin_dir = tmp_path / "bin"
    run_script(tmp_path, "--help")  # writes the stand-in
    proc = subprocess.Popen(["bash", str(SCRIPT), str(tmp_path / "out"), "--marker-arg", str(tmp_path)],
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLEEP": "60",
                                 "CALLS": str(tmp_path / "calls.jsonl"), "PARALLEL": "2"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline and not _running(tmp_path):
        time.sleep(0.2)
    assert _running(tmp_path), "the stand-in teacher runs never started"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and _running(tmp_path):
        time.sleep(0.2)
    assert not _running(tmp_path)


def _running(tmp_path: Path) -> bool:
    """A stand-in recipe run of this test is alive (its command line holds the test's marker argument)."""
    return subprocess.run(["pgrep", "-f", f"scott-distill run .*marker-arg {tmp_path}"], capture_output=True).returncode == 0


@pytest.mark.parametrize("args", [[], ["--help"]])
def test_help(args):
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == (0 if args else 2)
    assert "SEEDS" in done.stdout and "PARALLEL" in done.stdout and "TEACHER_ONLY" in done.stdout
