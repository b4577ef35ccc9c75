"""Few-shot rationalization prompts: the answer comes first, then the rationale the teacher writes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ..formats import answer_sentence, format_choices

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["QUERY_TEMPLATE", "RationalePrompt", "load_prompt"]

# The query the teacher continues. `answer_sentence` is "The answer is X." or "" for the empty perturbation
# (scott_distill.formats.answer_sentence).
QUERY_TEMPLATE = "Q: {question}\nAnswer Choices: {choices}\nA: {answer_sentence}"


@dataclass(frozen=True)
class RationalePrompt:
    """Exemplars plus a query template with the placeholders ``{question}``, ``{choices}``, ``{answer}``
    and ``{answer_sentence}``."""

    exemplars: str
    query_template: str = QUERY_TEMPLATE
    stop: str = "\n"

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256((self.exemplars + "\x00" + self.query_template).encode()).hexdigest()[:16]

    def query(self, question: str, choices: list[str], answer: str | None) -> str:
        return self.query_template.format(question=question, choices=format_choices(choices),
                                          answer=answer or "", answer_sentence=answer_sentence(answer))

    def render(
        self,
        question: str,
        choices: list[str],
        answer: str | None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        use_chat_template: bool = False,
    ) -> str:
        """The full prompt; with ``use_chat_template`` the exemplars and question go in a user turn and the
        answer sentence opens the assistant turn."""
        text = self.query(question, choices, answer)
        if not use_chat_template:
            # no trailing space: BPE vocabularies start words with their leading space
            head = f"{self.exemplars.rstrip()}\n\n" if self.exemplars.strip() else ""
            return f"{head}{text}".rstrip()
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("`use_chat_template=True` needs a tokenizer with a chat template.")
        head, _, _ = text.rpartition("A:")
        messages = [{"role": "user", "content": f"{self.exemplars.rstrip()}\n\n{head.rstrip()}"}]
        chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert isinstance(chat, str)  # tokenize=False renders text
        return chat + answer_sentence(answer)

    def clean(self, generated: str) -> str:
        """Cut the teacher's continuation at the stop sequence and drop exemplar formatting."""
        text = generated.split(self.stop)[0] if self.stop else generated
        for marker in ("Q:", "Answer Choices:"):
            text = text.split(marker)[0]
        return text.strip()


def _packaged_prompt_names() -> list[str]:
    return sorted(p.name[: -len(".txt")] for p in (resources.files("scott_distill.teacher") / "prompts").iterdir()
                  if p.name.endswith(".txt"))


def _prompt_text(spec: str) -> str:
    """The text ``spec`` names: a task's packaged prompt, a template written out, or a prompt file."""
    names = _packaged_prompt_names()
    if spec in names:
        return (resources.files("scott_distill.teacher") / "prompts" / f"{spec}.txt").read_text()
    # a template or exemplar text has line breaks or placeholders; a task name or a file path has neither
    if "\n" in spec or "{" in spec:
        return spec
    if Path(spec).is_file():
        return Path(spec).read_text()
    raise ValueError(
        f"`prompt` {spec!r} is neither a task ({', '.join(names)}), nor an existing prompt file, nor a template "
        "(a template has a line break or the {question} placeholder)."
    )


def load_prompt(spec: str) -> RationalePrompt:
    """A task name (``csqa``, ``strategyqa``, ``creak``, ``qasc``, ``cose``), a file path, or a template string.

    A string with a line break or a ``{`` is prompt text; any other string names a task or a file. Text
    without ``{question}`` is taken as exemplars and the default query template is appended; text with it
    is a full template (its exemplars included) using the placeholders above.
    """
    text = _prompt_text(spec)
    if "{question}" in text:
        if "Q: {question}" in text:  # exemplars, then the query in the default layout
            head, _, tail = text.rpartition("Q: {question}")
            return RationalePrompt(exemplars=head, query_template="Q: {question}" + tail)
        return RationalePrompt(exemplars="", query_template=text)
    if not text.strip():
        raise ValueError("The rationalization prompt is empty.")
    return RationalePrompt(exemplars=text)
