"""The Hub's large-file (git LFS) path, against the local test server (tests/hub_server.py, test code).

The real ``huggingface_hub`` client runs in a subprocess with HF_ENDPOINT pointing at the server, which answers
``preupload`` with ``uploadMode: "lfs"`` for files of ``THRESHOLD`` bytes or more (the Hub's own rule is per repo:
``*.safetensors`` / ``*.parquet`` at any size, and nothing regular above 10 MB). Pushes set ``HF_HUB_DISABLE_XET=1``
because huggingface_hub 2.4 picks Xet on the client whenever hf_xet is installed, whatever the server says
(``test_upload_takes_xet_whenever_hf_xet_is_installed`` checks that); pulls do not set it: the server decides
downloads and never offers Xet. Every test counts the server's requests by route, so a silent fall-back to regular
uploads fails it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import FakeHub
from transformers import GPT2Config, GPT2LMHeadModel

TESTS = Path(__file__).parent
THRESHOLD = 1 << 20  # the server's LFS threshold here: the student's weights (~1.9 MiB) are above it, the rest below
REPO = "org/scott-gpt2-lfs"
DATASET = "org/rationales-lfs"
TOKEN = "hf_test_token"


def sha256_tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (symlinks followed, as in a snapshot), by relative path."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".cache" not in p.parts}


def sha256_files(files: dict[str, bytes]) -> dict[str, str]:
    return {p: hashlib.sha256(b).hexdigest() for p, b in files.items()}


def client_env(hub: FakeHub, work: Path, upload: bool) -> dict[str, str]:
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(work / "hf_home"),
           "PYTHONPATH": str(TESTS)}
    env.pop("HF_TOKEN", None)
    env.pop("HF_HUB_DISABLE_XET", None)
    if upload:  # the client, not the server, chooses Xet for uploads (see the module docstring)
        env["HF_HUB_DISABLE_XET"] = "1"
    return env


def run_client(hub: FakeHub, mode: str, work: Path, repo_id: str, upload: bool = True, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, str(TESTS / "hub_lfs_client.py"), mode, str(work), repo_id, "--token", TOKEN,
                           *extra],
                          capture_output=True, text=True, env=client_env(hub, work, upload), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_retry_command(hub: FakeHub, message: str, work: Path) -> None:
    """Run the ``hf upload ...`` command that ``HubPushError`` printed, as a user would (token from HF_TOKEN)."""
    command = shlex.split(message.split("Retry: ", 1)[1])
    assert command[:2] == ["hf", "upload"], command
    env = {**client_env(hub, work, upload=True), "HF_TOKEN": TOKEN}
    proc = subprocess.run([str(Path(sys.executable).parent / "hf"), *command[1:]], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture
def student_dir(tmp_path, tokenizer):
    """A GPT-2 student whose model.safetensors (~1.9 MiB) is above THRESHOLD; tokenizer and config stay below."""
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=128, n_layer=2, n_head=2, bos_token_id=3,
                     eos_token_id=1, pad_token_id=0)
    GPT2LMHeadModel(cfg).eval().save_pretrained(tmp_path / "init")
    tokenizer.save_pretrained(tmp_path / "init")
    return tmp_path


def assert_only_weights_went_through_lfs(hub: FakeHub, local: Path) -> None:
    assert hub.lfs_paths("model", REPO) == {"model.safetensors"}
    assert (local / "model.safetensors").stat().st_size >= THRESHOLD
    assert all(p.stat().st_size < THRESHOLD for p in local.iterdir() if p.name != "model.safetensors")
    assert sha256_files(hub.files("model", REPO)) == sha256_tree(local)


def test_student_above_threshold_goes_through_lfs_and_comes_back_identical(student_dir):
    work = student_dir
    with FakeHub(required_token=TOKEN, lfs_threshold=THRESHOLD) as hub:
        out = run_client(hub, "push_student", work, REPO)
        assert not out["raised"], out
        # the batch API, one PUT of the object to storage, its verify; no multipart, nothing failed
        assert hub.count("lfs_batch", 200) == 1 and hub.count("lfs_put", 200) == 1
        assert hub.count("lfs_verify", 200) == 1 and hub.count("lfs_part_put") == hub.count("lfs_complete") == 0
        assert_only_weights_went_through_lfs(hub, work / "local_student")

        pulled = run_client(hub, "pull_student", work, REPO, upload=False)
        # resolve redirected the weights to storage, which served them without the Hub token (another origin)
        assert hub.count("resolve", 302) >= 1 and hub.count("storage_get", 200) == 1
        assert not hub.state.storage_saw_token
    assert sha256_tree(Path(pulled["dir"])) == sha256_tree(work / "local_student")
    assert pulled["pulled"] == pulled["local"]


def test_multipart_transfer_when_the_server_asks_for_it(student_dir):
    work = student_dir
    chunk = 512 * 1024
    with FakeHub(required_token=TOKEN, lfs_threshold=THRESHOLD, multipart_chunk_size=chunk) as hub:
        out = run_client(hub, "push_student", work, REPO)
        assert not out["raised"], out
        size = (work / "local_student" / "model.safetensors").stat().st_size
        assert size % chunk, "the last part should be a short one"
        assert hub.count("lfs_part_put", 200) == -(-size // chunk) and hub.count("lfs_complete", 200) == 1
        assert hub.count("lfs_put") == 0 and hub.count("lfs_verify", 200) == 1
        assert_only_weights_went_through_lfs(hub, work / "local_student")


def test_rationale_dataset_parquet_above_threshold_goes_through_lfs(tmp_path):
    rng = random.Random(0)  # random text: parquet cannot compress it below the threshold
    rows = [{"id": str(i), "question": f"q{i}", "choices": ["a", "b"], "answer": "a",
             "rationale": rng.randbytes(300).hex(), "counterfactual_answer": "b", "counterfactual_rationale": ""}
            for i in range(2500)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    parquet = "data/train-00000-of-00001.parquet"
    with FakeHub(required_token=TOKEN, lfs_threshold=THRESHOLD) as hub:
        out = run_client(hub, "push_dataset", tmp_path, DATASET)
        assert not out["raised"], out
        local = tmp_path / "local_dataset"
        assert (local / parquet).stat().st_size >= THRESHOLD and (local / "README.md").stat().st_size < THRESHOLD
        assert hub.lfs_paths("dataset", DATASET) == {parquet}
        assert hub.count("lfs_put", 200) == 1 and hub.count("lfs_verify", 200) == 1
        pulled = run_client(hub, "pull_snapshot", tmp_path, DATASET, False, "--repo-type", "dataset")
        assert hub.count("storage_get", 200) == 1
    assert sha256_tree(Path(pulled["dir"])) == sha256_tree(local) == sha256_files(hub.files("dataset", DATASET))


@pytest.mark.parametrize("failure", ["disconnect", "500"])
def test_interrupted_object_put_is_retried_and_the_push_succeeds(student_dir, failure):
    """The first PUT of the weights drops the connection half-way (or gets a 500); the client retries it."""
    work = student_dir
    with FakeHub(required_token=TOKEN, lfs_threshold=THRESHOLD, fail_object_puts=1, put_failure=failure) as hub:
        out = run_client(hub, "push_student", work, REPO)
        assert not out["raised"], out
        failed_status = 0 if failure == "disconnect" else 500  # 0: the server dropped the connection
        assert [s for r, _, s in hub.state.log if r == "lfs_put"] == [failed_status, 200]  # one retry, then stored
        assert_only_weights_went_through_lfs(hub, work / "local_student")  # the retry re-sent the whole object


def test_refused_object_put_raises_hub_push_error_and_its_retry_command_works(student_dir):
    """Storage refuses every PUT (an expired signature, not retried): HubPushError says why and how to retry; the
    local folder is intact; the retry command, run once the server accepts uploads, completes the push."""
    work = student_dir
    with FakeHub(required_token=TOKEN, lfs_threshold=THRESHOLD, fail_object_puts=-1, put_failure="403") as hub:
        out = run_client(hub, "push_student", work, REPO)
        assert out["raised"]
        assert "model.safetensors" in out["message"] and "403" in out["message"], out["message"]
        assert f"Retry: hf upload {REPO} {work / 'local_student'} . --repo-type model" in out["message"]
        assert hub.count("lfs_put", 403) == 1 and hub.count("commit") == 0
        local = sha256_tree(work / "local_student")
        assert local == sha256_tree(work / "reference")  # intact: the same bytes as a fresh save of the student

        hub.state.fail_object_puts = 0
        run_retry_command(hub, out["message"], work)
        assert hub.count("lfs_put", 200) == 1
        assert_only_weights_went_through_lfs(hub, work / "local_student")
    assert sha256_tree(work / "local_student") == local


def test_failed_commit_after_the_transfer_is_retried_without_sending_the_object_again(student_dir):
    """The object reached storage but the commit failed: the retry command commits it; the batch API says the
    object is already stored, so it is not uploaded twice."""
    work = student_dir
    with FakeHub(required_token=TOKEN, lfs_threshold=THRESHOLD, fail_commits=True) as hub:
        out = run_client(hub, "push_student", work, REPO)
        assert out["raised"] and "Retry: hf upload" in out["message"]
        assert hub.count("lfs_put", 200) == 1 and hub.count("commit", 500) == 1
        assert sha256_tree(work / "local_student") == sha256_tree(work / "reference")

        hub.state.fail_commits = False
        run_retry_command(hub, out["message"], work)
        assert hub.count("lfs_batch", 200) == 2 and hub.count("lfs_put") == 1  # the object was not sent again
        assert hub.count("commit", 200) == 1
        assert_only_weights_went_through_lfs(hub, work / "local_student")


@pytest.mark.slow
def test_object_put_failing_every_time_gives_up_after_the_client_retries(student_dir):
    """Every PUT gets a 500: the client retries 5 times with backoff (~23 s), then HubPushError; folder intact."""
    work = student_dir
    with FakeHub(required_token=TOKEN, lfs_threshold=THRESHOLD, fail_object_puts=-1, put_failure="500") as hub:
        out = run_client(hub, "push_student", work, REPO)
        assert out["raised"] and "Retry: hf upload" in out["message"] and "500" in out["message"]
        assert hub.count("lfs_put", 500) == 6 and hub.count("lfs_put", 200) == 0 and hub.count("commit") == 0
    assert sha256_tree(work / "local_student") == sha256_tree(work / "reference")


@pytest.mark.skipif(importlib.util.find_spec("hf_xet") is None, reason="hf_xet is not installed")
def test_upload_takes_xet_whenever_hf_xet_is_installed(student_dir):
    """Why the pushes above set HF_HUB_DISABLE_XET=1: without it, huggingface_hub goes to the Xet token endpoint
    although this server never offered Xet, and does not fall back to LFS. If a future client asks the server
    first, this test fails and the setting can go."""
    work = student_dir
    with FakeHub(required_token=TOKEN, lfs_threshold=THRESHOLD) as hub:
        proc = subprocess.run([sys.executable, str(TESTS / "hub_lfs_client.py"), "push_student", str(work), REPO,
                               "--token", TOKEN], capture_output=True, text=True,
                              env=client_env(hub, work, upload=False), timeout=300)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["raised"], out
        assert hub.count("xet_write_token") >= 1 and hub.count("lfs_batch") == 0
