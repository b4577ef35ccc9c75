"""Review of shared-prefix KV reuse (issue #16) by misuse: teachers whose generation config changes what
``generate`` does with a given cache, right-padded prompts handed to ``SharedPrefix.generate_inputs``, and
settings given as strings (YAML, environment variables). Each test failed before its fix."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import make_gpt2, make_llama, shared_data_or_skip

import scott_distill.teacher.rationalize as rationalize_module
from scott_distill import CounterfactualTrainingArguments, LASConfig, RationalizeConfig, generate_rationales
from scott_distill.las.judge import JudgeConfig
from scott_distill.recipes import RecipeConfig
from scott_distill.tasks import load_task
from scott_distill.teacher._branch import SharedPrefix

FEW_SHOT = ("Q: what is the color of the sky? A: blue because the sky scatters light.\n"
            "Q: what do cats eat? A: fish")
PROMPTS = [FEW_SHOT + " x y z because", FEW_SHOT + " and dogs? because it is"]


def _llama(tokenizer):
    # a larger init, so that tokens depend on the exact keys and positions (see tests/test_shared_prefix.py)
    return make_llama(len(tokenizer), initializer_range=0.2)


@pytest.fixture(scope="module")
def cose_rows():
    return load_task("cose", str(shared_data_or_skip("cose_v1", "dev.csv"))).select(range(3))


def _greedy(model, inputs, tokenizer, **kw):
    out = model.generate(**inputs, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id, **kw)
    return out[:, inputs["input_ids"].shape[1]:]


def test_generate_inputs_continue_the_prefix_cache_when_the_teacher_disables_caching(tokenizer):
    """A teacher whose ``generation_config.use_cache`` is False (a checkpoint saved after gradient-checkpointed
    training): ``generate`` without a cache recomputes every step, but handed the prefix's cache it appended the
    whole sequence again every step, and rows drifted from the 5th token on (Llama)."""
    model = _llama(tokenizer)
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    reference = _greedy(model, enc, tokenizer)
    model.generation_config.use_cache = False
    prefix = SharedPrefix.of(model, tokenizer(PROMPTS)["input_ids"])
    assert prefix is not None
    assert torch.equal(_greedy(model, prefix.generate_inputs(enc["input_ids"], enc["attention_mask"]), tokenizer),
                       reference)


@pytest.mark.parametrize("use_fused", [True, False])
def test_generate_rationales_same_rows_when_the_teacher_disables_caching(cose_rows, tokenizer, use_fused):
    """The same through ``generate_rationales``: the plain-greedy baseline (``perturbation="none"``) and the
    processor path run the gold branch through ``generate``."""
    model = _llama(tokenizer)
    model.generation_config.use_cache = False
    settings = dict(task="cose", max_new_tokens=16, show_progress=False, batch_size=3, counterfactual=True,
                    use_fused=use_fused, perturbation="none" if use_fused else "wrong")
    off = generate_rationales(cose_rows, model, tokenizer, reuse_prefix=False, **settings)
    on = generate_rationales(cose_rows, model, tokenizer, **settings)
    assert on.to_list() == off.to_list()


def test_generate_inputs_of_right_padded_prompts_are_re_padded(tokenizer):
    """GPT-2 / Llama tokenizers pad on the right by default. The processor and the fused path move right padding to
    the left; ``generate_inputs`` cut the prefix off and left ``[prefix][suffix][pad]``, so ``generate`` continued
    from a pad token (wrong rows, only a warning)."""
    model = _llama(tokenizer)
    left = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert tokenizer.padding_side == "left" and int(left["attention_mask"][:, 0].min()) == 0
    prefix = SharedPrefix.of(model, tokenizer(PROMPTS)["input_ids"])
    assert prefix is not None
    tokenizer.padding_side = "right"
    try:
        right = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = "left"
    assert int(right["attention_mask"][:, -1].min()) == 0
    from_right = prefix.generate_inputs(right["input_ids"], right["attention_mask"])
    from_left = prefix.generate_inputs(left["input_ids"], left["attention_mask"])
    assert torch.equal(from_right["input_ids"], from_left["input_ids"])
    assert torch.equal(from_right["attention_mask"], from_left["attention_mask"])
    assert torch.equal(_greedy(model, from_right, tokenizer), _greedy(model, left, tokenizer))


def test_a_teacher_asking_generate_for_another_cache_keeps_the_whole_prompt_path(cose_rows, tokenizer, caplog):
    """``generation_config.cache_implementation`` (HF's static-cache + torch.compile recipe, a quantized cache)
    cannot continue a given DynamicCache: ``generate`` refused the prefix's cache ("Passing both
    `cache_implementation` ... and `cache`"), so the default-on reuse broke the processor path and the
    ``perturbation="none"`` baseline that ran without it. No reuse then, said in the log, same rows."""
    model = make_gpt2(len(tokenizer))
    model.generation_config.cache_implementation = "static"
    settings = dict(task="cose", max_new_tokens=6, show_progress=False, batch_size=3, use_fused=False)
    with caplog.at_level(logging.INFO, logger=rationalize_module.__name__):
        on = generate_rationales(cose_rows, model, tokenizer, **settings)
    assert any("No shared-prefix reuse" in r.getMessage() and "cache_implementation" in r.getMessage()
               for r in caplog.records)
    off = generate_rationales(cose_rows, model, tokenizer, reuse_prefix=False, **settings)
    assert on.to_list() == off.to_list()
    for implementation in ("static", "quantized", "offloaded_static"):  # quantized needs quanto/hqq to run
        model.generation_config.cache_implementation = implementation
        assert "cache_implementation" in SharedPrefix.unsupported(model)
        with pytest.raises(ValueError, match="cache_implementation"):
            SharedPrefix(model, [1, 2, 3])
    model.generation_config.cache_implementation = "dynamic"  # what the prefix's cache is: reuse stays on
    assert SharedPrefix.unsupported(model) == ""


@pytest.mark.parametrize("name", ["reuse_prefix", "counterfactual", "use_fused", "use_chat_template"])
@pytest.mark.parametrize("value", ["false", "no", 0, None])
def test_switches_given_as_strings_or_numbers_are_refused(name, value):
    """Through the Python API (``generate_rationales(..., reuse_prefix=os.environ[...])``, or a recipe loaded with
    ``RecipeConfig.from_dict(yaml.safe_load(...))`` holding a quoted ``reuse_prefix: "false"``) a string is truthy:
    it kept reuse on (and ``counterfactual: "false"`` kept the counterfactual jobs) without a word. The commands
    parse such values through their flags' types already (``--reuse_prefix false``); a config needs bools."""
    with pytest.raises(ValueError, match=f"`{name}` must be True or False"):
        RationalizeConfig(**{name: value})
    with pytest.raises(ValueError, match=f"`{name}` must be True or False"):
        RecipeConfig.from_dict({"task": "cose", "rationalize": {name: value}})
    assert getattr(RationalizeConfig(**{name: False}), name) is False


@pytest.mark.parametrize("expansion", [dict(num_beams=3), dict(do_sample=True, num_return_sequences=2)])
def test_generate_expanding_rows_without_expand_names_the_argument(tokenizer, expansion):
    """``generate`` expands the ids to num_beams / num_return_sequences rows but not a given cache. Forgetting
    ``expand=`` failed deep inside the attention with "Sizes of tensors must match except in dimension 2"."""
    model = _llama(tokenizer)
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    prefix = SharedPrefix.of(model, tokenizer(PROMPTS)["input_ids"])
    assert prefix is not None
    with pytest.raises(ValueError, match=r"runs \d+ rows .* copied for 2 .*`expand=`"):
        model.generate(**prefix.generate_inputs(enc["input_ids"], enc["attention_mask"]), max_new_tokens=2,
                       pad_token_id=tokenizer.pad_token_id, **expansion)
    rows = expansion.get("num_beams", 1) * expansion.get("num_return_sequences", 1)
    out = model.generate(**prefix.generate_inputs(enc["input_ids"], enc["attention_mask"],
                                                  expand=expansion.get("num_beams") or rows),
                         max_new_tokens=2, pad_token_id=tokenizer.pad_token_id, **expansion)
    assert out.shape[0] == 2 * expansion.get("num_return_sequences", 1)


@pytest.mark.parametrize("name", ["push_to_hub", "private"])
def test_recipe_run_switches_given_as_strings_are_refused(name):
    """The same rule for a recipe's top level in the Python API: a quoted ``push_to_hub: "false"`` pushed (and
    ``private: "false"`` made the repos private)."""
    with pytest.raises(ValueError, match=f"`{name}` must be True or False"):
        RecipeConfig.from_dict({"task": "cose", name: "false"})
    assert getattr(RecipeConfig.from_dict({"task": "cose", name: False}).run, name) is False


@pytest.mark.parametrize(("config", "name"), [("las", "save_simulator"), ("train", "without_rationale"),
                                              ("train", "bf16"), ("judge", "bf16")])
def test_training_and_las_switches_given_as_strings_are_refused(config, name, tmp_path):
    """The same rule for the argument classes built in Python from YAML or the environment: a quoted
    ``save_simulator: "false"`` kept saving, ``without_rationale: "false"`` trained answer-only students,
    and ``bf16: "false"`` (a `TrainingArguments` field) turned mixed precision on."""
    cls = {"las": LASConfig, "train": CounterfactualTrainingArguments, "judge": JudgeConfig}[config]
    with pytest.raises(ValueError, match=f"`{name}` must be True or False"):
        cls(output_dir=str(tmp_path), **{name: "false"})
    assert getattr(cls(output_dir=str(tmp_path), **{name: False}), name) is False
