"""Load a causal LM by Hugging Face id or local folder, and find its residual-stream blocks.

Built-in organisms are folders written by ``save_pretrained`` (``results/models/{name}``), so they
load through the same ``from_pretrained`` path as a hub model; callers pass the folder.

Block discovery uses a family table (``model_type`` -> attribute path of the decoder layers) with a
generic fallback: the largest ``nn.ModuleList`` whose length is ``num_hidden_layers``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from actspace.core.store import read_header

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
_DTYPE_BY_NAME = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_LLAMA_LIKE = ("model.layers", "model.norm")
#: model_type -> (decoder layers, final norm applied before the LM head).
FAMILIES: dict[str, tuple[str, str]] = {
    "gpt2": ("transformer.h", "transformer.ln_f"),
    "gpt_neo": ("transformer.h", "transformer.ln_f"),
    "gptj": ("transformer.h", "transformer.ln_f"),
    "gpt_bigcode": ("transformer.h", "transformer.ln_f"),
    "bloom": ("transformer.h", "transformer.ln_f"),
    "falcon": ("transformer.h", "transformer.ln_f"),
    "gpt_neox": ("gpt_neox.layers", "gpt_neox.final_layer_norm"),
    "opt": ("model.decoder.layers", "model.decoder.final_layer_norm"),
    "phi": ("model.layers", "model.final_layernorm"),
    "gemma3": ("model.language_model.layers", "model.language_model.norm"),
    **{
        name: _LLAMA_LIKE
        for name in (
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen2_moe",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "phi3",
            "olmo",
            "olmo2",
            "stablelm",
            "starcoder2",
            "granite",
            "smollm3",
        )
    },
}

#: Files of which at least one must be in a saved model folder.
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says which one and how to fix it."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cuda`` fails clearly without CUDA."""
    name = str(device).strip().lower()
    base = name.split(":", 1)[0]
    if base not in DEVICES or (":" in name and base != "cuda"):
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but CUDA is not available on this machine; "
            "allowed here: auto, cpu"
        )
    return torch.device(name)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a GPU that supports it, float16 on other GPUs, float32 on a CPU."""
    name = str(dtype).strip().lower()
    if name == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in _DTYPE_BY_NAME:
        raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    return _DTYPE_BY_NAME[name]


def load_model(
    source: str | os.PathLike[str],
    *,
    dtype: str = "auto",
    device: str = "auto",
    revision: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local folder or a Hugging Face hub id.

    The model is in eval mode on ``device``; the tokenizer gets ``pad_token = eos_token`` when it
    has no pad token. Every failure to find or fetch the model raises :class:`ModelLoadError`.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    folder = Path(os.fspath(source)).expanduser()
    if folder.is_dir():
        _check_folder(folder)
        name: str | Path = folder
        options: dict = {"local_files_only": True}
    elif _looks_like_path(os.fspath(source)):
        raise ModelLoadError(
            f"could not load model {os.fspath(source)!r}: no such folder "
            "(a local model is a folder written by save_pretrained)."
        )
    else:
        name = os.fspath(source)
        options = {"revision": revision} if revision else {}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, **options)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            name, dtype=torch_dtype, **options
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_load_message(os.fspath(source), exc, local=folder.is_dir())) from exc
    except Exception as exc:
        # huggingface_hub's own errors (HfHubHTTPError, HFValidationError, ...) derive from these
        # or from httpx errors, depending on the version; report them as one line as well, and
        # safetensors' error on a truncated weights file in the hub cache.
        packages = ("huggingface_hub", "httpx", "requests", "safetensors")
        if type(exc).__module__.split(".")[0] not in packages:
            raise
        raise ModelLoadError(_load_message(os.fspath(source), exc, local=False)) from exc
    model.to(torch_device)
    model.eval()
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _looks_like_path(text: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else with a separator is a path."""
    return (
        text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
    )


def _check_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"could not load model from folder '{folder}': it has no config.json "
            "(a local model is a folder written by save_pretrained)."
        )
    has_weights = any((folder / name).is_file() for name in _WEIGHT_FILES) or any(
        folder.glob("*.safetensors")
    )
    if not has_weights:
        raise ModelLoadError(
            f"could not load model from folder '{folder}': it has config.json but no weights "
            f"(expected one of {', '.join(_WEIGHT_FILES)})."
        )
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            read_header(weights)  # a truncated file is named here, not by safetensors' own error
        except ValueError as error:
            raise ModelLoadError(f"could not load model from folder '{folder}': {error}") from None


def _load_message(source: str, exc: BaseException, *, local: bool) -> str:
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if local:
        return f"could not load model from folder '{source}': {first}"
    lowered = text.lower()
    unreachable = (
        "couldn't connect",
        "offline",
        "cannot find the requested files in the local cache",
        "connection",
        "name or service not known",
        "localentrynotfound",
    )
    if type(exc).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled") or any(
        marker in lowered for marker in unreachable
    ):
        return (
            f"could not load model '{source}': not in the local Hugging Face cache and the hub "
            "cannot be reached. Fix: point the configuration at a local folder "
            "(models.<name>.path), set HF_HOME to a cache that holds it, or download it on a "
            "machine with network and run with HF_HUB_OFFLINE=1."
        )
    if "not a valid model identifier" in lowered or type(exc).__name__ in (
        "RepositoryNotFoundError",
        "HFValidationError",
    ):
        return (
            f"could not load model '{source}': it is neither a local folder nor a model on the "
            "Hugging Face hub (check the id; gated or private models need HF_TOKEN)."
        )
    return f"could not load model '{source}': {first}"


def _text_config(model: PreTrainedModel) -> transformers.PretrainedConfig:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _get_path(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    module: object = model
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module if isinstance(module, torch.nn.Module) else None


def residual_blocks(model: PreTrainedModel) -> list[torch.nn.Module]:
    """The decoder layers whose outputs form the residual stream, in order."""
    model_type = getattr(model.config, "model_type", None)
    if model_type in FAMILIES:
        layers = _get_path(model, FAMILIES[model_type][0])
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            return list(layers)
    expected = getattr(_text_config(model), "num_hidden_layers", None)
    candidates = [
        module
        for module in model.modules()
        if isinstance(module, torch.nn.ModuleList) and expected and len(module) == expected
    ]
    if not candidates:
        raise ValueError(
            f"cannot find the residual-stream blocks of model type {model_type!r} "
            f"({type(model).__name__}): it is not in the family table "
            f"({', '.join(sorted(FAMILIES))}) and no nn.ModuleList has "
            f"num_hidden_layers={expected} entries"
        )
    best = max(candidates, key=lambda m: sum(p.numel() for p in m.parameters()))
    return list(best)


def num_layers(model: PreTrainedModel) -> int:
    """The number of residual-stream blocks (layer indices run 0..num_layers, 0 = embeddings)."""
    return len(residual_blocks(model))


def hidden_size(model: PreTrainedModel) -> int:
    """The width of the residual stream."""
    size = getattr(_text_config(model), "hidden_size", None)
    if size is None:
        raise ValueError(f"model type {model.config.model_type!r} has no hidden_size in its config")
    return int(size)


def last_hidden_state_is_normed(model: PreTrainedModel) -> bool:
    """True when ``output_hidden_states[-1]`` is not the raw output of the last block.

    Hugging Face models report the last hidden state after the final norm (and, for OPT models
    with ``word_embed_proj_dim != hidden_size``, after ``project_out``). Known families answer from
    the table; others are probed once with a four-token forward pass and the answer is cached.
    """
    model_type = getattr(model.config, "model_type", None)
    if model_type in FAMILIES:
        norm = _get_path(model, FAMILIES[model_type][1])
        extra = _get_path(model, "model.decoder.project_out") if model_type == "opt" else None
        return norm is not None or extra is not None
    cached = getattr(model, "_actspace_last_normed", None)
    if cached is None:
        cached = _probe_last_normed(model)
        model._actspace_last_normed = cached
    return cached


def _probe_last_normed(model: PreTrainedModel) -> bool:
    from actspace.lm.hooks import capture_residual

    # A few distinct tokens other than padding (whose embedding may be zero, and norm(0) == 0).
    pad = getattr(_text_config(model), "pad_token_id", None)
    tokens = [i for i in range(1, 8) if i != pad][:4]
    ids = torch.tensor([tokens], device=next(model.parameters()).device)
    with torch.no_grad(), capture_residual(residual_blocks(model)) as captured:
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    last, raw = out.hidden_states[-1], captured[-1]
    return not (raw is not None and last.shape == raw.shape and torch.equal(last, raw))
