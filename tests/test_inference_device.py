"""Where the library runs a model itself (the teacher, an evaluated student) it puts it on the GPU when there is one.

Found on an H200 (docs/real_run.md): a recipe's students trained on the GPU (``Trainer`` places them), but the
``evaluate`` stage reloaded each saved student with ``from_pretrained``, which leaves it on the CPU, and generated
there on one core: 45-50 s per batch of 128 instead of about a second. This machine has no GPU, so CUDA is faked
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


def install_fake_gpu(monkeypatch) -> list[str]:
    """CUDA device 0 'available'; ``.to("cuda:0")`` is recorded (the model's class name) and leaves it where it is.
    Installed after building any ``TrainingArguments``, which would try to select the fake device."""
    moved: list[str] = []
    real_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        if args and str(args[0]) == "cuda:0":
            moved.append(type(self).__name__)
            return self
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.nn.Module, "to", to)
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
    assert reached.value.args == (["T5ForConditionalGeneration"], False)  # on the GPU, in eval mode


def test_a_recipes_evaluate_stage_runs_the_student_on_the_gpu(monkeypatch, saved_student, tmp_path):
    recipe = Recipe(RecipeConfig.from_dict({"task": "cose", "output_dir": str(tmp_path / "run")}))
    moved = install_fake_gpu(monkeypatch)
    monkeypatch.setattr(Recipe, "rationalize", lambda self: {"eval": None, "train": None})
    monkeypatch.setattr(Recipe, "train", lambda self, seed=None: saved_student)
    monkeypatch.setattr(recipes.StudentSeed, "student_dir", property(lambda self: saved_student))
    _stop_at_predict(monkeypatch, recipes, moved)
    with pytest.raises(Reached) as reached:
        recipe.evaluate()
    assert reached.value.args == (["T5ForConditionalGeneration"], False)


def test_the_teacher_runs_on_the_gpu(monkeypatch, saved_student):
    from scott_distill.checkpoints import load_teacher

    moved = install_fake_gpu(monkeypatch)
    model, _ = load_teacher(str(saved_student))
    assert moved == ["T5ForConditionalGeneration"] and not model.training
