"""Few-shot rationalization prompts: the answer comes first, then the rationale the teacher writes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from ..collator import format_choices

__all__ = ["QUERY_TEMPLATE", "RationalePrompt", "load_prompt"]

# The query the teacher continues. `answer_sentence` is "The answer is X." or "" for the empty perturbation.
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
        sentence = f"The answer is {answer}." if answer else ""
        return self.query_template.format(question=question, choices=format_choices(choices),
                                          answer=answer or "", answer_sentence=sentence)

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
        return chat + (f"The answer is {answer}." if answer else "")

    def clean(self, generated: str) -> str:
        """Cut the teacher's continuation at the stop sequence and drop exemplar formatting."""
        text = generated.split(self.stop)[0] if self.stop else generated
        for marker in ("Q:", "Answer Choices:"):
            text = text.split(marker)[0]
        return text.strip()


def load_prompt(spec: str) -> RationalePrompt:
    """A task name (``csqa``, ``strategyqa``, ``creak``, ``qasc``, ``cose``), a file path, or a string.

    Text without ``{question}`` is taken as exemplars and the default query template is appended; text
    with it is a full template (its exemplars included) using the placeholders above.
    """
    package_file = resources.files("scott_distill.tasks") / "prompts" / f"{spec}.txt"
    if package_file.is_file():
        text = package_file.read_text()
    elif len(spec) < 4096 and Path(spec).is_file():
        text = Path(spec).read_text()
    else:
        text = spec
    if "{question}" in text:
        if "Q: {question}" in text:  # exemplars, then the query in the default layout
            head, _, tail = text.rpartition("Q: {question}")
            return RationalePrompt(exemplars=head, query_template="Q: {question}" + tail)
        return RationalePrompt(exemplars="", query_template=text)
    if not text.strip():
        raise ValueError("The rationalization prompt is empty.")
    return RationalePrompt(exemplars=text)
