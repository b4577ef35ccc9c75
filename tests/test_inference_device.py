"""Where the library runs a model itself (the teacher, an evaluated student) it puts it on the GPU when there is one.

Found on an H200 (docs/real_run.md): a recipe's students trained on the GPU (``Trainer`` places them), but the
``evaluate`` stage reloaded each saved student with ``from_pretrained``, which leaves it on the CPU, and generated
there: about 47 s per batch of 128 with twelve runs sharing the machine. This machine has no GPU, so CUDA is faked
here (``torch.cuda.is_available`` and a ``Module.to`` that records ``cuda:0`` moves instead of making them);
tests/test_cuda.py runs models on a real GPU.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_t5

import scott_distill.commands.evaluate as evaluate_command
import scott_distill.recipes as recipes
from scott_distill import RationaleStudent
from scott_distill.commands.evaluate import EvaluateArguments
from scott_distill.recipes import Recipe, RecipeConfig
from scott_distill.student.evaluation import EvaluationConfig


class Reached(Exception):
    """Raised where the student's predictions would start: the test has seen what it needs."""


def install_fake_gpu(monkeypatch, count: int = 2) -> list[str]:
    """``count`` CUDA devices 'available' (the current one 0); ``.to("cuda...")`` is recorded (the model's class
    and the device) and leaves the model where it is. Installed after building any ``TrainingArguments``, which
    would try to select the fake device."""
    moved: list[str] = []
    real_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        if args and str(args[0]).startswith("cuda"):
            moved.append(f"{type(self).__name__} {args[0]}")
            return self
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.nn.Module, "to", to)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return moved


def _stop_at_predict(monkeypatch, module, moved):
    def predict(model, *args, **kwargs):
        raise Reached(list(moved), model.training)

    monkeypatch.setattr(module, "predict", predict)


@pytest.fixture
def saved_student(tmp_path, tokenizer):
    folder = tmp_path / "student"
    RationaleStudent(make_t5(len(tokenizer)).train(), tokenizer).save_pretrained(folder)
    return folder


def test_scott_distill_evaluate_runs_the_student_on_the_gpu(monkeypatch, saved_student, tmp_path):
    _stop_at_predict(monkeypatch, evaluate_command, install_fake_gpu(monkeypatch))
    data = tmp_path / "rows.jsonl"
    data.write_text('{"question": "Where do fish live?", "choices": ["water", "desert"], "answer": "water"}\n')
    with pytest.raises(Reached) as reached:
        evaluate_command.run(EvaluateArguments(model_name_or_path=str(saved_student), data=str(data)),
                             EvaluationConfig())
    assert reached.value.args == (["T5ForConditionalGeneration cuda:0"], False)  # on the GPU, in eval mode


def _evaluate_stage_until_predict(monkeypatch, recipe, saved_student, moved) -> tuple:
    """Run ``recipe.evaluate()`` on ``saved_student`` (no rationales, no training) up to its predictions: the moves
    recorded so far and whether the student was in training mode."""
    monkeypatch.setattr(Recipe, "rationalize", lambda self: {"eval": None, "train": None})
    monkeypatch.setattr(Recipe, "train", lambda self, seed=None: saved_student)
    monkeypatch.setattr(recipes.StudentSeed, "student_dir", property(lambda self: saved_student))
    _stop_at_predict(monkeypatch, recipes, moved)
    with pytest.raises(Reached) as reached:
        recipe.evaluate()
    return reached.value.args


def test_a_recipes_evaluate_stage_runs_the_student_on_the_gpu(monkeypatch, saved_student, tmp_path):
    recipe = Recipe(RecipeConfig.from_dict({"task": "cose", "output_dir": str(tmp_path / "run")}))
    moved = install_fake_gpu(monkeypatch)
    assert _evaluate_stage_until_predict(monkeypatch, recipe, saved_student, moved) == (
        ["T5ForConditionalGeneration cuda:0"], False)


def test_the_teacher_runs_on_the_gpu(monkeypatch, saved_student):
    from scott_distill.checkpoints import load_teacher

    moved = install_fake_gpu(monkeypatch)
    model, _ = load_teacher(str(saved_student))
    assert moved == ["T5ForConditionalGeneration cuda:0"] and not model.training


def test_under_torchrun_each_process_uses_its_own_gpu(monkeypatch, saved_student, caplog):
    """``LOCAL_RANK`` names the process's card (nothing in the library calls ``torch.cuda.set_device``, so the
    current device is 0 in every process): the teacher of rank 1 goes to cuda:1, not onto rank 0's card; a rank
    beyond the visible cards falls back to the current one."""
    from scott_distill.checkpoints import load_teacher

    moved = install_fake_gpu(monkeypatch, count=2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    load_teacher(str(saved_student))
    assert "shares" not in caplog.text
    monkeypatch.setenv("LOCAL_RANK", "5")
    load_teacher(str(saved_student))
    assert moved == ["T5ForConditionalGeneration cuda:1", "T5ForConditionalGeneration cuda:0"]
    assert "LOCAL_RANK 5 but 2 GPUs visible: this process shares cuda:0 with another" in caplog.text


def test_an_explicit_placement_is_kept(monkeypatch, saved_student, tmp_path):
    """``device=`` (the evaluate command's ``--device``), a recipe trained with ``use_cpu``, a model placed with
    ``device_map`` or already on a card: none is moved to the default GPU."""
    from scott_distill.checkpoints import to_inference_device
    from scott_distill.student.model import load_student_for_inference

    recipe = Recipe(RecipeConfig.from_dict({"task": "cose", "output_dir": str(tmp_path / "run"),
                                            "train": {"use_cpu": True}}))
    moved = install_fake_gpu(monkeypatch)
    load_student_for_inference(str(saved_student), device="cpu")
    load_student_for_inference(str(saved_student), device="cuda:1")
    assert moved == ["T5ForConditionalGeneration cuda:1"]
    load_student_for_inference(str(saved_student), device_map="cpu")  # from_pretrained places it: left there
    assert moved == ["T5ForConditionalGeneration cuda:1"]
    model = make_t5(8)
    model.hf_device_map = {"": "cpu"}
    assert to_inference_device(model) is model and len(moved) == 1

    assert _evaluate_stage_until_predict(monkeypatch, recipe, saved_student, moved) == (
        ["T5ForConditionalGeneration cuda:1"], False)  # nothing new: on the CPU


def test_a_reloaded_student_and_judge_run_on_the_gpu_unless_told_otherwise(monkeypatch, saved_student, tmp_path,
                                                                           tokenizer):
    # `RationaleStudent.from_pretrained(...).explain` and a judge read back from its folder ran on the CPU of a GPU
    # machine: from_pretrained leaves a model there
    from scott_distill.las.judge import RationaleJudge

    judge_dir = tmp_path / "judge"
    RationaleJudge(make_t5(len(tokenizer), seed=3).train(), tokenizer, ["q1"], {"settings": {}}).save_pretrained(
        judge_dir)
    moved = install_fake_gpu(monkeypatch)
    student = RationaleStudent.from_pretrained(saved_student)
    judge = RationaleJudge.from_pretrained(judge_dir)
    assert moved == ["T5ForConditionalGeneration cuda:0"] * 2
    assert not student.model.training and not judge.model.training
    moved.clear()
    RationaleStudent.from_pretrained(saved_student, device="cpu")
    RationaleJudge.from_pretrained(judge_dir, device="cpu")
    assert moved == []
