"""A seeded synthetic reasoning world where the truth is known.

Every object is made of a material, and every material has one storage place (the rule). A question asks
where an object should be stored; the correct rationale states the object's material and the rule. The
question also carries an adjective, a **shortcut**: in the training split the adjective names the right
place most of the time, in the held-out *anti-shortcut* split it never does.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from ..teacher.prompts import RationalePrompt

__all__ = ["World", "make_world"]

MATERIALS = ["metal", "wood", "glass", "cloth"]
PLACES = ["shed", "barn", "cabinet", "closet"]  # MATERIALS[i] is stored in PLACES[i]
ADJECTIVES = ["rusty", "dusty", "shiny", "soft"]  # the shortcut: ADJECTIVES[i] co-occurs with PLACES[i]
VACUOUS = [
    "Let us think about where such things are usually kept.",
    "It is important to keep things in the right place.",
    "People often store their things carefully.",
]
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "go", "bu", "fa"]
SYLLABLES_PER_NAME = [2, 3]  # object names are made-up words the teacher cannot know anything about
N_WRONG_CHOICES = 2  # three choices per question, as in CoS-E v1.0

# The teacher's corpus. Its answer sentence names the gold place, a wrong place or none, so that the teacher
# learns to explain whatever answer its prompt gives (the contrastive branches need that):
# a uniform draw below the first cut: the gold place (40 %); below the second: a wrong place (45 %); else none
CORPUS_ANSWER_CUTS = (0.4, 0.85)
CORPUS_SHORTCUT_RATE = 0.5  # the adjective is no shortcut in the corpus: the teacher must not learn one
# How often a wording (adjective) gets a vacuous rationale in the corpus: two adjectives mostly vacuous, two
# mostly specific, so that greedy decoding is vacuous on some questions and contrastive decoding can fix it.
VACUOUS_RATE_HIGH = 0.3  # added to vacuous_rate for the odd adjectives (at most 0.95)
VACUOUS_RATE_LOW = 0.35  # subtracted for the even ones (at least 0.05)
# One generic sentence dominates the vacuous rationales, as a single "safe" phrasing does in real LLM output.
VACUOUS_WEIGHTS = [0.8, 0.1, 0.1]
# The teacher's corpus is rendered with the zero-shot rationalization prompt it is later decoded with.
TEACHER_PROMPT = RationalePrompt(exemplars="")


def specific_rationale(obj: str, place: str) -> str:
    """The rationale that makes ``place`` follow: the material for that place, and the rule.

    It opens with the material, an answer-specific token: that is where contrastive decoding can tell an
    informative rationale from a generic one, as it does on the content words of real rationales.
    """
    material = MATERIALS[PLACES.index(place)]
    return f"{material.capitalize()} things are stored in the {place}, and it is made of {material}."


@dataclass
class World:
    seed: int
    objects: dict[str, str]  # object -> material
    train: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    anti_shortcut: list[dict] = field(default_factory=list)
    teacher_corpus: list[str] = field(default_factory=list)

    def gold_place(self, obj: str) -> str:
        return PLACES[MATERIALS.index(self.objects[obj])]

    # -- the oracle -------------------------------------------------------------------------------

    def judge(self, rationale: str, answer: str) -> str:
        """``"supports"`` if the rationale makes ``answer`` follow by the rule, ``"vacuous"`` if it names no
        material or place, else ``"other"`` (it argues for something else)."""
        text = rationale.lower()
        materials = [m for m in MATERIALS if re.search(rf"\b{m}\b", text)]
        places = [p for p in PLACES if re.search(rf"\b{p}\b", text)]
        if not materials and not places:
            return "vacuous"
        implied = {PLACES[MATERIALS.index(m)] for m in materials} | set(places)
        return "supports" if implied == {answer} else "other"

    def is_true(self, rationale: str, obj: str) -> bool:
        """The rationale states the object's real material."""
        return re.search(rf"\b{self.objects[obj]}\b", rationale.lower()) is not None


def _question(rng: random.Random, world: World, obj: str, shortcut_rate: float) -> dict:
    gold = world.gold_place(obj)
    if rng.random() < shortcut_rate:
        adj = ADJECTIVES[PLACES.index(gold)]
    else:
        adj = rng.choice([a for a in ADJECTIVES if a != ADJECTIVES[PLACES.index(gold)]])
    others = rng.sample([p for p in PLACES if p != gold], N_WRONG_CHOICES)
    choices = others + [gold]
    rng.shuffle(choices)
    return {"id": "", "object": obj, "adjective": adj, "question": f"Where should the {adj} {obj} be stored?",
            "choices": choices, "answer": gold, "rationale": specific_rationale(obj, gold)}


def make_world(
    seed: int = 0,
    n_objects: int = 48,
    n_train: int = 400,
    n_test: int = 120,
    shortcut_rate: float = 0.85,
    n_teacher_corpus: int = 3000,
    vacuous_rate: float = 0.5,
) -> World:
    """Build the world, its three splits and the teacher's training corpus.

    The teacher corpus pairs questions with an answer (the gold one, a wrong one, or none) and a rationale
    that is answer-specific only part of the time: with probability depending on the adjective (around
    ``vacuous_rate`` on average, higher for some question wordings) it is a generic, vacuous sentence, the
    situation SCOTT reports for LLMs.
    """
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < n_objects:
        names.add("".join(rng.choice(SYLLABLES) for _ in range(rng.choice(SYLLABLES_PER_NAME))))
    objects = {name: rng.choice(MATERIALS) for name in sorted(names)}
    world = World(seed=seed, objects=objects)
    obj_list = sorted(objects)
    # how often the teacher's corpus explains vacuously depends on the question's wording, not on the answer
    vac = {a: min(0.95, vacuous_rate + VACUOUS_RATE_HIGH) if k % 2 else max(0.05, vacuous_rate - VACUOUS_RATE_LOW)
           for k, a in enumerate(ADJECTIVES)}
    for split, n, rate in (("train", n_train, shortcut_rate), ("test", n_test, shortcut_rate),
                           ("anti_shortcut", n_test, 0.0)):
        rows = []
        for i in range(n):
            row = _question(rng, world, rng.choice(obj_list), rate)
            row["id"] = f"{split}-{i}"
            rows.append(row)
        setattr(world, split, rows)
    corpus = []
    for _ in range(n_teacher_corpus):
        row = _question(rng, world, rng.choice(obj_list), CORPUS_SHORTCUT_RATE)
        kind = rng.random()
        answer = row["answer"] if kind < CORPUS_ANSWER_CUTS[0] else (
            rng.choice([c for c in row["choices"] if c != row["answer"]]) if kind < CORPUS_ANSWER_CUTS[1] else None)
        if rng.random() < vac[row["adjective"]]:
            rationale = rng.choices(VACUOUS, weights=VACUOUS_WEIGHTS)[0]
        else:
            rationale = specific_rationale(row["object"], answer or row["answer"])
        corpus.append(f"{TEACHER_PROMPT.render(row['question'], row['choices'], answer)} {rationale}\n")
    world.teacher_corpus = corpus
    return world
