#!/usr/bin/env python
"""Mutation testing of scott-distill's core modules with mutmut (docs/testing.md).

mutmut copies ``src/`` and ``tests/`` into ``mutants/``, rewrites every function of the modules listed in
``[tool.mutmut] only_mutate`` (pyproject.toml) so that one mutant can be switched on by name, records which test
executed which function (one run of the test files in ``pytest_add_cli_args_test_selection``), and then runs each
mutant against only the tests that executed the mutated function, with ``-x`` and one worker unless ``--workers``.

Commands (run from anywhere; on the shared 2-core machine wrap them in ``flock /tmp/scott-cpu.lock``):

* ``python scripts/mutation.py run MODULE [MODULE ...]`` -- every mutant of the named modules (``formula``,
  ``scoring``, ``processor``, ``fused``, ``collator``, ``trainer``, ``shards``, ``evaluation``; ``all`` for all).
  Results accumulate in ``mutants/``, but a module named here is checked again in full (mutmut reruns every mutant
  it is given by name or pattern): an interrupted run of a big module starts over; ``--functions`` cuts it up.
  The named modules run in one mutmut run, so its clean test run (minutes) is paid once. (With ``--functions`` that
  clean run is the whole test selection: mutmut maps only module patterns and exact mutant names to their tests.)
* ``python scripts/mutation.py run --survivors MODULE ...`` -- again, only the mutants that survived and are not
  listed as equivalent (after adding tests); with ``--timeouts``, the timeouts too.
* ``python scripts/mutation.py run MODULE --functions NAME ...`` -- only the mutants of these functions (``predict``;
  a method as ``Class.method``); with several modules, ``MODULE:NAME`` (a module none of whose functions is listed
  runs whole). ``--workers N``: N mutmut worker processes (default 1); a timeout counts as killed, and a loaded
  machine makes them, so re-check a multi-worker run's timeouts (``--survivors --timeouts``).
* ``python scripts/mutation.py sample`` -- the fixed mutant sample of ``tests/mutation/sample.txt`` (what
  ``.ci/run`` runs); exits 1 if a sampled mutant survives that ``tests/mutation/equivalent.txt`` does not name.
* ``python scripts/mutation.py make-sample --seed 0 --per-module 3`` -- rewrite ``sample.txt``: a seeded draw of
  mutants per module from those already generated (needs one ``run`` or ``sample`` before, so ``mutants/`` exists).
  With ``--output FILE``: write the draw there instead (a random sample that *estimates* a module's score when its
  full set takes too long: ``sample --file FILE`` runs it, ``score --file FILE`` scores it with an interval).
  ``sample --file FILE`` also finishes a partly measured set: list the mutants not checked yet, one name per line
  (exact names are mapped to their tests, so mutmut's clean run covers only those tests). ``--workers`` as for ``run``.
* ``python scripts/mutation.py score [--markdown] [--file FILE]`` -- killed / survived / equivalent / timeout per
  module from the results in ``mutants/`` and the equivalent list; the percentage is killed over checked
  non-equivalent mutants. ``--file``: only the mutants listed there, with a 95 % Wilson interval of the percentage.
* ``python scripts/mutation.py show NAME`` -- the diff of one mutant.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTATION_DIR = ROOT / "tests" / "mutation"
SAMPLE_FILE = MUTATION_DIR / "sample.txt"
EQUIVALENT_FILE = MUTATION_DIR / "equivalent.txt"

#: short name -> dotted module whose mutants are named ``<module>.x_<function>__mutmut_<n>``
MODULES = {
    "formula": "scott_distill.las.formula",
    "scoring": "scott_distill.teacher.scoring",
    "processor": "scott_distill.teacher.processor",
    "fused": "scott_distill.teacher.fused",
    "collator": "scott_distill.student.collator",
    "trainer": "scott_distill.student.trainer",
    "shards": "scott_distill.teacher.shards",
    "evaluation": "scott_distill.student.evaluation",
}
# statuses mutmut reports (mutmut.stats.status_by_exit_code); "killed" also covers a failed type check
KILLED = {"killed", "caught by type check"}
TIMEOUT = {"timeout", "segfault"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # The tests run from the copy in mutants/, one folder deeper than the repository: point them at the real data.
    env.setdefault("SCOTT_SHARED_DATA", str((ROOT.parent / "shared" / "data").resolve()))
    # Real-data tests that skip fail under CI=true (tests/conftest.py); that rule is the main test run's job, not
    # the mutation run's, which only needs the tests that can see a mutant.
    env["CI"] = "false"
    # mutmut runs the sampled mutants' tests as a set, in an order that follows Python's string hashing. A fixed
    # hash seed makes the step reproducible. (An order-dependent test once made the clean run fail in 5 of 7 runs:
    # a test left the session tokenizer right-padded; tests/conftest.py now fails any test that does.)
    env["PYTHONHASHSEED"] = "0"
    return env


def _mutmut(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mutmut", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), text=True, capture_output=True)
    if check and proc.returncode != 0:
        sys.stdout.write(proc.stdout[-4000:])
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"`mutmut {' '.join(args[:3])} ...` failed with exit code {proc.returncode}")
    return proc


def _prepare() -> None:
    """Put the two folders pyproject.toml maps into the package (``package-dir``) where the copy in mutants/ is
    imported from: mutmut copies ``src/`` only, and with a non-editable install (``.ci/run``) the installed
    ``scott_distill.las.evaluate_module`` and ``scott_distill.model_cards`` are not found under the copy's package.
    mutmut keeps files that already exist in mutants/."""
    for source, target in (("metrics/las", "src/scott_distill/las/evaluate_module"),
                           ("model_cards", "src/scott_distill/model_cards")):
        destination = ROOT / "mutants" / target
        if not destination.exists():
            shutil.copytree(ROOT / source, destination)


def _run(names: list[str], workers: int = 1) -> None:
    _prepare()
    # one worker by default: the machine has 2 cores and torch uses both inside a test. More workers check more
    # mutants per second, but a loaded machine stretches every test toward mutmut's timeout ((clean time of the
    # mutant's tests + timeout_constant) x 3 in mutmut 3.8), and a timeout counts as killed: re-check the timeouts of
    # such a run (`run --survivors --timeouts`).
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(workers), *names]
    env = _env()
    if workers > 1:  # one torch thread per worker: two workers of two threads each oversubscribe 2 cores
        env["OMP_NUM_THREADS"] = "1"
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    if rc != 0:
        raise SystemExit(f"mutmut run exited with {rc}")


def results() -> dict[str, str]:
    """Every generated mutant's status, from ``mutmut results --all true``."""
    out = _mutmut("results", "--all", "true").stdout
    status = {}
    for line in out.splitlines():
        name, sep, value = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            status[name] = value.strip()
    return status


def module_of(name: str) -> str:
    for short, dotted in MODULES.items():
        if name.startswith(dotted + "."):
            return short
    raise ValueError(f"mutant {name!r} is not in any module of MODULES")


def read_list(path: Path) -> dict[str, str]:
    """``name  # comment`` lines (blank lines and lines starting with # skipped) -> {name: comment}."""
    entries = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, comment = line.partition("#")
        entries[name.strip()] = comment.strip()
    return entries


def score(status: dict[str, str], equivalent: dict[str, str]) -> dict[str, Counter]:
    table: dict[str, Counter] = {short: Counter() for short in MODULES}
    for name, value in status.items():
        row = table[module_of(name)]
        row["mutants"] += 1
        if value == "not checked":
            row["not checked"] += 1
        elif name in equivalent and value not in KILLED:
            row["equivalent"] += 1
        elif value in KILLED:
            row["killed"] += 1
        elif value in TIMEOUT:
            row["timeout"] += 1
        elif value == "survived":
            row["survived"] += 1
        else:  # "no tests", "suspicious", "skipped": no test reached the mutant, counted against the suite
            row["no tests"] += 1
    return table


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n (n > 0): the interval for a score estimated from a random
    sample of mutants."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def print_score(table: dict[str, Counter], markdown: bool, interval: bool = False) -> None:
    cols = ["mutants", "checked", "killed", "timeout", "survived", "no tests", "equivalent", "score"]
    if interval:
        cols.append("95 % interval")
    rows = []
    for short, c in table.items():
        checked = c["mutants"] - c["not checked"]
        # a timeout counts as killed (the mutant made the tests hang: a user would notice), as in mutmut's own score
        non_equivalent = checked - c["equivalent"]
        killed = c["killed"] + c["timeout"]
        pct = f"{100 * killed / non_equivalent:.1f} %" if non_equivalent else "-"
        row = [MODULES[short], c["mutants"], checked, c["killed"], c["timeout"], c["survived"], c["no tests"],
               c["equivalent"], pct]
        if interval:
            lo, hi = wilson_interval(killed, non_equivalent) if non_equivalent else (math.nan, math.nan)
            row.append(f"{100 * lo:.0f}-{100 * hi:.0f} %" if non_equivalent else "-")
        rows.append(row)
    if markdown:
        print("| module | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for r in rows:
            print("| " + " | ".join(str(x) for x in r) + " |")
    else:
        print(f"{'module':36s}" + "".join(f"{c:>14s}" for c in cols))
        for r in rows:
            print(f"{r[0]:36s}" + "".join(f"{str(x):>14s}" for x in r[1:]))


def function_pattern(module: str, function: str) -> str:
    """mutmut's name pattern for the mutants of one function (``f``) or method (``Class.method``) of ``module``."""
    cls, _, method = function.rpartition(".")
    return f"{module}.xǁ{cls}ǁ{method}__mutmut_*" if cls else f"{module}.x_{function}__mutmut_*"


def function_of(name: str) -> str:
    """The function (``f``) or method (``Class.method``) a mutant name belongs to."""
    mangled = name.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    if mangled.startswith("xǁ"):
        cls, method = mangled[2:].split("ǁ", 1)
        return f"{cls}.{method}"
    return mangled[2:]


def _check_functions(short: str, functions: list[str], status: dict[str, str]) -> None:
    """Refuse function names with no mutant in the module (misspelt, or a decorated function mutmut skips): mutmut
    itself only refuses when none of the names matches. ``status``: :func:`results`."""
    found = {function_of(n) for n in status if module_of(n) == short}
    missing = [f for f in functions if f not in found]
    if missing:
        raise SystemExit(f"--functions: no mutants of {missing} in {MODULES[short]} (misspelt, a method not written "
                         "as Class.method, or a decorated function, which mutmut does not mutate)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of workers >= 1, got {text!r}")
    return value


def functions_by_module(modules: list[str], functions: list[str] | None) -> dict[str, list[str]]:
    """``--functions`` per module: ``NAME`` when one module is named, ``MODULE:NAME`` for any of several. A module
    with no name listed is run whole (an empty list)."""
    by_module: dict[str, list[str]] = {m: [] for m in modules}
    for entry in functions or []:
        module, sep, name = entry.partition(":")
        if not sep:
            if len(modules) != 1:
                raise SystemExit(f"--functions: with several modules write MODULE:NAME, got {entry!r}")
            module, name = modules[0], entry
        elif module not in by_module:
            raise SystemExit(f"--functions {entry!r}: module {module!r} is not among the modules named {modules}")
        by_module[module].append(name)
    return by_module


def cmd_run(args: argparse.Namespace) -> None:
    if args.timeouts and not args.survivors:  # without it the modules' full sets would run (hours)
        raise SystemExit("--timeouts reruns the timeouts with the survivors: use it with --survivors")
    if "all" in args.modules and args.functions:
        # every module without a listed function would run whole: hours, for a request that named a few functions
        raise SystemExit("--functions cannot be combined with 'all': name the modules, e.g. "
                         "`run trainer scoring --functions trainer:NAME`")
    modules = list(MODULES) if "all" in args.modules else list(dict.fromkeys(args.modules))
    for short in modules:
        if short not in MODULES:
            raise SystemExit(f"module must be one of {sorted(MODULES)} or 'all', got {short!r}")
    wanted = functions_by_module(modules, args.functions)
    # mutmut generates every module's mutants in any run, so once mutants/ holds results the names are checked before
    # the run (a misspelt name is refused before hours of the other names' mutants), else after it
    needed = args.survivors or any(wanted.values())  # a plain run of whole modules needs no results before it
    status = results() if needed and (ROOT / "mutants").is_dir() else {}
    checked = bool(status)
    if checked:
        for short, functions in wanted.items():
            if functions:
                _check_functions(short, functions, status)
    # one mutmut run for everything named: its clean test run (minutes) is paid once
    names: list[str] = []
    if args.survivors:  # again, after adding tests: mutmut reruns mutants named explicitly
        rerun = {"survived"} | (TIMEOUT if args.timeouts else set())
        equivalent = read_list(EQUIVALENT_FILE)
        names = [n for n, v in status.items()
                 if module_of(n) in wanted and v in rerun and n not in equivalent
                 and (not wanted[module_of(n)] or function_of(n) in wanted[module_of(n)])]
    else:
        for short, functions in wanted.items():
            names += [function_pattern(MODULES[short], f) for f in functions] or [MODULES[short] + ".*"]
    print(f"== {', '.join(MODULES[m] for m in modules)}", flush=True)
    if names:
        _run(names, args.workers)
        status = results()
    if not checked:
        for short, functions in wanted.items():
            if functions:
                _check_functions(short, functions, status)
    print_score(score(status, read_list(EQUIVALENT_FILE)), markdown=False)


def cmd_sample(args: argparse.Namespace) -> None:
    sample = list(read_list(Path(args.file)))
    equivalent = read_list(EQUIVALENT_FILE)
    _run(sample, args.workers)
    status = results()
    missing = [n for n in sample if n not in status]
    if missing:
        raise SystemExit(f"{len(missing)} sampled mutants no longer exist (the code changed): {missing[:5]}; "
                         "draw a new sample with `python scripts/mutation.py make-sample`")
    survivors = [n for n in sample if status[n] not in KILLED | TIMEOUT and n not in equivalent]
    counts = Counter(status[n] for n in sample)
    print(f"sample of {len(sample)} mutants: {dict(counts)}; listed as equivalent: "
          f"{sum(n in equivalent for n in sample)}")
    if survivors:
        for name in survivors:
            print(f"\n{name}: {status[name]}")
            print(_mutmut("show", name, check=False).stdout)
        raise SystemExit(f"{len(survivors)} sampled mutant(s) not killed and not listed in {EQUIVALENT_FILE.name}: "
                         "add a test that kills them, or list them there with the reason they are equivalent")


def cmd_make_sample(args: argparse.Namespace) -> None:
    status = results()
    if not status:
        raise SystemExit("no mutants generated yet: run `python scripts/mutation.py run formula` first")
    rng = random.Random(args.seed)
    output = Path(args.output) if args.output else SAMPLE_FILE
    command = f"make-sample --seed {args.seed} --per-module {args.per_module}"
    if args.modules:
        command += " --modules " + " ".join(args.modules)
    if args.output:
        command += f" --output {args.output}"
    purpose = "Fixed mutant sample for .ci/run" if output == SAMPLE_FILE else "Random mutant sample"
    lines = [f"# {purpose}: `python scripts/mutation.py {command}` (a seeded draw per module of the mutants mutmut "
             "generates)."]
    for short in args.modules or MODULES:
        names = sorted(n for n in status if module_of(n) == short)
        lines += rng.sample(names, min(args.per_module, len(names)))
    output.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 1} mutants to {output}")


def cmd_score(args: argparse.Namespace) -> None:
    status = results()
    if args.file:
        listed = read_list(Path(args.file))
        status = {n: v for n, v in status.items() if n in listed}
    print_score(score(status, read_list(EQUIVALENT_FILE)), markdown=args.markdown, interval=bool(args.file))
    if args.list_survivors:
        equivalent = read_list(EQUIVALENT_FILE)
        for name, value in sorted(status.items()):
            if value == "survived" and name not in equivalent:
                print(name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="every mutant of the named modules")
    p.add_argument("modules", nargs="+", help=f"{', '.join(MODULES)} or all")
    p.add_argument("--survivors", action="store_true",
                   help="only the mutants that survived last time and are not listed as equivalent")
    p.add_argument("--timeouts", action="store_true",
                   help="with --survivors: the timeouts too (a loaded machine turns slow tests into timeouts, which "
                        "count as killed)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="mutmut worker processes (default 1; with more, re-check the timeouts with --survivors "
                        "--timeouts: a loaded machine turns slow tests into timeouts, which count as killed)")
    p.add_argument("--functions", nargs="+", metavar="NAME",
                   help="only these functions (a method as Class.method); with several modules, MODULE:NAME; "
                        "a module without any listed runs whole")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("sample", help="the fixed sample of tests/mutation/sample.txt (CI)")
    p.add_argument("--file", default=str(SAMPLE_FILE), help="another list of mutants (default: %(default)s)")
    p.add_argument("--workers", type=_positive_int, default=1, help="mutmut worker processes, as for `run`")
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("make-sample", help="draw a new fixed sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-module", type=int, default=3)
    p.add_argument("--modules", nargs="*", help="short module names (default: all)")
    p.add_argument("--output", help="write the draw to this file instead of tests/mutation/sample.txt")
    p.set_defaults(func=cmd_make_sample)
    p = sub.add_parser("score", help="the score table")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--list-survivors", action="store_true", help="also list survived, non-equivalent mutants")
    p.add_argument("--file", help="score only the mutants listed in this file (with a 95 %% interval)")
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("show", help="the diff of one mutant")
    p.add_argument("name")
    p.set_defaults(func=lambda a: print(_mutmut("show", a.name).stdout))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
