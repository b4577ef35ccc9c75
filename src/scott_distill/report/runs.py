"""Read ``results.json`` files of any runs (demo seeds, recipe runs, different teachers) and group them by
condition and seed.

The results schema (version 1) is documented in ``docs/report.md``. In short::

    {
      "schema_version": 1,
      "kind": "demo",                       # what wrote it: "demo", "recipe", ...
      "seed": 0,                            # the seed axis (for recipes: the student-training seed)
      "labels": {"setting": "full"},        # what else identifies the run (teacher, task, ...); optional
      "metrics": {"<condition>": {"<metric>": 0.86}},                     # aggregates
      "per_question": {"<condition>": {"<metric>": {"<question id>": 1},  # per-question outcomes, optional
                                       "las": {"<question id>": [leaked, xe_correct, x_correct]}}},
      "comparisons": [["<condition A>", "<condition B>"]]                  # paired differences to report; optional
    }

Files written before the schema (the demo's old ``results.json``, a recipe's ``run_summary.json`` from before
recipes wrote ``results.json``, with ``args`` or with the stage sections under ``config``) are read as *aggregates
only* (``schema_version`` 0): one number per metric and seed, no per-question outcomes.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import write_json
from .stats import MetricKind, outcome_kind, outcome_metric

logger = logging.getLogger(__name__)

__all__ = [
    "LEGACY_VERSION",
    "RESULTS_SCHEMA_VERSION",
    "Condition",
    "RunResult",
    "RunSet",
    "collect_runs",
    "find_result_files",
    "load_run",
    "seed_folder",
    "write_results",
]

RESULTS_SCHEMA_VERSION = 1
KNOWN_VERSIONS = (RESULTS_SCHEMA_VERSION,)
LEGACY_VERSION = 0  # a file written before the schema: aggregates only
RESULTS_FILE = "results.json"
LEGACY_RECIPE_FILE = "run_summary.json"
SEED_FOLDER = "seed_{seed}"  # one run's seed ``seed`` when a run holds several seeds (the demo, recipes)

# Files written before schema 1 are frozen: these lists describe them, not today's code.
# The demo's students and teacher decodings (scott_distill.demo.pipeline at the time) and their comparisons.
LEGACY_DEMO_STUDENT_METRICS = ("accuracy", "accuracy_anti_shortcut", "counterfactual_consistency",
                               "accuracy_perturbed_rationale", "las")
LEGACY_DEMO_TEACHER_METRICS = ("supports_gold", "vacuous", "counterfactual_supports")
LEGACY_DEMO_COMPARISONS = (
    ("contrastive_wrong/alpha=0.0", "greedy/alpha=0.0"), ("contrastive_wrong/alpha=0.5", "greedy/alpha=0.5"),
    ("greedy/alpha=0.5", "greedy/alpha=0.0"), ("contrastive_wrong/alpha=0.5", "contrastive_wrong/alpha=0.0"),
    ("teacher:contrastive_wrong", "teacher:greedy"), ("teacher:contrastive_empty", "teacher:greedy"),
)
# a recipe's run_summary.json: {"args": RecipeArguments, "metrics": evaluate_student + LAS}
LEGACY_RECIPE_LABELS = ("task", "teacher", "perturbation", "decoding_alpha", "student", "counterfactual_alpha")
LEGACY_RECIPE_METRICS = ("accuracy", "unparseable", "accuracy_gold_rationale", "accuracy_perturbed_rationale",
                         "perturbed_answer_changed", "counterfactual_consistency", "las", "las_k_bins")
LEGACY_RECIPE_CONDITION = "student"


@dataclass(frozen=True)
class RunResult:
    """One results file: one run (one seed) with one or more conditions."""

    path: Path
    schema_version: int
    kind: str
    seed: int
    labels: dict[str, Any]
    metrics: dict[str, dict[str, float]]  # condition -> metric -> aggregate
    per_question: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # condition -> metric -> qid
    comparisons: tuple[tuple[str, str], ...] = ()

    @property
    def source(self) -> str:
        return f"results schema {self.schema_version}" if self.schema_version else "aggregates only (pre-schema)"


# -- reading one file ---------------------------------------------------------------------------------------------

def _fail(path: Path, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (bool, numbers.Real)) and not isinstance(value, str)


def _parse_v1(data: dict[str, Any], path: Path, empty_bin: str) -> RunResult:
    missing = [k for k in ("kind", "seed", "metrics") if k not in data]
    if missing:
        raise _fail(path, f"results schema 1 needs the top-level fields {missing} (see docs/report.md).")
    kind, seed, labels = data["kind"], data["seed"], data.get("labels", {})
    if not isinstance(kind, str) or not kind:
        raise _fail(path, f"`kind` must be a non-empty string, got {kind!r}.")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _fail(path, f"`seed` must be an integer, got {seed!r}.")
    if not isinstance(labels, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, (str, int, float)))
                                               for k, v in labels.items()):
        raise _fail(path, f"`labels` must map names to strings or numbers, got {labels!r}.")
    metrics_in, per_q_in = data["metrics"], data.get("per_question", {})
    for name, block in (("metrics", metrics_in), ("per_question", per_q_in)):
        if not isinstance(block, dict) or not all(isinstance(v, dict) for v in block.values()):
            raise _fail(path, f"`{name}` must map each condition to {{metric: ...}}, got {block!r:.200}.")
    conditions = list(dict.fromkeys([*metrics_in, *per_q_in]))
    if not conditions:
        raise _fail(path, "`metrics` holds no condition.")
    metrics: dict[str, dict[str, float]] = {}
    per_question: dict[str, dict[str, dict[str, Any]]] = {}
    for cond in conditions:
        metrics[cond] = {}
        for metric, value in metrics_in.get(cond, {}).items():
            if not _is_number(value):
                raise _fail(path, f"metrics[{cond!r}][{metric!r}] must be a number, got {value!r}.")
            metrics[cond][metric] = float(value)
        for metric, values in per_q_in.get(cond, {}).items():
            if not isinstance(values, dict):
                raise _fail(path, f"per_question[{cond!r}][{metric!r}] must map question ids to outcomes.")
            try:
                kind_of = outcome_kind(values)
            except ValueError as exc:
                raise _fail(path, f"per_question[{cond!r}][{metric!r}]: {exc}.") from None
            per_question.setdefault(cond, {})[metric] = values
            value = outcome_metric(values, kind_of, empty_bin)
            if metric in metrics[cond]:
                stated = metrics[cond][metric]
                same = (math.isnan(stated) and math.isnan(value)) or math.isclose(stated, value, rel_tol=1e-9,
                                                                                     abs_tol=1e-9)
                if not same:
                    what = "the mean" if kind_of == "mean" else "LAS"
                    raise _fail(path, f"metrics[{cond!r}][{metric!r}] is {stated!r} but {what} of "
                                      f"per_question[{cond!r}][{metric!r}] ({len(values)} questions) is {value!r}: "
                                      "they must describe the same outcomes.")
            else:
                metrics[cond][metric] = value
    comparisons = data.get("comparisons", [])
    if not isinstance(comparisons, list) or not all(
            isinstance(c, (list, tuple)) and len(c) == 2 and all(isinstance(x, str) for x in c) for c in comparisons):
        raise _fail(path, f"`comparisons` must be a list of [condition A, condition B] pairs, got {comparisons!r}.")
    unknown = sorted({x for c in comparisons for x in c} - set(conditions))
    if unknown:
        raise _fail(path, f"`comparisons` names conditions {unknown} that the file does not hold ({conditions}).")
    return RunResult(path=path, schema_version=1, kind=kind, seed=seed, labels=dict(labels), metrics=metrics,
                     per_question=per_question, comparisons=tuple((a, b) for a, b in comparisons))


def _legacy_demo(data: dict[str, Any], path: Path) -> RunResult:
    settings = data["settings"]
    if not isinstance(settings, dict) or "seed" not in settings:
        raise _fail(path, "a pre-schema demo results.json needs `settings.seed`.")
    metrics = {key: {m: float(v[m]) for m in LEGACY_DEMO_STUDENT_METRICS if m in v}
               for key, v in data["students"].items()}
    metrics.update({f"teacher:{name}": {m: float(v[m]) for m in LEGACY_DEMO_TEACHER_METRICS if m in v}
                    for name, v in data.get("decoding", {}).items()})
    comparisons = tuple(c for c in LEGACY_DEMO_COMPARISONS if c[0] in metrics and c[1] in metrics)
    return RunResult(path=path, schema_version=LEGACY_VERSION, kind="demo", seed=int(settings["seed"]),
                     labels={"setting": "quick" if settings.get("quick") else "full"}, metrics=metrics,
                     comparisons=comparisons)


def _legacy_recipe(data: dict[str, Any], path: Path) -> RunResult:
    args = data["args"]
    if "metrics" not in data:
        raise _fail(path, "this recipe run has no `metrics` yet: run its evaluate stage first.")
    if not isinstance(args, dict) or "seed" not in args:
        raise _fail(path, "a recipe's run_summary.json needs `args.seed`.")
    metrics = {m: float(v) for m, v in data["metrics"].items() if m in LEGACY_RECIPE_METRICS and _is_number(v)}
    return RunResult(path=path, schema_version=LEGACY_VERSION, kind="recipe", seed=int(args["seed"]),
                     labels={k: args[k] for k in LEGACY_RECIPE_LABELS if k in args},
                     metrics={LEGACY_RECIPE_CONDITION: metrics})


def _recipe_summary_args(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """A ``run_summary.json`` of a recipe with stage sections (``config``: ``run``, ``rationalize``, ``train``) as
    the older ``args`` the legacy reader takes."""
    if config["run"].get("seeds"):
        raise _fail(path, "the summary of a recipe over several student seeds: give its folder, whose "
                          "seed_<s>/results.json files hold each seed's results.")
    run, rationalize, train = config["run"], config.get("rationalize") or {}, config.get("train") or {}
    args = {"task": run.get("task"), "teacher": run.get("teacher"), "perturbation": rationalize.get("perturbation"),
            "decoding_alpha": rationalize.get("alpha"), "student": run.get("student"),
            "counterfactual_alpha": train.get("counterfactual_alpha")}
    if "seed" in train:
        args["seed"] = train["seed"]
    return {k: v for k, v in args.items() if v is not None or k == "seed"}


def load_run(path: str | Path, empty_bin: str = "other") -> RunResult:
    """Read one results file: schema 1, or a pre-schema demo ``results.json`` / recipe ``run_summary.json``.

    ``empty_bin`` is the LAS rule used to check a stated LAS against its per-question cells.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file.") from None
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise _fail(path, f"expected a JSON object, got {type(data).__name__}.")
    if "schema_version" in data:
        version = data["schema_version"]
        if version not in KNOWN_VERSIONS:
            raise _fail(path, f"results schema version {version!r} is not one this reader knows {KNOWN_VERSIONS} "
                              "(written by a newer scott-distill?).")
        return _parse_v1(data, path, empty_bin)
    if isinstance(data.get("settings"), dict) and isinstance(data.get("students"), dict):
        return _legacy_demo(data, path)
    if isinstance(data.get("args"), dict) and "task" in data["args"]:
        return _legacy_recipe(data, path)
    if isinstance(data.get("config"), dict) and isinstance(data["config"].get("run"), dict):
        return _legacy_recipe({**data, "args": _recipe_summary_args(data["config"], path)}, path)
    raise _fail(path, "not a results file: it has no `schema_version` (results schema, docs/report.md) and is neither "
                      "a demo results.json (`settings`, `students`) nor a recipe run_summary.json (`args`, `metrics`).")


# -- writing one file -----------------------------------------------------------------------------------------------

def seed_folder(output_dir: str | Path, seed: int) -> Path:
    """Where seed ``seed`` of a run over several seeds writes its files (demo and recipe alike): ``seed_<seed>``."""
    return Path(output_dir) / SEED_FOLDER.format(seed=seed)


def write_results(
    path: str | Path,
    *,
    kind: str,
    seed: int,
    per_question: dict[str, dict[str, dict[str, Any]]],
    metrics: dict[str, dict[str, float]] | None = None,
    labels: dict[str, Any] | None = None,
    comparisons: Sequence[tuple[str, str]] = (),
    extra: dict[str, Any] | None = None,
    empty_bin: str = "other",
) -> dict[str, Any]:
    """Write one run's ``results.json`` (results schema 1, docs/report.md) and return what was written.

    The one writer of the format (the demo's seeds and the recipes' seeds): every metric of ``per_question``
    gets its aggregate computed from the outcomes (their mean, or LAS of the cells) unless ``metrics`` states
    it, and the file is checked by the reader (`load_run`'s rules: a stated aggregate must match its outcomes)
    before it is written, so a file the report refuses is never written.

    Args:
        path: the file to write (atomically).
        kind: what wrote it (``"demo"``, ``"recipe"``).
        seed: the seed axis.
        per_question: ``{condition: {metric: {question id: outcome}}}``.
        metrics: aggregates without per-question outcomes, or stated ones (checked against the outcomes).
        labels: what else identifies the run.
        comparisons: the paired differences ``(A, B)`` this run is about.
        extra: more top-level fields for the writer's own use (ignored by the report).
        empty_bin: the LAS rule an LAS aggregate is computed (or checked) with.
    """
    path = Path(path)
    aggregates: dict[str, dict[str, float]] = {cond: dict(values) for cond, values in (metrics or {}).items()}
    for cond, outcomes in per_question.items():
        block = aggregates.setdefault(cond, {})
        for metric, values in outcomes.items():
            if metric not in block:
                block[metric] = outcome_metric(values, outcome_kind(values), empty_bin)
    results = {"schema_version": RESULTS_SCHEMA_VERSION, "kind": kind, "seed": seed, "labels": dict(labels or {}),
               "metrics": aggregates, "per_question": per_question, "comparisons": [list(c) for c in comparisons],
               **(extra or {})}
    _parse_v1(json.loads(json.dumps(results)), path, empty_bin)  # as the reader will see it (ids become strings)
    write_json(results, path)
    return results


def find_result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Each path is a file or a folder. A folder holding ``results.json`` is that run; otherwise the folder is
    searched recursively for ``results.json`` files (a demo's or a recipe's ``seed_<s>/`` folders); only when it
    holds none is a pre-schema recipe ``run_summary.json`` read (the folder's own, else the ones below it).

    A recipe over several seeds keeps its ``run_summary.json`` next to its ``seed_<s>/`` folders: the seeds'
    ``results.json`` files win over it."""
    found: list[Path] = []
    paths = list(paths)
    if not paths:
        raise ValueError("`runs` is empty: give at least one results.json file or run folder.")
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            nested = ([p / RESULTS_FILE] if (p / RESULTS_FILE).is_file() else sorted(p.rglob(RESULTS_FILE))) or (
                [p / LEGACY_RECIPE_FILE] if (p / LEGACY_RECIPE_FILE).is_file() else sorted(p.rglob(LEGACY_RECIPE_FILE)))
            if not nested:
                raise ValueError(f"{p}: no {RESULTS_FILE} (or recipe {LEGACY_RECIPE_FILE}) in this folder or below.")
            found.extend(nested)
        else:
            raise ValueError(f"{p}: no such file or folder.")
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return unique


# -- grouping -------------------------------------------------------------------------------------------------------

@dataclass
class Condition:
    """One condition of one kind of run with fixed labels, across seeds."""

    name: str  # unique display name within a RunSet
    kind: str
    labels: dict[str, Any]
    condition: str
    runs: dict[int, RunResult] = field(default_factory=dict)  # seed -> run

    @property
    def seeds(self) -> list[int]:
        return sorted(self.runs)

    def metric_names(self) -> list[str]:
        names: dict[str, None] = {}
        for seed in self.seeds:
            names.update(dict.fromkeys(self.runs[seed].metrics[self.condition]))
        return list(names)

    def has_metric(self, metric: str) -> bool:
        return any(metric in r.metrics[self.condition] for r in self.runs.values())

    def _check_in_every_seed(self, metric: str) -> None:
        lacking = [s for s in self.seeds if metric not in self.runs[s].metrics[self.condition]]
        if lacking:
            files = ", ".join(str(self.runs[s].path) for s in lacking)
            raise ValueError(f"metric {metric!r} of condition {self.name!r} is missing in seed(s) {lacking} ({files}); "
                             f"it is present in seed(s) {[s for s in self.seeds if s not in lacking]}.")

    def aggregates(self, metric: str) -> dict[int, float]:
        """seed -> the metric's aggregate value."""
        self._check_in_every_seed(metric)
        values = {s: self.runs[s].metrics[self.condition][metric] for s in self.seeds}
        nan = [s for s, v in values.items() if math.isnan(v)]
        if nan:
            raise ValueError(f"metric {metric!r} of condition {self.name!r} is NaN (not measured) in seed(s) {nan} "
                             f"({', '.join(str(self.runs[s].path) for s in nan)}); leave the metric out (--metrics) "
                             "or leave those runs out.")
        return values

    def per_question(self, metric: str) -> tuple[MetricKind, dict[int, dict[str, Any]]] | None:
        """(kind, seed -> question id -> outcome) when every seed has per-question outcomes, None when no seed
        has; a mix raises."""
        self._check_in_every_seed(metric)
        having = [s for s in self.seeds if metric in self.runs[s].per_question.get(self.condition, {})]
        if not having:
            return None
        if len(having) != len(self.seeds):
            lacking = [s for s in self.seeds if s not in having]
            raise ValueError(f"metric {metric!r} of condition {self.name!r} has per-question outcomes in seed(s) "
                             f"{having} but not in {lacking} "
                             f"({', '.join(str(self.runs[s].path) for s in lacking)}).")
        outcomes = {s: self.runs[s].per_question[self.condition][metric] for s in self.seeds}
        kinds = {outcome_kind(v) for v in outcomes.values()}
        if len(kinds) > 1:
            raise ValueError(f"metric {metric!r} of condition {self.name!r} has numbers in some seeds and LAS cells "
                             "in others.")
        return kinds.pop(), outcomes


@dataclass
class RunSet:
    """Runs grouped into conditions (by kind, labels and condition name) with their seeds."""

    runs: list[RunResult]
    conditions: dict[str, Condition]
    comparisons: list[tuple[str, str]]  # display names, from the files

    @property
    def schema_version(self) -> int:
        return self.runs[0].schema_version

    def resolve(self, name: str) -> str:
        """A condition's display name from itself or from a file's condition name (if that is unambiguous)."""
        if name in self.conditions:
            return name
        matches = [c.name for c in self.conditions.values() if c.condition == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValueError(f"condition {name!r} is ambiguous: it is one of {matches}; use the full name.")
        raise ValueError(f"no condition {name!r}; the runs hold {list(self.conditions)}.")

    def select(self, names: Sequence[str]) -> RunSet:
        """Only the conditions ``names`` (display names, or unambiguous file condition names), and the declared
        comparisons between two of them."""
        keep = [self.resolve(n) for n in names]
        conditions = {n: c for n, c in self.conditions.items() if n in keep}
        comparisons = [(a, b) for a, b in self.comparisons if a in conditions and b in conditions]
        return RunSet(runs=self.runs, conditions=conditions, comparisons=comparisons)


def _display_names(keys: Sequence[tuple[str, tuple[tuple[str, Any], ...], str]]) -> dict[tuple, str]:
    """The condition name, plus the kind and labels that differ between the runs (so that names are unique)."""
    kinds = {k for k, _, _ in keys}
    label_names = sorted({n for _, labels, _ in keys for n, _ in labels})
    varying = [n for n in label_names if len({dict(labels).get(n) for _, labels, _ in keys}) > 1]
    names = {}
    for key in keys:
        kind, labels, cond = key
        extra = ([f"kind={kind}"] if len(kinds) > 1 else []) + [f"{n}={dict(labels).get(n)}" for n in varying]
        names[key] = f"{cond} ({', '.join(extra)})" if extra else cond
    return names


def collect_runs(runs: Sequence[RunResult]) -> RunSet:
    """Group runs by (kind, labels, condition) across seeds. All runs must share one schema version."""
    if not runs:
        raise ValueError("no runs to compare.")
    by_version: dict[int, Path] = {}
    for r in runs:
        by_version.setdefault(r.schema_version, r.path)
    if len(by_version) > 1:
        shown = "; ".join(f"{p} is {'schema ' + str(v) if v else 'pre-schema (aggregates only)'}"
                          for v, p in sorted(by_version.items()))
        raise ValueError(f"the runs mix results schema versions ({shown}). Compare runs written by the same "
                         "scott-distill version, or re-run the older ones.")
    keys: dict[tuple, list[tuple[RunResult, str]]] = {}
    for r in runs:
        labels = tuple(sorted(r.labels.items()))
        for cond in r.metrics:
            keys.setdefault((r.kind, labels, cond), []).append((r, cond))
    names = _display_names(list(keys))
    conditions: dict[str, Condition] = {}
    for key, members in keys.items():
        c = Condition(name=names[key], kind=key[0], labels=dict(key[1]), condition=key[2])
        for r, _ in members:
            if r.seed in c.runs:
                raise ValueError(f"condition {c.name!r} has seed {r.seed} twice: {c.runs[r.seed].path} and {r.path}. "
                                 "Each (run labels, seed) may appear once; give the runs distinct labels or seeds.")
            c.runs[r.seed] = r
        conditions[c.name] = c
    comparisons: list[tuple[str, str]] = []
    for r in runs:
        labels = tuple(sorted(r.labels.items()))
        for a, b in r.comparisons:
            pair = (names[(r.kind, labels, a)], names[(r.kind, labels, b)])
            if pair not in comparisons:
                comparisons.append(pair)
    logger.info("report: %d run files, %d conditions, seeds %s", len(runs), len(conditions),
                sorted({r.seed for r in runs}))
    return RunSet(runs=list(runs), conditions=conditions, comparisons=comparisons)
