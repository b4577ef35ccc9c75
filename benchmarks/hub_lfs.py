"""Push + pull of a ~100 MB student through the Hub's LFS path vs the same folder as regular files, in one run.

Both go through the project's ``RationaleStudent.push_to_hub`` and ``snapshot_download`` (the real huggingface_hub 2.4 client, in
subprocesses, Xet disabled for the push) against the local test server (tests/hub_server.py) on 127.0.0.1:

  lfs       the server's LFS threshold is 10 MiB (the Hub's cap on regular files): model.safetensors goes
            preupload -> batch API -> one PUT to the storage origin -> verify -> commit of a pointer, and comes
            back through a 302 to storage;
  regular   no threshold: every file, weights included, goes base64-encoded inside the commit request (the real
            Hub would refuse that above 10 MB; it is the baseline of the ratio, not a usable alternative).

The push time includes ``RationaleStudent.save_pretrained`` writing the folder (the same in both). Loopback only: the figure is the
protocol's local cost (hashing, encoding, extra requests), not network time. Repeats are interleaved; medians.

    python benchmarks/hub_lfs.py                # ~100 MB student, 3 repeats
    python benchmarks/hub_lfs.py --quick        # ~10 MB above a 1 MiB threshold, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from hub_server import FakeHub  # noqa: E402  (test code: the local Hub stand-in)
from scott_distill.tokenizer_utils import train_bpe_tokenizer  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

TOKEN = "hf_bench_token"


def client(hub: FakeHub, work: Path, home: Path, *args: str, upload: bool) -> dict:
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(home),
           "PYTHONPATH": str(TESTS), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_HUB_DISABLE_XET", None)
    if upload:
        env["HF_HUB_DISABLE_XET"] = "1"
    proc = subprocess.run([sys.executable, str(TESTS / "hub_lfs_client.py"), args[0], str(work), *args[1:],
                           "--token", TOKEN], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out.get("raised"):
        raise RuntimeError(out["message"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=8)
    parser.add_argument("--threshold", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.n_embd, args.n_layer, args.threshold, args.repeats = 256, 3, 1 << 20, 1

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tok = train_bpe_tokenizer(["where would you keep milk cold", "a saw cuts wood"] * 20, vocab_size=300)
        cfg = GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=args.n_embd, n_layer=args.n_layer, n_head=8,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        GPT2LMHeadModel(cfg).save_pretrained(work / "init")
        tok.save_pretrained(work / "init")
        times: dict[str, dict[str, list[float]]] = {m: {"push": [], "pull": []} for m in ("lfs", "regular")}
        size = 0
        for r in range(args.repeats):
            for mode in ("lfs", "regular"):
                with FakeHub(required_token=TOKEN, lfs_threshold=args.threshold if mode == "lfs" else None) as hub:
                    push = client(hub, work, work / f"home-{mode}-{r}", "push_student", "org/bench", upload=True)
                    pull = client(hub, work, work / f"home-{mode}-{r}", "pull_snapshot", "org/bench", upload=False)
                    lfs_puts, storage_gets = hub.count("lfs_put", 200), hub.count("storage_get", 200)
                    assert (lfs_puts, storage_gets) == ((1, 1) if mode == "lfs" else (0, 0)), (mode, hub.state.log)
                size = sum(p.stat().st_size for p in (work / "local_student").iterdir())
                times[mode]["push"].append(push["seconds"])
                times[mode]["pull"].append(pull["seconds"])

    med = {m: {k: statistics.median(v) for k, v in t.items()} for m, t in times.items()}
    print(f"folder: {size / 2**20:.1f} MiB (model.safetensors above the {args.threshold / 2**20:g} MiB threshold); "
          f"median of {args.repeats}")
    print(f"{'path':<9}{'push s':>9}{'pull s':>9}{'total s':>9}")
    for m in ("regular", "lfs"):
        print(f"{m:<9}{med[m]['push']:>9.2f}{med[m]['pull']:>9.2f}{med[m]['push'] + med[m]['pull']:>9.2f}")
    total = {m: med[m]["push"] + med[m]["pull"] for m in med}
    print(f"ratio lfs/regular: push {med['lfs']['push'] / med['regular']['push']:.2f}, "
          f"pull {med['lfs']['pull'] / med['regular']['pull']:.2f}, total {total['lfs'] / total['regular']:.2f}")


if __name__ == "__main__":
    main()
