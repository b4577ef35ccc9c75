"""Masks and prompts: what the student is trained on, scored on and generates from, token for token.

Every test here runs on tokenizers that behave like real ones (student_tokenizers.py): a Llama-style
Metaspace tokenizer, the byte-level BPE of conftest, one that appends EOS, and the real SmolLM2 tokenizer.
"""

from __future__ import annotations

import copy
import logging
import random

import datasets
import pytest
import torch
from conftest import make_gpt2, make_llama, make_t5, shared_data_or_skip
from student_tokenizers import eos_appending_bpe, llama_style_tokenizer, smollm2_tokenizer
from transformers import GPT2Config, GPT2LMHeadModel

from scott_distill import CounterfactualDataCollator, StudentFormat
from scott_distill.student import evaluation as evaluation_module
from scott_distill.student.encoding import StudentEncoder
from scott_distill.student.evaluation import (
    evaluate_student,
    predict,
    score_answers_given_rationales,
    student_outcomes,
)

ROW = {
    "question": "Where would you keep milk cold?",
    "choices": ["fridge", "oven", "shelf"],
    "answer": "fridge",
    "rationale": "A fridge keeps food cold.",
    "counterfactual_answer": "oven",
    "counterfactual_rationale": "An oven is where milk is kept.",
}
YEAR_ROW = {"question": "When did the war end?", "choices": ["1990", "1880"], "answer": "1990",
            "rationale": "The treaty was signed then.", "counterfactual_answer": "1880",
            "counterfactual_rationale": "The treaty was signed long before."}


def flat(row: dict, counterfactual: bool = False) -> dict:
    if counterfactual:
        return {"question": row["question"], "choices": row["choices"], "answer": row["counterfactual_answer"],
                "rationale": row["counterfactual_rationale"], "is_counterfactual": True}
    return {"question": row["question"], "choices": row["choices"], "answer": row["answer"],
            "rationale": row["rationale"], "is_counterfactual": False}


class Recorder:
    """Wraps a model's ``forward`` and ``generate`` to record the unpadded input ids they receive
    (forward calls made inside ``generate`` are not recorded). The wrapped ``forward`` takes ``**kwargs``, so
    forced-rationale scoring cannot continue a cache with it (`SharedPrefix.unsupported`) and scores every
    sequence whole: ``forward_ids`` holds each scored sequence, the ids under test (the shared-prefix path scores
    the same ids, test_forced_rationale_scores_equal_a_one_sequence_reference)."""

    def __init__(self, model):
        self.forward_ids: list[list[int]] = []
        self.generate_ids: list[list[int]] = []
        self._generating = False
        forward, generate = model.forward, model.generate

        def unpadded(kwargs):
            ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
            return [row[m.bool()].tolist() for row, m in zip(ids, mask)]

        def rec_forward(*args, **kwargs):
            if not self._generating:
                self.forward_ids.extend(unpadded(kwargs))
            return forward(*args, **kwargs)

        def rec_generate(*args, **kwargs):
            self.generate_ids.extend(unpadded(kwargs))
            self._generating = True
            try:
                return generate(*args, **kwargs)
            finally:
                self._generating = False

        model.forward, model.generate = rec_forward, rec_generate


def _tokenizer(kind: str):
    return {"llama": llama_style_tokenizer, "eos": eos_appending_bpe, "smollm2": smollm2_tokenizer}[kind]()


def _prompt_parity(tok, model) -> None:
    """Training ids == scoring ids (prompt + target), and the training prompt == the generation prompt."""
    fmt = StudentFormat()
    collator = CounterfactualDataCollator(tok)
    (train,) = collator.features(flat(ROW))
    prompt_len = next(i for i, t in enumerate(train["labels"]) if t != -100)
    train_prompt = train["input_ids"][:prompt_len]

    rec = Recorder(model)
    score_answers_given_rationales(model, tok, [ROW["question"]], [ROW["choices"]], [ROW["rationale"]], fmt)
    scored = rec.forward_ids[ROW["choices"].index(ROW["answer"])]
    assert scored == train["input_ids"], (tok.convert_ids_to_tokens(scored), tok.convert_ids_to_tokens(train["input_ids"]))

    rows = datasets.Dataset.from_list([{"question": ROW["question"], "choices": ROW["choices"]}])
    predict(model, tok, rows, fmt, max_new_tokens=2, show_progress=False)
    assert rec.generate_ids == [train_prompt], (tok.convert_ids_to_tokens(rec.generate_ids[0]),
                                                tok.convert_ids_to_tokens(train_prompt))
    # the prompt ends with the separator, never with an EOS, and starts with the tokenizer's own BOS if it adds one
    assert tok.eos_token_id not in train_prompt
    with_specials = tok("x")["input_ids"]
    if with_specials[0] in tok.all_special_ids:
        assert train_prompt[0] == with_specials[0]


@pytest.mark.parametrize("kind", ["llama", "eos"])
def test_training_scoring_generation_prompts_are_identical(kind):
    tok = _tokenizer(kind)
    _prompt_parity(tok, make_llama(len(tok)))


def test_training_scoring_generation_prompts_are_identical_byte_level(tokenizer):
    _prompt_parity(tokenizer, make_gpt2(len(tokenizer)))


@pytest.mark.real_model
def test_training_scoring_generation_prompts_are_identical_smollm2():
    tok = smollm2_tokenizer()
    _prompt_parity(tok, make_llama(len(tok)))


def test_metaspace_prompt_has_no_standalone_separator_pieces():
    """The separator is tokenized with the source: no ['▁', '\\n'] pair after the last choice, as in
    ``tokenizer(source + "\\n")``."""
    tok = llama_style_tokenizer()
    (feat,) = CounterfactualDataCollator(tok).features(flat(ROW))
    prompt_len = next(i for i, t in enumerate(feat["labels"]) if t != -100)
    source = StudentFormat().source(ROW["question"], ROW["choices"]) + "\n"
    assert feat["input_ids"][:prompt_len] == tok(source)["input_ids"]


def test_dataset_mixing_rationale_and_flat_rows_keeps_every_example(tokenizer, tmp_path):
    """A JSON-lines file holding both kinds of row loads with ``is_counterfactual=None`` on rationale rows
    (and NaN through pandas): those rows must still give their counterfactual example."""
    import json

    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (ROW, flat(ROW, counterfactual=True))))
    data = datasets.Dataset.from_json(str(path))
    assert data[0]["is_counterfactual"] is None
    batch = CounterfactualDataCollator(tokenizer)(list(data))
    assert batch["is_counterfactual"].tolist() == [False, True, True]
    assert batch["row_index"].tolist() == [0, 0, 1]
    nan_row = {**ROW, "is_counterfactual": float("nan")}
    assert CounterfactualDataCollator(tokenizer)([nan_row])["is_counterfactual"].tolist() == [False, True]


# -- the answer mask --------------------------------------------------------------------------------------


def kept_tokens(tok, labels) -> list[str]:
    return tok.convert_ids_to_tokens([t for t in labels if t != -100])


@pytest.mark.parametrize("kind", ["llama", pytest.param("smollm2", marks=pytest.mark.real_model)])
def test_counterfactual_mask_keeps_standalone_space_before_answer(kind):
    """Llama-style digits: " 1880" is ▁ 1 8 8 0; the ▁ is where the two choices' tokens differ first
    (▁ then 1-9-9-0 vs ▁ then 1-8-8-0 share it, but against a word answer it is the differing token), and
    the reference code trains on it. SmolLM2 (byte-level) has a standalone Ġ before digits."""
    tok = _tokenizer(kind)
    batch = CounterfactualDataCollator(tok)([YEAR_ROW])
    space = "▁" if kind == "llama" else "Ġ"
    assert kept_tokens(tok, batch["labels"][1].tolist()) == [space, "1", "8", "8", "0", tok.eos_token]


def test_choice_ranking_scores_the_same_tokens_as_counterfactual_training(monkeypatch):
    """One rule: the tokens scored for a choice in forced-rationale ranking are the answer tokens a
    counterfactual row with that answer is trained on (the leading ▁ included)."""
    tok = llama_style_tokenizer()
    model = make_llama(len(tok))
    scored_labels = []
    real = evaluation_module.sequence_log_likelihood

    def spy(logits, labels):
        scored_labels.extend(labels.tolist())
        return real(logits, labels)

    monkeypatch.setattr(evaluation_module, "sequence_log_likelihood", spy)
    score_answers_given_rationales(model, tok, [YEAR_ROW["question"]], [YEAR_ROW["choices"]],
                                   [YEAR_ROW["rationale"]])
    batch = CounterfactualDataCollator(tok)([YEAR_ROW])
    trained_1880 = kept_tokens(tok, batch["labels"][1].tolist())
    assert kept_tokens(tok, scored_labels[1]) == trained_1880 == ["▁", "1", "8", "8", "0", "</s>"]
    assert kept_tokens(tok, scored_labels[0]) == ["▁", "1", "9", "9", "0", "</s>"]


# -- truncation --------------------------------------------------------------------------------------------


def _target_len(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"]) + 1


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_long_target_loses_rationale_end_never_the_answer(tokenizer, kind):
    model = make_t5(len(tokenizer)) if kind == "t5" else None
    bare = max(_target_len(tokenizer, "[factual] So the answer is fridge"),
               _target_len(tokenizer, "[counterfactual] So the answer is oven"))
    row = {**ROW, "rationale": "A fridge keeps food cold, so milk stays fresh there for days."}
    full = _target_len(tokenizer, f"[factual] {row['rationale']} So the answer is fridge")
    limit = bare + 2
    assert full > limit + 2
    col = CounterfactualDataCollator(tokenizer, model=model, max_target_length=limit)
    batch = col([row])
    labels = batch["labels"][0].tolist()
    kept = tokenizer.decode([t for t in labels if t != -100])
    assert len([t for t in labels if t != -100]) == limit
    assert kept.startswith("[factual] A") and kept.endswith(" So the answer is fridge</s>"), kept
    assert tokenizer.decode([t for t in batch["labels"][1].tolist() if t != -100]) == " oven</s>"
    assert col.truncation_counts["rationales_cut"] == 2


def test_target_limit_that_would_cut_the_answer_is_refused(tokenizer):
    bare = _target_len(tokenizer, "[factual] So the answer is fridge")
    col = CounterfactualDataCollator(tokenizer, max_target_length=bare - 2)
    with pytest.raises(ValueError, match="max_target_length"):
        col([ROW])
    # the message names the row: by its id, else by the start of its question (a user with thousands of rows must
    # find the one at fault; found by mutation testing: collator.features__mutmut_31 / _35 dropped the name)
    tail = (f"max_target_length={bare - 2} cannot hold the answer: the tag, answer prefix, answer 'fridge' and EOS "
            f"alone take {bare} tokens. Raise `max_target_length`.")
    with pytest.raises(ValueError) as err:
        col([{**ROW, "id": "row-7"}])
    assert str(err.value) == "Row 'row-7': " + tail
    question = "Where in a house with a kitchen, a cellar and a garden would you keep milk cold for a week?"
    with pytest.raises(ValueError) as err:
        col([{**ROW, "question": question}])
    assert str(err.value) == f"Row {question[:60]!r}: " + tail


def test_source_cut_that_would_hide_the_gold_choice_is_refused(tokenizer):
    row = {**ROW, "choices": ["shelf", "oven", "fridge"], "id": "row-7"}
    full = len(tokenizer(StudentFormat().source(row["question"], row["choices"]) + "\n")["input_ids"])
    col = CounterfactualDataCollator(tokenizer, max_source_length=full - 3)
    with pytest.raises(ValueError, match=r"row-7.*max_source_length=\d+.*'fridge'"):
        col([row])


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_source_cut_keeps_the_gold_choice_and_warns_with_counts(tokenizer, kind, caplog):
    model = make_t5(len(tokenizer)) if kind == "t5" else None
    row = {**ROW, "choices": ["fridge", "oven", "shelf", "a very long last choice nobody picks"]}
    row.pop("counterfactual_answer")
    fmt = StudentFormat()
    full = len(tokenizer(fmt.source(row["question"], row["choices"]) + ("" if model else "\n"))["input_ids"])
    col = CounterfactualDataCollator(tokenizer, model=model, max_source_length=full - 4)
    with caplog.at_level(logging.WARNING):
        batch = col([row, row])
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    if model is None:  # decoder-only: the prompt is what precedes the first label
        ids = ids[: next(i for i, t in enumerate(batch["labels"][0].tolist()) if t != -100)]
    assert len(ids) <= full - 4
    assert "(a) fridge" in tokenizer.decode(ids)
    assert any("max_source_length" in r.getMessage() for r in caplog.records)
    assert col.truncation_counts["sources_cut"] == 2 and col.truncation_counts["sources"] == 2


# -- perturbation ------------------------------------------------------------------------------------------


def test_perturbation_changes_exactly_the_asked_share_of_rationale_ids(tokenizer):
    """The perturbed rationale is fed as token ids: the scored sequences differ from the clean ones in
    exactly round(fraction * n_rationale_tokens) positions, all inside the rationale (no re-encoding)."""
    model = make_gpt2(len(tokenizer))
    rows = datasets.Dataset.from_list([ROW, {**ROW, "rationale": "Milk stays cold and fresh in the fridge at home."}])
    rec = Recorder(model)
    preds = [{"rationale": r, "answer": None} for r in rows["rationale"]]
    evaluate_student(model, tokenizer, rows, predictions=preds, perturb_fraction=0.5, seed=3)
    n_choices = len(ROW["choices"])
    # forward calls: gold-rationale scoring, own (clean), own (perturbed); 2 rows x 3 choices each
    clean, perturbed = rec.forward_ids[6:12], rec.forward_ids[12:18]
    for i, rationale in enumerate(rows["rationale"]):
        n_r = len(tokenizer(" " + rationale, add_special_tokens=False)["input_ids"])
        for c in range(n_choices):
            a, b = clean[i * n_choices + c], perturbed[i * n_choices + c]
            assert len(a) == len(b)
            changed = sum(x != y for x, y in zip(a, b))
            assert changed == round(0.5 * n_r), (changed, n_r)
        # the same perturbation for every choice of a row
        diffs = [[k for k, (x, y) in enumerate(zip(clean[i * n_choices + c], perturbed[i * n_choices + c])) if x != y]
                 for c in range(n_choices)]
        assert diffs[0] == diffs[1] == diffs[2]


def test_student_outcomes_are_per_row_and_evaluate_student_is_their_mean(tokenizer):
    """The per-question outcomes a report resamples (results schema 1): one 0/1 per row, keyed by row index;
    counterfactual consistency only on rows with a counterfactual answer; evaluate_student's figures are their
    means (one rule behind both)."""
    model = make_gpt2(len(tokenizer))
    rows = datasets.Dataset.from_list([ROW, {**ROW, "counterfactual_answer": ""}, {**ROW, "answer": "shelf"}])
    preds = [{"rationale": "A fridge keeps food cold.", "answer": "fridge"},
             {"rationale": "Cold things go there.", "answer": None},
             {"rationale": "A fridge keeps food cold.", "answer": "fridge"}]
    outcomes = student_outcomes(model, tokenizer, rows, predictions=preds, seed=1)
    assert outcomes["accuracy"] == {0: 1, 1: 0, 2: 0} and outcomes["unparseable"] == {0: 0, 1: 1, 2: 0}
    assert set(outcomes["counterfactual_consistency"]) == {0, 2}
    for metric in ("accuracy_gold_rationale", "accuracy_perturbed_rationale", "perturbed_answer_changed"):
        assert set(outcomes[metric]) == {0, 1, 2} and set(outcomes[metric].values()) <= {0, 1}
    summary = evaluate_student(model, tokenizer, rows, predictions=preds, seed=1)
    assert summary["n"] == 3 and set(summary) == {"n", *outcomes}
    for metric, per_row in outcomes.items():
        assert summary[metric] == sum(per_row.values()) / len(per_row), metric


def test_perturb_token_ids_exact_share_and_never_a_no_op():
    from scott_distill.student.evaluation import perturb_token_ids

    rng = random.Random(0)
    vocab = list(range(10, 20))
    for n in (1, 2, 7, 40):
        ids = [10 + (i % 10) for i in range(n)]
        for fraction in (0.1, 0.5, 1.0):
            out = perturb_token_ids(ids, fraction, rng, vocab)
            assert sum(a != b for a, b in zip(ids, out)) == max(1, round(fraction * n))
    assert perturb_token_ids([10, 11], 0.0, rng, vocab) == [10, 11]
    with pytest.raises(ValueError, match="fraction"):
        perturb_token_ids([10], 1.5, rng, vocab)



def test_perturb_token_ids_with_a_two_id_vocabulary_and_its_error():
    """Two ids are enough to replace from (each replacement is the other id, so the result is known by hand); one
    is refused with the exact message; nothing to change (no ids, or fraction 0) needs no vocabulary at all, which
    is what the forced scoring passes when it does not perturb."""
    from scott_distill.student.evaluation import perturb_token_ids

    rng = random.Random(0)
    assert perturb_token_ids([5, 5, 6, 6], 1.0, rng, [5, 6]) == [6, 6, 5, 5]
    assert perturb_token_ids([5], 0.5, rng, [6, 5]) == [6]
    for vocab in ([7], []):
        with pytest.raises(ValueError) as err:
            perturb_token_ids([5, 6], 0.5, rng, vocab)
        assert str(err.value) == f"`vocabulary` needs at least 2 token ids to replace from, got {len(vocab)}."
    assert perturb_token_ids([], 1.0, rng, []) == []
    assert perturb_token_ids([5, 6], 0.0, rng, []) == [5, 6]

# -- parsing -----------------------------------------------------------------------------------------------


def test_parse_matches_choices_before_stripping_the_period():
    fmt = StudentFormat()
    choices = ["U.S.A.", "Canada"]
    assert fmt.parse("[factual] It is big. So the answer is U.S.A.", choices) == ("It is big.", "U.S.A.")
    assert fmt.parse("So the answer is Canada.", choices) == ("", "Canada")
    assert fmt.parse("So the answer is Mexico.", choices) == ("", "Mexico")
    assert fmt.parse("So the answer is U.S.A.") == ("", "U.S.A")  # no choices: the old rule
    assert fmt.parse("no prefix here", choices) == ("no prefix here", None)


def test_predict_counts_an_answer_ending_with_a_period_as_correct(tokenizer):
    """Through ``predict`` (the path every metric uses): a choice that ends with "." is recognised."""
    model = _scripted_student(tokenizer, ["[factual] It is big. So the answer is U.S.A."])
    rows = datasets.Dataset.from_list([{"question": "Which country?", "choices": ["U.S.A.", "Canada"],
                                        "answer": "U.S.A."}])
    (pred,) = predict(model, tokenizer, rows, show_progress=False)
    assert pred["answer"] == "U.S.A." and pred["answer_in_choices"]


# -- forced-rationale scores against a one-sequence reference ---------------------------------------------------

SCORE_ROWS = [ROW, {"question": "What tool cuts wood?", "choices": ["saw", "wet towel"], "answer": "saw",
                    "rationale": "A saw has sharp teeth that cut."}]


def _reference_answer_log_likelihoods(model, tok, fmt, rows) -> list[float]:
    """For every (row, choice): log p(answer tokens + EOS | prompt, forced rationale), one unpadded sequence at a
    time, summed by a plain loop. The target ids are tokenized here from the documented text
    ``{tag} {rationale} {prefix} {choice}`` + EOS; the answer is its last len(tok(" " + choice)) + 1 tokens."""
    causal = not model.config.is_encoder_decoder
    out = []
    for row in rows:
        # the suite's BPE adds no special tokens: the prompt is the tokenized text
        src = tok(fmt.source(row["question"], row["choices"]) + ("\n" if causal else ""))["input_ids"]
        for choice in row["choices"]:
            tgt = tok(f"{fmt.factual_tag} {row['rationale']} {fmt.answer_prefix} {choice}",
                      add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            n_answer = len(tok(f" {choice}", add_special_tokens=False)["input_ids"]) + 1
            with torch.no_grad():
                if causal:
                    logits = model(input_ids=torch.tensor([src + tgt])).logits[0]
                    positions = range(len(src) + len(tgt) - n_answer, len(src) + len(tgt))
                    ids = src + tgt
                    total = sum(torch.log_softmax(logits[p - 1], -1)[ids[p]].item() for p in positions)
                else:
                    dec = [model.config.decoder_start_token_id] + tgt[:-1]
                    logits = model(input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([dec])).logits[0]
                    total = sum(torch.log_softmax(logits[p], -1)[tgt[p]].item()
                                for p in range(len(tgt) - n_answer, len(tgt)))
            out.append(total)
    return out


def _scored(monkeypatch) -> list[float]:
    seen: list[float] = []
    real = evaluation_module.sequence_log_likelihood

    def spy(logits, labels):
        scores = real(logits, labels)
        seen.extend(scores.tolist())
        return scores

    monkeypatch.setattr(evaluation_module, "sequence_log_likelihood", spy)
    return seen


SCORE_ROWS_3 = [*SCORE_ROWS, {"question": "Where do fish live?", "choices": ["water", "desert", "tree"],
                               "answer": "water", "rationale": "Fish breathe in water."}]


def _forward_calls(model) -> list[dict]:
    """The keyword arguments of every forward call of ``model``, recorded by a pre-hook: unlike a replaced
    ``forward``, the hook leaves the signature that `SharedPrefix.unsupported` reads as it is."""
    calls: list[dict] = []
    model.register_forward_pre_hook(lambda _module, _args, kwargs: calls.append(kwargs), with_kwargs=True)
    return calls


@pytest.mark.parametrize("kind", ["t5", "gpt2", "llama", "llama-whole"])
@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_forced_rationale_scores_equal_a_one_sequence_reference(tokenizer, monkeypatch, kind, batch_size):
    """Batched, padded scoring (rows with 3, 2 and 3 choices; batches of one row, of a row with more choices than
    the batch size, and of several rows) gives every choice the log-likelihood of its answer tokens and EOS
    computed one sequence at a time, and picks the best choice.

    A decoder-only student reads each row's shared tokens once: a prefix pass over the rows (left-padded, keys
    and values kept) and a pass over every choice's remaining tokens on that cache, shorter than the sequences;
    ``llama-whole``, a model that cannot continue a cache (`SharedPrefix.unsupported`), scores whole sequences.
    """
    model = {"t5": make_t5, "gpt2": make_gpt2}.get(kind, make_llama)(len(tokenizer))
    if kind == "llama-whole":
        monkeypatch.setattr(evaluation_module.SharedPrefix, "unsupported", staticmethod(lambda model: "a reason"))
    fmt = StudentFormat()
    seen = _scored(monkeypatch)
    calls = _forward_calls(model)
    picked = score_answers_given_rationales(model, tokenizer, [r["question"] for r in SCORE_ROWS_3],
                                            [r["choices"] for r in SCORE_ROWS_3],
                                            [r["rationale"] for r in SCORE_ROWS_3], fmt, batch_size=batch_size)
    calls = calls[:]  # the reference's own forward calls come next
    reference = _reference_answer_log_likelihoods(model, tokenizer, fmt, SCORE_ROWS_3)
    assert seen == pytest.approx(reference, abs=1e-4)
    assert len(set(round(s, 3) for s in reference)) == len(reference)  # no ties: the pick is decided
    flat_choices = [c for r in SCORE_ROWS_3 for c in r["choices"]]
    starts = [0, 3, 5, 8]
    best = [max(range(a, b), key=reference.__getitem__) for a, b in zip(starts, starts[1:])]
    assert picked == [flat_choices[i] for i in best]
    chunks = {1: [[3], [2], [3]], 2: [[3], [2], [3]], 5: [[3, 2], [3]]}[batch_size]  # choices per row, per batch
    if kind in ("gpt2", "llama"):  # batches of whole rows
        assert len(calls) == 2 * len(chunks)
        for (prefix, rest), rows in zip(zip(calls[::2], calls[1::2]), chunks):
            assert "cache" not in prefix and prefix["use_cache"] and prefix["input_ids"].shape[0] == len(rows)
            mask, positions = prefix["attention_mask"].tolist(), prefix["position_ids"].tolist()
            for m, pos in zip(mask, positions):  # left-padded, positions over real tokens from 0
                n = sum(m)
                assert m == [0] * (len(m) - n) + [1] * n and pos[len(m) - n :] == list(range(n))
            assert rest["cache"] is not None and rest["input_ids"].shape[0] == sum(rows)
            assert rest["attention_mask"].shape[1] == prefix["input_ids"].shape[1] + rest["input_ids"].shape[1]
            # the choices' own tokens: the answer, EOS and the token before them, not the question again
            assert rest["input_ids"].shape[1] < prefix["input_ids"].shape[1]
    else:
        # whole sequences, right-padded, batch_size at a time across rows: the documented 0/1 mask, 1 on every
        # token of a row, 0 on its padding
        sizes = [min(batch_size, 8 - i) for i in range(0, 8, batch_size)]
        assert [kw["input_ids"].shape[0] for kw in calls] == sizes and all("cache" not in kw for kw in calls)
        for kw in calls:
            for ids, mask in zip(kw["input_ids"].tolist(), kw["attention_mask"].tolist()):
                n = len(ids) - next((i for i, t in enumerate(reversed(ids)) if t != tokenizer.pad_token_id), 0)
                assert mask == [1] * n + [0] * (len(ids) - n)


def test_forced_scoring_keeps_padded_positions_inside_a_learned_position_table(tokenizer):
    """A row with a long shared prefix batched with a row whose choice is long: the short continuation's padded
    columns must not get positions past the sequence's end (GPT-2's learned table has ``n_positions`` rows, here
    exactly the longest sequence: whole-sequence scoring works, and so must the shared-prefix path). Regression:
    the padding counted on from each row's prefix and indexed past the table."""
    fmt = StudentFormat()
    rows = [{"question": " ".join(["fish"] * 5), "choices": ["a", "b"], "rationale": "fish breathe water, " * 3 + "so."},
            {"question": "q", "choices": ["a", "the water of the deep blue sea"], "rationale": "r"}]
    encoder = StudentEncoder(tokenizer, fmt, causal=True)
    lengths = [len(encoder.source_ids(r["question"], r["choices"])) + len(encoder.target(r["rationale"], c).ids)
               for r in rows for c in r["choices"]]
    torch.manual_seed(0)  # a position table exactly as long as the longest sequence
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=max(lengths), n_embd=32, n_layer=2,
                                       n_head=2, bos_token_id=3, eos_token_id=1, pad_token_id=0)).eval()
    args = ([r["question"] for r in rows], [r["choices"] for r in rows], [r["rationale"] for r in rows], fmt)
    expected = [r["choices"][max(range(2), key=s.__getitem__)]
                for r, s in zip(rows, _per_row_reference(model, tokenizer, fmt, rows))]
    assert score_answers_given_rationales(model, tokenizer, *args, batch_size=8, show_progress=False) == expected
    assert score_answers_given_rationales(model, tokenizer, *args, batch_size=1, show_progress=False) == expected


def test_forced_scoring_needs_no_pad_token(tokenizer, monkeypatch):
    """A tokenizer without a pad token: the shared-prefix path pads with a masked stand-in id and scores as the
    one-sequence reference does (the whole-sequence path at batch size 1 never pads). Regression: ``None`` ids."""
    model = make_llama(len(tokenizer))
    unpadded = copy.deepcopy(tokenizer)
    unpadded.pad_token = None
    assert unpadded.pad_token_id is None
    seen = _scored(monkeypatch)
    rows = [{**SCORE_ROWS_3[2], "choices": ["water", "desert bottle"]}]
    score_answers_given_rationales(model, unpadded, [rows[0]["question"]], [rows[0]["choices"]],
                                   [rows[0]["rationale"]], batch_size=4, show_progress=False)
    seen = seen[:]
    assert seen == pytest.approx(_reference_answer_log_likelihoods(model, tokenizer, StudentFormat(), rows), abs=1e-4)


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_forced_scoring_shows_its_progress_bar_only_when_asked(tokenizer, capsys, kind):
    model = make_gpt2(len(tokenizer)) if kind == "gpt2" else make_t5(len(tokenizer))
    args = ([ROW["question"]], [ROW["choices"]], [ROW["rationale"]])
    score_answers_given_rationales(model, tokenizer, *args, show_progress=False)
    assert "score answers" not in capsys.readouterr().err
    score_answers_given_rationales(model, tokenizer, *args)
    assert "score answers: 100%" in capsys.readouterr().err


def test_rows_that_share_no_prefix_are_scored_whole_beside_rows_that_do(tokenizer):
    """A row whose choices share no leading token (or whose first scored token follows the first token) cannot be
    split; in a batch with rows that can, every row still gets its own sequences' scores, in order. The public
    path always has a source to share; `_choice_scores` takes any rows."""
    model = make_llama(len(tokenizer))
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    shared_row = evaluation_module.ChoiceSequences(ids("[factual] Where do fish live?"),
                                                   [ids(" water") + [1], ids(" a dry desert") + [1]],
                                                   [ids(" water") + [1], ids(" a dry desert") + [1]])
    no_source = evaluation_module.ChoiceSequences([], [ids("water fish") + [1], ids("desert sand") + [1]],
                                                  [[-100] + ids(" fish") + [1], [-100] + ids(" sand") + [1]])
    early_label = evaluation_module.ChoiceSequences(ids("Q"), [ids(" yes") + [1], ids(" no") + [1]],
                                                    [ids(" yes") + [1], ids(" no") + [1]])
    rows = [shared_row, no_source, early_label, shared_row]
    assert [evaluation_module._shared_prefix_length(r) for r in rows] == [len(shared_row.source) - 1, 0, 0,
                                                                          len(shared_row.source) - 1]
    with torch.no_grad():
        got = evaluation_module._choice_scores(model, tokenizer, rows, True, batch_size=8)
        want = [[evaluation_module._sequence_scores(model, tokenizer, [r.source + t], [[-100] * len(r.source) + lab],
                                                    True)[0] for t, lab in zip(r.targets, r.labels)] for r in rows]
    assert len(got) == len(rows) and all(g == pytest.approx(w, abs=1e-5) for g, w in zip(got, want))


def _per_row_reference(model, tok, fmt, rows) -> list[list[float]]:
    flat = _reference_answer_log_likelihoods(model, tok, fmt, rows)
    out, k = [], 0
    for r in rows:
        out.append(flat[k : k + len(r["choices"])])
        k += len(r["choices"])
    return out


@pytest.mark.real_model
def test_forced_rationale_scores_of_smollm2_equal_whole_sequence_scores(smollm2, monkeypatch):
    """On the real SmolLM2 and CoS-E dev questions with their human explanations (rows of 2 and 3 choices): the
    shared-prefix scores equal each sequence scored whole and alone, to float rounding, and pick the same choice
    wherever the reference's margin is above that rounding."""
    import pandas as pd

    model, _ = smollm2
    tok = smollm2_tokenizer()
    dev = pd.read_csv(shared_data_or_skip("cose_v1", "dev.csv")).head(12)
    questions, rationales = dev["question"].tolist(), dev["human_exp"].tolist()
    choices = [[r.choice_0, r.choice_1, r.choice_2][: 2 + i % 2] for i, r in enumerate(dev.itertuples())]
    seen = _scored(monkeypatch)
    picks = score_answers_given_rationales(model, tok, questions, choices, rationales, batch_size=8,
                                           show_progress=False)
    seen = seen[:]  # the reference's scores come next
    encoder = StudentEncoder(tok, StudentFormat(), causal=True)
    whole = []
    with torch.no_grad():
        for q, cs, r in zip(questions, choices, rationales):
            source = encoder.source_ids(q, cs)
            for c in cs:
                target = encoder.target(r, c)
                labels = [t if keep else -100 for t, keep in zip(target.ids, target.answer_mask)]
                whole.append(evaluation_module._sequence_scores(model, tok, [source + list(target.ids)],
                                                                [[-100] * len(source) + labels], True)[0])
    assert seen == pytest.approx(whole, abs=2e-4)
    k = 0
    for cs, pick in zip(choices, picks):
        block = whole[k : k + len(cs)]
        k += len(cs)
        ranked = sorted(block, reverse=True)
        if ranked[0] - ranked[1] > 1e-3:
            assert pick == cs[block.index(ranked[0])]


def test_student_outcomes_follow_their_definitions_row_by_row(tokenizer, monkeypatch):
    """Each metric's per-row value by its definition, on rows whose gold / counterfactual answers are set from the
    forced picks so that both outcomes occur; the settings reach every call (a custom format, the seed, the
    perturbed share, the replacement vocabulary: every id but the special ones); free generation runs with the
    configured batch size and budget when no predictions are given."""
    model = make_gpt2(len(tokenizer))
    fmt = StudentFormat(answer_prefix="Hence the answer is")
    base = [ROW, {**ROW, "question": "Where do you bake bread?"}, {**ROW, "question": "Where is milk kept?"}]
    q, c = [r["question"] for r in base], [r["choices"] for r in base]
    picks = score_answers_given_rationales(model, tokenizer, q, c, [r["rationale"] for r in base], fmt)
    cf_picks = score_answers_given_rationales(model, tokenizer, q, c, [r["counterfactual_rationale"] for r in base],
                                              fmt)
    other = [next(x for x in r["choices"] if x != p) for r, p in zip(base, picks)]
    cf_other = [next(x for x in r["choices"] if x != p) for r, p in zip(base, cf_picks)]
    rows = datasets.Dataset.from_list([
        {**base[0], "answer": picks[0], "counterfactual_answer": cf_picks[0]},
        {**base[1], "answer": other[1], "counterfactual_answer": ""},
        {**base[2], "answer": picks[2], "counterfactual_answer": cf_other[2]},
    ])
    preds = [{"rationale": "Cold keeps it.", "answer": picks[0]}, {"rationale": "Bread bakes.", "answer": None},
             {"rationale": "Milk goes in.", "answer": other[2]}]
    calls = []
    real_score = evaluation_module.score_answers_given_rationales

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real_score(*args, **kwargs)

    monkeypatch.setattr(evaluation_module, "score_answers_given_rationales", spy)
    out = student_outcomes(model, tokenizer, rows, fmt, predictions=preds, seed=7, perturb_fraction=0.25)
    assert out["accuracy"] == {0: 1, 1: 0, 2: 0}
    assert out["unparseable"] == {0: 0, 1: 1, 2: 0}
    assert out["accuracy_gold_rationale"] == {0: 1, 1: 0, 2: 1}
    assert out["counterfactual_consistency"] == {0: 1, 2: 0}
    own = [p["rationale"] for p in preds]
    clean = real_score(model, tokenizer, q, c, own, fmt)
    special = set(tokenizer.all_special_ids)
    vocabulary = [i for i in range(len(tokenizer)) if i not in special]
    perturbed = real_score(model, tokenizer, q, c, own, fmt, perturb_fraction=0.25, seed=7, vocabulary=vocabulary)
    assert out["accuracy_perturbed_rationale"] == {i: int(a == g) for i, (a, g) in enumerate(zip(perturbed,
                                                                                                  rows["answer"]))}
    assert out["perturbed_answer_changed"] == {i: int(a != b) for i, (a, b) in enumerate(zip(clean, perturbed))}
    # every call got the format; the perturbed one the seed, the share and the vocabulary
    assert len(calls) == 4 and all(args[5] is fmt for args, _ in calls)
    assert [list(args[4]) for args, _ in calls] == [rows["rationale"], own, own,
                                                   [rows["counterfactual_rationale"][i] for i in (0, 2)]]
    assert calls[2][1] == {"perturb_fraction": 0.25, "seed": 7, "vocabulary": vocabulary}
    assert [kw for _, kw in calls[:2] + calls[3:]] == [{}, {}, {}]

    # no predictions: free generation with the configured batch size and token budget
    seen = []
    real_predict = evaluation_module.predict
    monkeypatch.setattr(evaluation_module, "predict", lambda *a, **k: seen.append((a, k)) or real_predict(*a, **k))
    generated = student_outcomes(model, tokenizer, rows, fmt, batch_size=2, max_new_tokens=3)
    assert seen == [((model, tokenizer, rows, fmt, 2, 3), {})]
    expected = real_predict(model, tokenizer, rows, fmt, batch_size=2, max_new_tokens=3, show_progress=False)
    assert generated["accuracy"] == {i: int(p["answer"] == g) for i, (p, g) in enumerate(zip(expected, rows["answer"]))}


def test_evaluation_config_bounds_and_metrics_without_rationale_columns(tokenizer):
    """perturb_fraction in [0, 1] (both ends allowed), batch size and budget >= 1, with the exact messages; rows
    without a ``rationale`` column get no gold-rationale metric, rows without the counterfactual columns no
    consistency, and the answer-only format no rationale metric at all."""
    from scott_distill.student.evaluation import EvaluationConfig

    for fraction in (0, 1, 0.5):
        assert EvaluationConfig(perturb_fraction=fraction).perturb_fraction == fraction
    for fraction in (1.5, 1.0001, -0.1):
        with pytest.raises(ValueError) as err:
            EvaluationConfig(perturb_fraction=fraction)
        assert str(err.value) == f"`perturb_fraction` must be in [0, 1], got {fraction!r}."
    for kw in ({"batch_size": 0}, {"max_new_tokens": 0}):
        with pytest.raises(ValueError) as err:
            EvaluationConfig(**kw)
        assert str(err.value) == "`batch_size` and `max_new_tokens` must be >= 1."
    assert EvaluationConfig(batch_size=1, max_new_tokens=1).batch_size == 1
    model = make_gpt2(len(tokenizer))
    rows = datasets.Dataset.from_list([{k: ROW[k] for k in ("question", "choices", "answer")}])
    preds = [{"rationale": "Cold.", "answer": "fridge"}]
    assert set(student_outcomes(model, tokenizer, rows, predictions=preds)) == {
        "accuracy", "unparseable", "accuracy_perturbed_rationale", "perturbed_answer_changed"}
    with_rationale = datasets.Dataset.from_list([{k: ROW[k] for k in ("question", "choices", "answer", "rationale")}])
    answer_only = StudentFormat(without_rationale=True)
    assert set(student_outcomes(model, tokenizer, with_rationale, answer_only, predictions=preds)) == {
        "accuracy", "unparseable"}



@pytest.mark.parametrize("entry", ["evaluate_student", "student_outcomes"])
def test_evaluation_settings_come_from_config_then_keywords_and_reach_every_call(tokenizer, monkeypatch, entry):
    """``config`` gives the settings, a keyword overrides its field (``with_overrides``' documented rule), without
    ``config`` the keywords override the defaults; the caller's format reaches every call. Seen where they act:
    ``predict`` gets the batch size and budget, the perturbed forced scoring the share and the seed. Unknown
    settings and a config of another type are refused naming the function called."""
    from scott_distill.student.evaluation import EvaluationConfig

    function = {"evaluate_student": evaluate_student, "student_outcomes": student_outcomes}[entry]
    model = make_gpt2(len(tokenizer))
    fmt = StudentFormat(answer_prefix="Hence the answer is")
    rows = datasets.Dataset.from_list([ROW, {**ROW, "question": "Where is milk kept?"}])
    predicted, scored = [], []
    real_predict, real_score = evaluation_module.predict, evaluation_module.score_answers_given_rationales
    monkeypatch.setattr(evaluation_module, "predict",
                        lambda *a, **k: predicted.append(a[3:]) or real_predict(*a, **k, show_progress=False))
    monkeypatch.setattr(evaluation_module, "score_answers_given_rationales",
                        lambda *a, **k: scored.append((a[5], k.get("perturb_fraction"), k.get("seed")))
                        or real_score(*a, **k))
    config = EvaluationConfig(batch_size=2, max_new_tokens=3, perturb_fraction=0.25, seed=7)
    for args, kwargs, expected in [
        ((fmt, config), {}, ((fmt, 2, 3), (0.25, 7))),
        ((fmt, config), {"seed": 9, "max_new_tokens": 2}, ((fmt, 2, 2), (0.25, 9))),
        ((fmt,), {"config": config, "perturb_fraction": 1.0}, ((fmt, 2, 3), (1.0, 7))),
        ((fmt,), {"batch_size": 1, "seed": 4, "max_new_tokens": 1}, ((fmt, 1, 1), (0.5, 4))),
    ]:
        predicted.clear()
        scored.clear()
        function(model, tokenizer, rows, *args, **kwargs)
        (got_predict,) = predicted
        assert got_predict[0] is fmt and got_predict[1:] == expected[0][1:], (kwargs, got_predict)
        # gold rationale, own rationale (clean), own rationale (perturbed), counterfactual rationale
        assert len(scored) == 4 and all(f is fmt for f, _, _ in scored)
        assert [s[1:] for s in scored] == [(None, None), (None, None), expected[1], (None, None)], kwargs
    with pytest.raises(TypeError) as err:
        function(model, tokenizer, rows, fmt, config, temperature=0.5)
    assert str(err.value) == (f"{entry}() got unknown settings ['temperature']; EvaluationConfig has "
                              "['batch_size', 'max_new_tokens', 'perturb_fraction', 'seed'].")
    with pytest.raises(TypeError) as err:
        function(model, tokenizer, rows, fmt, {"seed": 1})
    assert str(err.value) == f"{entry}(): `config` must be a EvaluationConfig, got dict."


def test_evaluate_student_answer_only_format_and_missing_column_error(tokenizer):
    """The caller's format decides the metrics (an answer-only student has no rationale to force or perturb: only
    accuracy and unparseable, by the documented rule); a dataset without a required column is refused with the exact
    message naming the column and the ones it has."""
    model = make_gpt2(len(tokenizer))
    rows = datasets.Dataset.from_list([ROW])
    preds = [{"rationale": "", "answer": "oven"}]
    answer_only = StudentFormat(without_rationale=True)
    assert evaluate_student(model, tokenizer, rows, answer_only, predictions=preds) == {
        "n": 1, "accuracy": 0.0, "unparseable": 0.0}
    flat_rows = datasets.Dataset.from_list([{"question": ROW["question"], "choices": ROW["choices"]}])
    for function in (evaluate_student, student_outcomes):
        with pytest.raises(ValueError) as err:
            function(model, tokenizer, flat_rows, predictions=preds)
        assert str(err.value) == "`dataset` lacks column 'answer'; it has ['question', 'choices']."

@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_inference_runs_every_forward_without_gradients(tokenizer, kind):
    """``predict``, ``score_answers_given_rationales`` and the teacher's ``contrastive_generate`` build no autograd
    graph (memory on long evaluations), even for a model in training mode with gradients on. None of them is
    decorated with ``@torch.no_grad()`` any more (mutmut does not mutate decorated functions): ``predict`` relies
    on ``generate``, ``contrastive_generate`` on its decoding branch, and the forced-rationale scoring has its own
    ``with`` block (this test fails without it)."""
    from scott_distill import contrastive_generate

    model = {"gpt2": make_gpt2, "t5": make_t5}[kind](len(tokenizer))
    model.train()  # the entry points must not rely on the caller having turned gradients off either
    grad_during_forward: list[bool] = []
    for module in model.modules():  # every submodule: a T5 encoder call or a decoding step goes past the top module
        module.register_forward_hook(lambda *_: grad_during_forward.append(torch.is_grad_enabled()))
    rows = datasets.Dataset.from_list([ROW])
    predict(model, tokenizer, rows, max_new_tokens=2, show_progress=False)
    score_answers_given_rationales(model, tokenizer, [ROW["question"]], [ROW["choices"]], [ROW["rationale"]])
    contrastive_generate(model, tokenizer, ["Q: milk? A: fridge."], ["Q: milk? A: oven."], max_new_tokens=2)
    assert grad_during_forward and not any(grad_during_forward), grad_during_forward
    assert torch.is_grad_enabled()


# -- predict and the forced-rationale scoring against row-by-row references (mutation testing found these bodies
# untested while `@torch.no_grad()` hid them from mutmut) --------------------------------------------------------

CUSTOM_FORMAT = StudentFormat(factual_tag="<<f>>", counterfactual_tag="<<cf>>", answer_prefix="Thus:")
PREDICT_ROWS = [{"question": "Where would you keep milk cold?", "choices": ["fridge", "oven", "shelf"]},
                {"question": "What tool cuts wood?", "choices": ["saw", "towel"]},
                {"question": "Is a whale a mammal or a fish that lives in the deep sea?", "choices": ["mammal", "fish"]}]


def make_bart(vocab_size: int):
    """A tiny BART: an encoder-decoder with *absolute* positions, where padding the source on the wrong side changes
    the output (T5's relative positions make its encoder blind to that)."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    cfg = BartConfig(vocab_size=vocab_size, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
                     pad_token_id=0, eos_token_id=1, bos_token_id=3, decoder_start_token_id=3, forced_eos_token_id=None,
                     tie_word_embeddings=False, init_std=0.2)
    return BartForConditionalGeneration(cfg).eval()


@pytest.mark.parametrize("kind", ["gpt2", "t5", "bart"])
def test_predict_equals_greedy_generation_row_by_row(tokenizer, kind):
    """Batches of 2 (left padding for a decoder-only student, right for an encoder-decoder) give what one unpadded
    greedy ``generate`` per row gives, with the caller's token budget and the tokenizer's pad and EOS, whatever the
    model's generation config says (here: sampling, a one-token budget, another EOS)."""
    from scott_distill.student.encoding import StudentEncoder

    model = {"gpt2": make_gpt2, "t5": make_t5, "bart": make_bart}[kind](len(tokenizer))
    model.generation_config.update(do_sample=True, temperature=5.0, top_k=0, max_new_tokens=1, eos_token_id=7,
                                   pad_token_id=5)
    real_generate = model.generate
    calls: list[dict] = []

    def spy(**kwargs):
        calls.append({k: kwargs.get(k) for k in ("max_new_tokens", "do_sample", "pad_token_id", "eos_token_id")})
        return real_generate(**kwargs)

    model.generate = spy
    rows = datasets.Dataset.from_list(PREDICT_ROWS)
    got = predict(model, tokenizer, rows, CUSTOM_FORMAT, batch_size=2, max_new_tokens=4, show_progress=False)
    assert calls == [{"max_new_tokens": 4, "do_sample": False, "pad_token_id": tokenizer.pad_token_id,
                      "eos_token_id": tokenizer.eos_token_id}] * 2

    encoder = StudentEncoder(tokenizer, CUSTOM_FORMAT, causal=kind == "gpt2")
    for row, pred in zip(PREDICT_ROWS, got, strict=True):
        ids = torch.tensor([encoder.source_ids(row["question"], row["choices"])])
        out = real_generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, ids.shape[1]:] if kind == "gpt2" else out[0], skip_special_tokens=True)
        rationale, answer = CUSTOM_FORMAT.parse(text, row["choices"])
        assert pred == {"rationale": rationale, "answer": answer, "answer_in_choices": answer in row["choices"],
                        "output": text}


def _scripted_student(tokenizer, outputs: list[str]):
    """A GPT-2 whose ``generate`` appends the next of ``outputs`` (then EOS) to each row: parsing and counting, not
    the model, are under test."""
    model = make_gpt2(len(tokenizer))
    queue = list(outputs)

    def scripted(input_ids, **kwargs):
        tails = [tokenizer(queue.pop(0), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                 for _ in range(input_ids.shape[0])]
        width = max(map(len, tails))
        tails = [t + [tokenizer.pad_token_id] * (width - len(t)) for t in tails]
        return torch.cat([input_ids, torch.tensor(tails)], dim=1)

    model.generate = scripted
    return model


def test_predict_parses_with_the_given_format_and_counts_the_unparseable(tokenizer, caplog):
    outputs = ["<<f>> It keeps food cold. Thus: fridge", "<<f>> Saws cut. So the answer is saw", "no answer at all"]
    model = _scripted_student(tokenizer, outputs)
    rows = datasets.Dataset.from_list(PREDICT_ROWS)
    with caplog.at_level(logging.WARNING, logger="scott_distill.student.evaluation"):
        got = predict(model, tokenizer, rows, CUSTOM_FORMAT, batch_size=1, show_progress=False)
    assert [p["answer"] for p in got] == ["fridge", None, None]
    assert got[0]["rationale"] == "It keeps food cold." and got[0]["answer_in_choices"]
    assert [p["output"] for p in got] == outputs
    assert [r.getMessage() for r in caplog.records] == ["2 of 3 student outputs have no 'Thus: ...' answer."]


def test_predict_shows_a_progress_bar_unless_told_not_to(tokenizer, capsys):
    rows = datasets.Dataset.from_list(PREDICT_ROWS)
    predict(_scripted_student(tokenizer, ["Thus: fridge"] * 3), tokenizer, rows, CUSTOM_FORMAT)
    assert "predict: 100%" in capsys.readouterr().err
    predict(_scripted_student(tokenizer, ["Thus: fridge"] * 3), tokenizer, rows, CUSTOM_FORMAT, show_progress=False)
    assert "predict" not in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
@pytest.mark.parametrize(("batch_size", "row_batches", "flat_batches"), [
    (1, [2, 3, 2], [1] * 7), (3, [2, 3, 2], [3, 3, 1]), (5, [5, 2], [5, 2]), (7, [7], [7])])
def test_forced_scoring_picks_each_rows_best_choice_from_its_own_block(tokenizer, monkeypatch, kind, batch_size,
                                                                      row_batches, flat_batches):
    """Rows with different numbers of choices: each row's pick comes from its own choices' scores (the scores are
    scripted: the bookkeeping is under test). The shared-prefix path (GPT-2) batches whole rows, a row with more
    choices than the batch size alone; the whole-sequence path (T5) cuts rows across batches of exactly
    ``batch_size`` sequences, so a small batch size still bounds its memory."""
    wanted = [1, 2, 0]
    choices = [["a", "b"], ["c", "d", "e"], ["f", "g"]]
    scripted = [1.0 if j == w else 0.0 for cs, w in zip(choices, wanted) for j in range(len(cs))]
    given: list[int] = []

    def whole(model, tokenizer, ids, labels, causal):
        assert causal == (kind == "gpt2")
        given.append(len(ids))
        start = sum(given[:-1])
        return scripted[start : start + len(ids)]

    def shared(model, tokenizer, rows, lengths):
        assert len(lengths) == len(rows) and all(n > 0 for n in lengths)
        given.append(sum(len(r.targets) for r in rows))
        out, k = [], sum(given[:-1])
        for r in rows:
            out.append(scripted[k : k + len(r.targets)])
            k += len(r.targets)
        return out

    monkeypatch.setattr(evaluation_module, "_sequence_scores", whole)
    monkeypatch.setattr(evaluation_module, "_shared_prefix_scores", shared)
    model = make_gpt2(len(tokenizer)) if kind == "gpt2" else make_t5(len(tokenizer))
    picks = score_answers_given_rationales(model, tokenizer, ["q1", "q2", "q3"], choices, ["r1", "r2", "r3"],
                                           batch_size=batch_size)
    assert picks == ["b", "e", "f"] and given == (row_batches if kind == "gpt2" else flat_batches)


def _span(seq: list[int], part: list[int]) -> int:
    return next(i for i in range(len(seq) - len(part) + 1) if seq[i : i + len(part)] == part)


def test_forced_scoring_defaults_perturb_with_seed_0_over_the_whole_vocabulary(tokenizer):
    """Without ``seed`` and ``vocabulary``, the perturbed rationale ids are those of ``perturb_token_ids`` with
    ``random.Random(0)`` over every non-special token, and the sequences are written in the given format."""
    from scott_distill.student.evaluation import perturb_token_ids, replacement_vocabulary

    model = make_gpt2(len(tokenizer))
    q, cs, r = ROW["question"], ROW["choices"], ROW["rationale"]
    rec = Recorder(model)
    score_answers_given_rationales(model, tokenizer, [q], [cs], [r], CUSTOM_FORMAT)
    score_answers_given_rationales(model, tokenizer, [q], [cs], [r], CUSTOM_FORMAT, perturb_fraction=0.5)
    clean, perturbed = rec.forward_ids[: len(cs)], rec.forward_ids[len(cs) :]
    assert "<<f>>" in tokenizer.decode(clean[0]) and "Thus:" in tokenizer.decode(clean[0])
    r_ids = tokenizer(" " + r, add_special_tokens=False)["input_ids"]
    start = _span(clean[0], r_ids)
    expected = perturb_token_ids(r_ids, 0.5, random.Random(0), replacement_vocabulary(tokenizer))
    for c, p in zip(clean, perturbed, strict=True):
        assert p == c[:start] + expected + c[start + len(r_ids) :]
