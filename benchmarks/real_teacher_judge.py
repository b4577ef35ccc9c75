"""The real teacher's rationales on CoS-E dev, judged by a MiniLM judge trained on human explanations (issue #11).

Three stages, each resumable, all in ``--output-dir``:

1. ``rationales``: SmolLM2-135M-Instruct (``smollm2-135m-instruct``, the packaged few-shot plain-text prompt,
   docs/real_run.md) writes a rationale for the gold answer of the first ``--questions`` CoS-E v1 dev questions
   under greedy, contrastive-empty and contrastive-wrong decoding (alpha 0.5, counterfactual off), in chunks of
   ``--chunk`` questions: chunk by chunk, all three decodings per chunk; a stopped run (``--time_budget_min``, a
   kill) resumes where it stopped, and only chunks finished in every decoding are judged, so N is the same for all
   three. Each (chunk, decoding) is one resumable ``generate_rationales`` folder.
2. ``judge``: `scott_distill.las.judge`: MiniLM-L6 trained once on the *human* explanations of CoS-E v1 train to
   pick the gold answer from the explanation and the choices alone (the question blanked), with settings fixed in
   advance; its calibration is its accuracy on the human explanations of CoS-E dev. It is trained on train-split
   questions only and refuses to judge them; it never sees a teacher rationale while training.
3. ``report``: per decoding, on the questions done in all three: the share of rationales from which the judge
   picks the gold answer, mean length in words, shares naming the gold answer, no choice, a wrong choice (95 %
   percentile bootstrap intervals over questions, `scott_distill.report.stats`); the human explanations of the same
   questions and an empty rationale (the judge's prior over the choices) as references; paired differences
   contrastive - greedy (paired bootstrap over questions); side-by-side examples. Markdown on stdout, JSON in
   ``results.json``.

On the shared 2-core box run it under the CPU lock, e.g. one (chunk, decoding) per sitting, repeated:

    flock /tmp/scott-cpu.lock python benchmarks/real_teacher_judge.py --stages rationales --questions 200 \\
        --time_budget_min 1
    flock /tmp/scott-cpu.lock python benchmarks/real_teacher_judge.py --stages judge report --questions 200
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import HfArgumentParser

from scott_distill import generate_rationales
from scott_distill.formats import RATIONALIZE_CONFIG_NAME
from scott_distill.las.judge import JudgeConfig, RationaleJudge, fit_or_load_judge
from scott_distill.report.stats import paired_difference, two_stage_estimate
from scott_distill.tasks import load_task
from scott_distill.teacher.measures import measure_rationale

logger = logging.getLogger("real_teacher_judge")

MODEL = "smollm2-135m-instruct"
DECODINGS = {"greedy": "none", "contrastive-empty": "empty", "contrastive-wrong": "wrong"}
STAGES = ("rationales", "judge", "report")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cose_v1"
# the measures per question that get an interval ("words" is shown as a mean only)
SHARES = ("judge_picks_gold", "names_gold", "names_no_choice", "names_wrong_choice")


@dataclass
class RunArgs:
    """What to run; the judge's own settings are `JudgeConfig`'s flags (``--output_dir`` is the judge's folder)."""

    stages: list[str] = field(default_factory=lambda: list(STAGES), metadata={
        "help": f"Stages to run, of {STAGES}.", "nargs": "+"})
    run_dir: str = field(default="real_teacher_judge", metadata={
        "help": "Folder of the run: rationales/<decoding>/<chunk>, judged.jsonl, results.json."})
    train_data: str = field(default=str(DATA / "train.csv"), metadata={
        "help": "CoS-E v1 train.csv: the human explanations the judge trains on."})
    dev_data: str = field(default=str(DATA / "dev.csv"), metadata={
        "help": "CoS-E v1 dev.csv: the questions the teacher rationalizes (and the judge's calibration)."})
    questions: int = field(default=200, metadata={"help": "The first N dev questions."})
    chunk: int = field(default=40, metadata={"help": "Questions per resumable chunk (all decodings per chunk)."})
    batch_size: int = field(default=8, metadata={"help": "Teacher generation batch."})
    max_new_tokens: int = field(default=64, metadata={"help": "Rationale budget (tokens)."})
    alpha: float = field(default=0.5, metadata={"help": "Contrastive weight."})
    threads: int = field(default=2, metadata={"help": "torch threads."})
    time_budget_min: float | None = field(default=None, metadata={
        "help": "Start no new (chunk, decoding) after this many minutes (rationales stage); rerun to go on. "
                "Only chunks finished in every decoding are judged."})
    examples: int = field(default=10, metadata={"help": "Side-by-side examples in the report."})
    bootstrap: int = field(default=10000, metadata={"help": "Bootstrap resamples per interval."})
    decodings: list[str] = field(default_factory=lambda: list(DECODINGS), metadata={
        "help": f"Decodings to run and judge, of {list(DECODINGS)} (greedy is the reference of the differences).",
        "nargs": "+"})
    import_rationales: list[str] = field(default_factory=list, metadata={
        "help": "DECODING=FOLDER ...: take a decoding's rationales from a saved rationale dataset of the first dev "
                "questions (e.g. a recipe's OUTPUT/rationales/eval/dataset, made on another machine) instead of "
                "generating them; the `rationales` stage files them into this run's chunks.", "nargs": "+"})

    def __post_init__(self) -> None:
        unknown = [d for d in self.decodings if d not in DECODINGS]
        if unknown or "greedy" not in self.decodings:
            raise ValueError(f"--decodings must include 'greedy' and name only {list(DECODINGS)}, got "
                             f"{self.decodings}.")
        for item in self.import_rationales:
            decoding, _, folder = item.partition("=")
            if decoding not in self.decodings or not folder:
                raise ValueError(f"--import_rationales takes DECODING=FOLDER with DECODING one of --decodings "
                                 f"{self.decodings}, got {item!r}.")


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _chunk_dir(run_dir: Path, decoding: str, start: int, end: int) -> Path:
    return run_dir / "rationales" / decoding / f"{start:04d}-{end:04d}"


def _finished(folder: Path) -> bool:
    return (folder / "dataset").is_dir()


# -- stage 1 -------------------------------------------------------------------------------------------------------


def _check_imported_decoding(folder: str, decoding: str, args: RunArgs) -> None:
    """The rationales filed as ``decoding`` were made by it: the settings ``generate_rationales`` wrote beside the
    dataset (``run_config.json``, one folder up) name its perturbation and, when contrastive, ``--alpha``."""
    path = Path(folder).resolve().parent / RATIONALIZE_CONFIG_NAME
    if not path.is_file():
        logger.warning("%s has no %s beside it: its decoding cannot be checked; filed as %s as asked", folder,
                       RATIONALIZE_CONFIG_NAME, decoding)
        return
    made = json.loads(path.read_text())
    expected = {"perturbation": DECODINGS[decoding], **({"alpha": args.alpha} if DECODINGS[decoding] != "none"
                                                         else {})}
    wrong = [f"{k} {made.get(k)!r} (not {v!r})" for k, v in expected.items() if made.get(k) != v]
    if wrong:
        raise SystemExit(f"{folder} was made with {', '.join(wrong)} ({path}): not the {decoding} decoding it "
                         "would be filed as")


def import_rationales(args: RunArgs, dev: datasets.Dataset) -> None:
    """File each ``--import_rationales`` dataset into this run's chunk folders (the first dev questions, in order)."""
    run_dir = Path(args.run_dir)
    for item in args.import_rationales:
        decoding, _, folder = item.partition("=")
        _check_imported_decoding(folder, decoding, args)
        rows = datasets.load_from_disk(folder)
        n = min(args.questions, len(dev))
        if len(rows) < n:  # the teacher would write the rest: one "imported" decoding from two sources
            raise SystemExit(f"{folder} holds {len(rows)} rows, fewer than the {n} questions asked (--questions)")
        if rows.select(range(n))["id"] != dev.select(range(n))["id"]:
            raise SystemExit(f"{folder}: its rows are not the first {n} questions of {args.dev_data} in order")
        for start, end in _chunks(n, args.chunk):
            target = _chunk_dir(run_dir, decoding, start, end)
            chunk = rows.select(range(start, end))
            if not _finished(target):
                chunk.save_to_disk(str(target / "dataset"))
            elif datasets.load_from_disk(str(target / "dataset"))["rationale"] != chunk["rationale"]:
                raise SystemExit(f"{target} already holds other {decoding} rationales than {folder}: import into a "
                                 "new --run_dir")
        logger.info("rationales %s: %d questions imported from %s", decoding, n, folder)


def rationales(args: RunArgs, dev: datasets.Dataset) -> None:
    from scott_distill.checkpoints import load_teacher

    import_rationales(args, dev)
    run_dir = Path(args.run_dir)
    chunks = _chunks(min(args.questions, len(dev)), args.chunk)
    todo = [(c, d) for c in chunks for d in args.decodings if not _finished(_chunk_dir(run_dir, d, *c))]
    if not todo:
        logger.info("rationales: all %d chunks done in every decoding", len(chunks))
        return
    start_time = time.monotonic()
    teacher, tok = load_teacher(MODEL)
    logger.info("teacher loaded in %.1f s", time.monotonic() - start_time)
    timings = run_dir / "timings.jsonl"
    for (start, end), decoding in todo:
        elapsed = (time.monotonic() - start_time) / 60
        if args.time_budget_min is not None and elapsed > args.time_budget_min:
            logger.info("rationales: time budget reached (%.1f min); rerun to go on", elapsed)
            return
        folder = _chunk_dir(run_dir, decoding, start, end)
        began = time.perf_counter()
        generate_rationales(dev.select(range(start, end)), teacher, tok, task="cose",
                            perturbation=DECODINGS[decoding], alpha=args.alpha, counterfactual=False,
                            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, output_dir=folder,
                            show_progress=False)
        seconds = time.perf_counter() - began
        logger.info("rationales %s %d-%d: %.1f s (%.2f questions/s)", decoding, start, end, seconds,
                    (end - start) / seconds)
        with timings.open("a") as f:
            f.write(json.dumps({"decoding": decoding, "start": start, "end": end, "seconds": seconds,
                                "threads": torch.get_num_threads()}) + "\n")


def load_rationales(args: RunArgs, n_dev: int) -> dict[str, datasets.Dataset]:
    """Per decoding, the rationales of the leading chunks that are finished in *every* decoding (equal N)."""
    run_dir = Path(args.run_dir)
    done = []
    for chunk in _chunks(min(args.questions, n_dev), args.chunk):
        if not all(_finished(_chunk_dir(run_dir, d, *chunk)) for d in args.decodings):
            break
        done.append(chunk)
    if not done:
        raise SystemExit(f"no chunk of rationales is finished in every decoding under {run_dir}; run the "
                         "`rationales` stage first")
    return {d: datasets.concatenate_datasets([datasets.load_from_disk(str(_chunk_dir(run_dir, d, *c) / "dataset"))
                                              for c in done]) for d in args.decodings}


# -- stage 2 -------------------------------------------------------------------------------------------------------


def judge_stage(args: RunArgs, config: JudgeConfig, train: datasets.Dataset, dev: datasets.Dataset) -> Path:
    """Train (once) or load the judge, judge every decoding's rationales, the human explanations of the same
    questions and the empty rationale; per question records in ``judged.jsonl``."""
    judge = fit_or_load_judge(train, config, dev_rows=dev)
    judged = load_rationales(args, len(dev))
    ids = judged["greedy"]["id"]
    for d, rows in judged.items():
        if rows["id"] != ids:
            raise SystemExit(f"{d} rationales cover other questions than greedy's; the run folder is inconsistent")
    questions = dev.select(range(len(ids)))
    if questions["id"] != ids:
        raise SystemExit("the rationales are not of the first dev questions; wrong --dev_data for this run folder?")
    sources: dict[str, list[str | None]] = {d: rows["rationale"] for d, rows in judged.items()}
    sources["human"] = questions["rationale"]
    sources["empty rationale"] = [""] * len(ids)
    records: list[dict[str, Any]] = [{"id": i, "question": q, "choices": c, "answer": a}
                                     for i, q, c, a in zip(ids, questions["question"], questions["choices"],
                                                           questions["answer"])]
    for source, texts in sources.items():
        rows = questions.remove_columns("rationale").add_column("rationale", list(texts))
        picks = judge.pick(rows, "rationale", config.per_device_eval_batch_size)
        for record, text, pick in zip(records, texts, picks):
            record[source] = {"rationale": text, "judge_pick": pick,
                              **measure_rationale(text, record["choices"], record["answer"])}
    out = Path(args.run_dir) / "judged.jsonl"
    with out.open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    logger.info("judged %d questions x %d sources -> %s", len(records), len(sources), out)
    return out


# -- stage 3 -------------------------------------------------------------------------------------------------------


def _outcomes(records: list[dict], source: str, key: str) -> dict[int, dict[str, float]]:
    """`scott_distill.report.stats` outcomes of one measure: one "seed" (one teacher run), one value per question."""
    values = {}
    for r in records:
        cell = r[source]
        values[r["id"]] = float(cell["judge_pick"] == r["answer"]) if key == "judge_picks_gold" else float(cell[key])
    return {0: values}


def _pct(estimate) -> str:
    return f"{estimate.mean:.1%} [{estimate.ci_low:.1%}, {estimate.ci_high:.1%}]"


def _pp(estimate) -> str:
    return f"{estimate.mean * 100:+.1f} pp [{estimate.ci_low * 100:+.1f}, {estimate.ci_high * 100:+.1f}]"


def report(args: RunArgs, judge_dir: str) -> dict[str, Any]:
    records = [json.loads(line) for line in (Path(args.run_dir) / "judged.jsonl").read_text().splitlines()]
    judge_record = RationaleJudge.record_of(judge_dir)
    sources = [*args.decodings, "human", "empty rationale"]
    results: dict[str, Any] = {"n": len(records), "judge": judge_record, "sources": {}, "differences": {}}
    lines = [f"N = {len(records)} CoS-E v1 dev questions (the first {len(records)}); judge calibration: "
             f"{judge_record['calibration']['accuracy']:.1%} on {judge_record['calibration']['n']} dev human "
             "explanations.", "",
             "| rationale | N | judge picks gold | words | names gold | names no choice | names a wrong choice |",
             "|---|---|---|---|---|---|---|"]
    for i, source in enumerate(sources):
        est = {key: two_stage_estimate(_outcomes(records, source, key), n_resamples=args.bootstrap, seed=i)
               for key in SHARES}
        words = statistics.mean(r[source]["words"] for r in records)
        results["sources"][source] = {"words": words, **{k: {"mean": e.mean, "ci_low": e.ci_low, "ci_high": e.ci_high}
                                                         for k, e in est.items()}}
        lines.append(f"| {source} | {len(records)} | {_pct(est['judge_picks_gold'])} | {words:.1f} | "
                     f"{_pct(est['names_gold'])} | {_pct(est['names_no_choice'])} | "
                     f"{_pct(est['names_wrong_choice'])} |")
    lines += ["", "Paired differences over the same questions (paired bootstrap over questions, 95 %):", "",
              "| difference | judge picks gold | names gold | names no choice | names a wrong choice | "
              "interval excludes 0 (judge) |", "|---|---|---|---|---|---|"]
    contrastive = [d for d in ("contrastive-wrong", "contrastive-empty") if d in args.decodings]
    for i, decoding in enumerate(contrastive):
        diffs = {key: paired_difference(_outcomes(records, decoding, key), _outcomes(records, "greedy", key),
                                        n_resamples=args.bootstrap, seed=100 + i) for key in SHARES}
        name = f"{decoding} - greedy"
        results["differences"][name] = {k: {"mean": e.mean, "ci_low": e.ci_low, "ci_high": e.ci_high,
                                            "excludes_zero": e.excludes_zero} for k, e in diffs.items()}
        lines.append(f"| {name} | {_pp(diffs['judge_picks_gold'])} | {_pp(diffs['names_gold'])} | "
                     f"{_pp(diffs['names_no_choice'])} | {_pp(diffs['names_wrong_choice'])} | "
                     f"{'yes' if diffs['judge_picks_gold'].excludes_zero else 'no'} |")
    lines += ["", examples(records, args.examples, args.decodings)]
    text = "\n".join(lines)
    print(text)
    (Path(args.run_dir) / "results.json").write_text(json.dumps(results, indent=2))
    return results


def examples(records: list[dict], k: int, decodings: list[str]) -> str:
    blocks = []
    for r in records[:k]:
        lines = [f"**Q:** {r['question']} — choices: {', '.join(r['choices'])} — gold: **{r['answer']}**", "",
                 "| rationale | text | judge picks |", "|---|---|---|"]
        for source in (*decodings, "human"):
            text = (r[source]["rationale"] or "(empty)").replace("|", "\\|").replace("\n", " ")
            pick = r[source]["judge_pick"]
            lines.append(f"| {source} | {text} | {pick}{' ✓' if pick == r['answer'] else ''} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> None:
    parser = HfArgumentParser((RunArgs, JudgeConfig), description=__doc__)
    run_args, judge_config = parser.parse_args_into_dataclasses(args=argv)
    for stage in run_args.stages:
        if stage not in STAGES:
            parser.error(f"--stages: {stage!r} is not one of {STAGES}")
    if judge_config.output_dir == "rationale_judge":  # the default: the judge lives inside the run folder
        judge_config.output_dir = str(Path(run_args.run_dir) / "judge")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for name in ("transformers", "scott_distill.teacher"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(run_args.threads)
    Path(run_args.run_dir).mkdir(parents=True, exist_ok=True)
    dev = load_task("cose", run_args.dev_data)
    if "rationales" in run_args.stages:
        rationales(run_args, dev)
    if "judge" in run_args.stages:
        judge_stage(run_args, judge_config, load_task("cose", run_args.train_data), dev)
    if "report" in run_args.stages:
        report(run_args, str(judge_config.output_dir))


if __name__ == "__main__":
    main()
