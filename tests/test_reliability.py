"""Faults a long rationalization meets: kill -9 at random moments (and inside a shard write and the merge), damaged
records, a full disk, a folder that is not writable, a corrupted settings file, SIGTERM/SIGINT, out of memory.

The kill tests run the real library in a subprocess (tests/rationalize_fault_client.py) on a tiny GPT-2 teacher
and compare the resumed ``dataset/`` byte for byte with an uninterrupted run. ``SCOTT_RELIABILITY_TRIALS=N`` runs
N random-delay trials instead of the default 2 (docs/reliability.md uses 20);
``SCOTT_RELIABILITY_REPORT=file.json`` writes the figures of every trial there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import make_gpt2, shared_data_or_skip

import scott_distill.teacher.rationalize as rationalize_module
import scott_distill.teacher.shards as shards_module
from scott_distill import generate_rationales
from scott_distill.commands import main as cli_main
from scott_distill.files import ensure_writable_dir
from scott_distill.interrupts import RunInterrupted

TESTS_DIR = Path(__file__).parent
CLIENT = TESTS_DIR / "rationalize_fault_client.py"
KW = dict(task="cose", batch_size=4, max_new_tokens=6, show_progress=False)
N_BATCHES = -(-20 // 4)  # 10 rows x (factual + counterfactual) / batch 4


@pytest.fixture
def count_generations(monkeypatch):
    """Counts the batches generated (calls of ``_generate``); ``fail_at`` makes that call raise ``exc``."""
    real = rationalize_module._generate
    state: dict = {"n": 0, "fail_at": None, "exc": None}

    def counting(*args, **kwargs):
        state["n"] += 1
        if state["n"] == state["fail_at"]:
            raise state["exc"]
        return real(*args, **kwargs)

    monkeypatch.setattr(rationalize_module, "_generate", counting)
    return state


def intact_batches(output: Path) -> list[int]:
    """Batch ids of the whole records in the shards, in file order (duplicates kept), by an independent reading:
    a JSON object per line whose ``sha256``, if it has one, is that of ``[batch, texts]``."""
    ids = []
    for path in sorted((output / "shards").glob("rank*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            digest = hashlib.sha256(json.dumps([record["batch"], record["texts"]]).encode()).hexdigest()
            if record.get("sha256", digest[:16]) == digest[:16]:
                ids.append(record["batch"])
    return ids


def crash_after(n: int, state: dict, rows, teacher, tokenizer, output: Path) -> None:
    state.update(n=0, fail_at=n + 1, exc=KeyboardInterrupt("simulated crash"))
    with pytest.raises(KeyboardInterrupt):
        generate_rationales(rows, teacher, tokenizer, output_dir=output, **KW)
    state.update(n=0, fail_at=None)


# -- damaged records, a failing repair, a full disk (in process) ---------------------------------------------------


def test_damaged_record_fails_its_checksum_and_its_batch_is_generated_again(cose_rows, teacher, tokenizer, tmp_path,
                                                                             count_generations):
    """Regression: a record that still parses but whose text was damaged (bit rot, a bad sector, an edit) was
    taken as it was, so the resumed dataset silently held a wrong rationale."""
    full = generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "full", **KW)
    crash_after(3, count_generations, cose_rows, teacher, tokenizer, tmp_path / "run")
    shard = tmp_path / "run" / "shards" / "rank0.jsonl"
    lines = shard.read_text().splitlines()
    record = json.loads(lines[1])
    record["texts"][0] += " (damaged)"
    lines[1] = json.dumps(record)
    shard.write_text("\n".join(lines) + "\n")
    resumed = generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "run", **KW)
    assert resumed.to_list() == full.to_list()
    assert count_generations["n"] == N_BATCHES - 2  # the damaged batch and the two never written


def test_failed_repair_of_a_torn_shard_loses_no_finished_batch(cose_rows, teacher, tokenizer, tmp_path,
                                                              count_generations, monkeypatch):
    """Regression: the repair of a torn last record rewrote the whole shard file (truncate, then write back); a
    full disk or a kill during that rewrite left it empty, losing every finished batch."""
    full = generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "full", **KW)
    crash_after(3, count_generations, cose_rows, teacher, tokenizer, tmp_path / "run")
    shard = tmp_path / "run" / "shards" / "rank0.jsonl"
    with open(shard, "a") as f:  # the record the crash cut short
        f.write('{"sha256": "0123", "batch": 3, "texts": ["part')

    def disk_full(self, data, *args, **kwargs):
        with open(self, "wb"):  # what write_bytes does first: truncate
            pass
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(Path, "write_bytes", disk_full)
        try:
            generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "run", **KW)
        except OSError:
            pass
    assert sorted(set(intact_batches(tmp_path / "run")))[:3] == [0, 1, 2]
    count_generations["n"] = 0
    resumed = generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "run", **KW)
    assert resumed.to_list() == full.to_list()


def test_disk_full_mid_run_keeps_what_was_written_and_resumes(cose_rows, teacher, tokenizer, tmp_path,
                                                             count_generations, monkeypatch):
    full = generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "full", **KW)
    real = shards_module._append
    writes = {"n": 0}

    def disk_fills_up(fd, data):
        writes["n"] += 1
        if writes["n"] == 3:  # the third record: half of it reaches the disk, then ENOSPC
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    with monkeypatch.context() as m:
        m.setattr(shards_module, "_append", disk_fills_up)
        with pytest.raises(OSError, match=r"Writing batch 2 to .*rank0.jsonl failed \(No space left on device\)\. "
                                          r"The 2 batch\(es\) .* intact.* run the same command again to resume"):
            generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "run", **KW)
    shard = (tmp_path / "run" / "shards" / "rank0.jsonl").read_bytes()
    assert shard.endswith(b"\n") and len(shard.splitlines()) == 2  # the half record was cut off again
    assert intact_batches(tmp_path / "run") == [0, 1]
    count_generations["n"] = 0
    resumed = generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "run", **KW)
    assert resumed.to_list() == full.to_list() and count_generations["n"] == N_BATCHES - 2


# -- the output folder and the settings file -----------------------------------------------------------------------


def test_output_dir_that_is_a_file_is_refused_before_any_work(cose_rows, teacher, tokenizer, tmp_path,
                                                             count_generations, monkeypatch):
    monkeypatch.setattr(rationalize_module, "weights_fingerprint", lambda *a: pytest.fail("work started"))
    (tmp_path / "out").write_text("a file, not a folder")
    with pytest.raises(OSError, match=r"`output_dir` '.*out' is not a writable folder \(File exists\)"):
        generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "out", **KW)
    assert count_generations["n"] == 0


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """A folder nobody may write in, root included: ``chattr +i`` (immutable) where the file system and the
    capabilities allow it, else mode 0o555 for a non-root user; skips otherwise."""
    path.mkdir()
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    if os.geteuid() == 0:
        pytest.skip("no way to make a folder read-only for root here (chattr +i refused)")
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)


def test_read_only_output_folder_is_refused_before_the_teacher_loads(cose_rows, teacher, tokenizer, tmp_path,
                                                                    count_generations):
    with read_only_folder(tmp_path / "ro") as ro:
        with pytest.raises(OSError, match=rf"`--output` '{ro}/run' is not a writable folder \((Operation not "
                                          r"permitted|Permission denied)\)"):
            cli_main(["rationalize", "--teacher", "/nonexistent-teacher", "--output", str(ro / "run")])
        with pytest.raises(OSError, match=rf"`output_dir` '{ro}' is not a writable folder"):
            generate_rationales(cose_rows, teacher, tokenizer, output_dir=ro, **KW)
        assert list(ro.iterdir()) == []
    assert count_generations["n"] == 0


def test_concurrent_checks_of_one_output_folder_do_not_remove_it_under_each_other(tmp_path, monkeypatch):
    """Regression (CI failure of test_tensor_parallel_two_ranks): every rank checks ``output_dir`` at once. The
    check used to create the missing folder and remove it afterwards, so one rank could remove it between
    another rank's mkdir and its probe (FileNotFoundError). Each check must create only folders nobody else
    uses: here, a second check runs to completion inside the first one's every mkdir, as another rank may."""
    target = tmp_path / "runs" / "rz"
    made: list[Path] = []
    real_mkdir = os.mkdir
    inside = {"depth": 0}

    def mkdir_while_another_rank_checks(p, *args, **kwargs):
        real_mkdir(p, *args, **kwargs)
        made.append(Path(p))
        if inside["depth"] == 0:
            inside["depth"] += 1
            try:
                ensure_writable_dir(target, "output_dir")  # the other rank, start to end
            finally:
                inside["depth"] -= 1

    monkeypatch.setattr(os, "mkdir", mkdir_while_another_rank_checks)
    assert ensure_writable_dir(target, "output_dir") == target
    assert not ({target, target.parent} & set(made)), "the check created a folder other ranks also use"
    assert list(tmp_path.iterdir()) == [] and made, "the check left something behind or wrote nothing"


@pytest.mark.parametrize("content", [b'{"task": "cose", "alp', b"", b"\x00\xff\xfe garbage", b"[1, 2]"],
                         ids=["truncated", "empty", "binary", "not-an-object"])
def test_corrupted_settings_file_is_reported_by_the_command_and_not_overwritten(content, tokenizer, tmp_path):
    data = shared_data_or_skip("cose_v1", "dev.csv")
    make_gpt2(len(tokenizer)).save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    args = ["rationalize", "--teacher", str(tmp_path / "teacher"), "--task", "cose", "--data", str(data),
            "--max_rows", "2", "--batch_size", "2", "--max_new_tokens", "3", "--output", str(tmp_path / "run")]
    assert cli_main(args) == 0
    settings = tmp_path / "run" / "run_config.json"
    settings.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{settings} is corrupted .*Delete {tmp_path / 'run'} to start over"):
        cli_main(args)
    assert settings.read_bytes() == content


# -- out of memory ------------------------------------------------------------------------------------------------


def test_out_of_memory_halves_the_rows_per_forward_and_loses_nothing(cose_rows, teacher, tokenizer, tmp_path,
                                                                    monkeypatch, caplog):
    full = generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "full", **KW)
    real = rationalize_module._generate
    sizes: list[int] = []

    def small_card(model, tok, jobs, *args, **kwargs):
        sizes.append(len(jobs))
        if len(jobs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(model, tok, jobs, *args, **kwargs)

    monkeypatch.setattr(rationalize_module, "_generate", small_card)
    with caplog.at_level("WARNING"):
        out = generate_rationales(cose_rows, teacher, tokenizer, output_dir=tmp_path / "run", **KW)
    assert "Out of memory generating 4 rows at a time; retrying this batch 2 rows at a time" in caplog.text
    assert sizes[:3] == [4, 2, 1] and set(sizes[3:]) == {1}  # halved once per failure, never grown back
    assert sum(s for s in sizes if s == 1) == 20  # every job generated exactly once after the backoff
    assert out.to_list() == full.to_list()
    assert intact_batches(tmp_path / "run") == list(range(N_BATCHES))


def test_out_of_memory_at_one_row_and_other_errors_are_raised(cose_rows, teacher, tokenizer, monkeypatch):
    def never_fits(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. (simulated)")

    monkeypatch.setattr(rationalize_module, "_generate", never_fits)
    with pytest.raises(torch.OutOfMemoryError):
        generate_rationales(cose_rows.select(range(2)), teacher, tokenizer, **KW)
    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(rationalize_module, "_generate", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate_rationales(cose_rows.select(range(2)), teacher, tokenizer, **KW)
    assert calls["n"] == 1  # not retried


# -- subprocesses: signals and kill -9 ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("teacher")
    make_gpt2(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def client_env(**faults: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **faults}


def api_command(teacher_dir: Path, output: Path) -> list[str]:
    data = shared_data_or_skip("cose_v1", "dev.csv")
    return [sys.executable, str(CLIENT), "api", str(teacher_dir), str(data), str(output)]


def wait_for_line(proc: subprocess.Popen, wanted: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == wanted:
            return
        if time.monotonic() > deadline:
            break
    proc.kill()
    pytest.fail(f"the client never printed {wanted!r} (exit {proc.wait()})")


@pytest.mark.parametrize("second_signal", [False, True], ids=["one-sigterm", "sigterm-then-sigint"])
def test_sigterm_finishes_or_discards_the_batch_says_how_to_resume_and_exits_nonzero(second_signal, teacher_dir,
                                                                                   tmp_path):
    data = shared_data_or_skip("cose_v1", "dev.csv")
    args = ["--teacher", str(teacher_dir), "--task", "cose", "--data", str(data), "--max_rows", "4",
            "--batch_size", "2", "--max_new_tokens", "4", "--output", str(tmp_path / "run")]
    # batch 1 takes 60 s: the signals arrive while it is in progress
    proc = subprocess.Popen([sys.executable, str(CLIENT), "cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=client_env(FAULT_HOLD_BATCH="1:6" if not
                                                                                second_signal else "1:60"))
    wait_for_line(proc, "BATCH 1")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    if second_signal:
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert time.monotonic() - sent < 40  # not the 60 s the batch in progress would take
    assert proc.returncode == (130 if second_signal else 143), stderr[-3000:]
    assert "SIGTERM received; stopping after the batch in progress is written" in stderr
    assert "Resume with: scott-distill rationalize --teacher" in stderr
    if second_signal:
        assert "stopped at once by a second SIGINT; the batch in progress is discarded" in stderr
        assert intact_batches(tmp_path / "run") == [0]
    else:
        assert "stopped by SIGTERM after writing batch 1; 2 batch(es) written by this run, 2 left" in stderr
        assert intact_batches(tmp_path / "run") == [0, 1]
    assert not (tmp_path / "run" / "dataset").exists()
    assert cli_main(["rationalize", *args]) == 0  # the resume finishes the run
    assert sorted(intact_batches(tmp_path / "run")) == [0, 1, 2, 3]


def test_run_interrupted_is_a_keyboard_interrupt_with_the_shell_exit_code():
    exc = RunInterrupted(signal.SIGTERM, "stopped")
    assert isinstance(exc, KeyboardInterrupt) and exc.exit_code == 143


def run_to_end(command: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.monotonic() - start


def dataset_bytes(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((output / "dataset").iterdir())}


def kill_trial(teacher_dir: Path, output: Path, log: Path, reference: dict[str, bytes], *, delay: float | None = None,
               hold: str | None = None) -> dict:
    """Start a run, kill -9 it (``delay`` seconds after generation starts, or once it holds at ``hold``), resume
    it, and check the result against the uninterrupted run. Returns the trial's figures."""
    env = client_env(FAULT_LOG=str(log), FAULT_SLEEP="0.2", **({"FAULT_HOLD": hold} if hold else {}))
    proc = subprocess.Popen(api_command(teacher_dir, output), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    if hold is not None:
        wait_for_line(proc, "HOLD")
    else:
        assert delay is not None
        deadline = time.monotonic() + 300
        while not (output / "run_config.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
    killed = proc.poll() is None
    proc.kill()
    proc.wait()
    before = set(intact_batches(output)) if (output / "shards").exists() else set()
    starts_before = len(log.read_text().split()) if log.exists() else 0
    resume_s = run_to_end(api_command(teacher_dir, output), client_env(FAULT_LOG=str(log), FAULT_SLEEP="0.2"))
    starts = [int(b) for b in log.read_text().split()]
    again = set(starts[starts_before:]) & before
    got = dataset_bytes(output)
    records = Counter(intact_batches(output))
    n_batches = 8
    figures = {
        "killed": killed,
        "finished_before_kill": len(before),
        "finished_batches_generated_again": len(again),
        "batches_generated_twice": sum(c - 1 for c in Counter(starts).values()),
        "duplicate_records": sum(c - 1 for c in records.values()),
        "missing_records": n_batches - len(records),
        "files_differing": sorted(k for k in reference.keys() | got.keys() if reference.get(k) != got.get(k)),
        "bytes_differing": sum(a != b for k in reference for a, b in zip(reference[k], got.get(k, b""))) +
        sum(abs(len(reference[k]) - len(got.get(k, b""))) for k in reference),
        "resume_s": round(resume_s, 2),
    }
    assert not again, f"finished batches {sorted(again)} were generated again"
    assert figures["duplicate_records"] == 0 and figures["missing_records"] == 0, figures
    assert figures["batches_generated_twice"] <= 1, figures  # at most the batch the kill interrupted
    assert got == reference, figures
    return figures


@pytest.fixture(scope="module")
def reference_run(teacher_dir, tmp_path_factory) -> dict:
    """One uninterrupted run: its ``dataset/`` bytes, its wall time and how long its generation took."""
    ref = tmp_path_factory.mktemp("reference") / "run"
    proc = subprocess.Popen(api_command(teacher_dir, ref), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=client_env(FAULT_SLEEP="0.2"))
    start = time.monotonic()
    while not (ref / "run_config.json").exists() and proc.poll() is None:
        time.sleep(0.005)
    generating_from = time.monotonic()
    assert proc.wait(timeout=600) == 0
    end = time.monotonic()
    return {"bytes": dataset_bytes(ref), "uninterrupted_s": round(end - start, 2),
            "generation_s": round(end - generating_from, 2)}


def record(figures: dict, reference_run: dict) -> None:
    """Print a trial's figures; append them to ``$SCOTT_RELIABILITY_REPORT`` (JSON lines) when it is set."""
    line = json.dumps({**figures, **{k: v for k, v in reference_run.items() if k != "bytes"}})
    print(line)
    if os.environ.get("SCOTT_RELIABILITY_REPORT"):
        with open(os.environ["SCOTT_RELIABILITY_REPORT"], "a") as f:
            f.write(line + "\n")


@pytest.mark.parametrize("window", ["write:3", "merge", "rename"])
def test_kill_9_inside_a_shard_write_or_the_merge_resumes_byte_identical(window, teacher_dir, reference_run,
                                                                          tmp_path):
    """``write:3``: half of the fourth record is on disk; ``merge``: half of ``dataset_info.json``; ``rename``:
    the merged dataset is complete but not yet in place. Regression (merge): the dataset was saved straight into
    ``dataset/``, so a kill while its ``dataset_info.json`` was being written left a folder that counted as
    finished and could not be loaded."""
    figures = kill_trial(teacher_dir, tmp_path / "run", tmp_path / "log", reference_run["bytes"], hold=window)
    assert figures["killed"]
    record({"fault": f"kill -9 in the {window} window", **figures}, reference_run)


@pytest.mark.parametrize("seed", range(int(os.environ.get("SCOTT_RELIABILITY_TRIALS", "2"))))
def test_kill_9_at_a_random_moment_resumes_byte_identical(seed, teacher_dir, reference_run, tmp_path):
    # from when generation starts to a little past its end, so that some kills land in the merge
    delay = random.Random(seed).uniform(0, 1.1 * reference_run["generation_s"])
    figures = kill_trial(teacher_dir, tmp_path / "run", tmp_path / "log", reference_run["bytes"], delay=delay)
    record({"fault": "kill -9 at a random moment", "seed": seed, "delay_s": round(delay, 2), **figures},
           reference_run)
