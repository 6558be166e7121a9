"""Model loading, device/dtype resolution and residual-block discovery for every family."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.tiny import FAMILIES, make_tokenizer

from actspace.lm import models
from actspace.lm.models import (
    ModelLoadError,
    hidden_size,
    last_hidden_state_is_normed,
    load_model,
    num_layers,
    residual_blocks,
    resolve_device,
    resolve_dtype,
)

#: The decoder-layer class of each tiny family.
LAYER_CLASS = {
    "gpt2": "GPT2Block",
    "gpt_neo": "GPTNeoBlock",
    "gpt_neox": "GPTNeoXLayer",
    "opt": "OPTDecoderLayer",
    "llama": "LlamaDecoderLayer",
    "qwen2": "Qwen2DecoderLayer",
    "gemma2": "Gemma2DecoderLayer",
    "gemma3": "Gemma3DecoderLayer",
}


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    cache: dict[str, tuple] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = load_model(tiny_model_dir(family), dtype="float32", device="cpu")
        return cache[family]

    return get


# --- device and dtype ------------------------------------------------------------------------


def test_resolve_device_auto_follows_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_resolve_device_cuda_without_cuda_fails_clearly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available.*auto, cpu"):
        resolve_device("cuda")


@pytest.mark.parametrize("bad", ["tpu", "gpu", "cpu:0", ""])
def test_resolve_device_unknown_lists_allowed(bad):
    with pytest.raises(ValueError, match="allowed: auto, cpu, cuda"):
        resolve_device(bad)


def test_resolve_dtype_auto(monkeypatch):
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", torch.device("cuda")) is torch.float16


@pytest.mark.parametrize(
    ("name", "expected"),
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)],
)
def test_resolve_dtype_named(name, expected):
    assert resolve_dtype(name, torch.device("cpu")) is expected
    assert resolve_dtype(name.upper(), torch.device("cpu")) is expected


def test_resolve_dtype_unknown_lists_allowed():
    with pytest.raises(ValueError, match="allowed: auto, float32, bfloat16, float16"):
        resolve_dtype("fp8", torch.device("cpu"))


# --- loading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_load_model_finds_decoder_layers(family, loaded):
    model, tokenizer = loaded(family)
    assert not model.training
    assert model.dtype is torch.float32
    assert tokenizer.pad_token is not None
    blocks = residual_blocks(model)
    assert len(blocks) == 3 == num_layers(model) == model.config.num_hidden_layers
    assert {type(b).__name__ for b in blocks} == {LAYER_CLASS[family]}
    assert len({id(b) for b in blocks}) == 3
    assert hidden_size(model) == 32
    # In order: blocks[k] is the k-th module of the layer list in the model's own module order.
    layer_order = [m for m in model.modules() if type(m).__name__ == LAYER_CLASS[family]]
    assert [id(b) for b in blocks] == [id(m) for m in layer_order]


@pytest.mark.parametrize("family", FAMILIES)
def test_last_hidden_state_is_normed_matches_probe(family, loaded):
    model, _ = loaded(family)
    assert last_hidden_state_is_normed(model) is True
    assert models._probe_last_normed(model) is True


def test_generic_fallback_finds_layers_and_probes_norm(loaded, monkeypatch):
    model, _ = loaded("llama")
    expected = list(model.model.layers)
    monkeypatch.setattr(models, "FAMILIES", {})
    assert residual_blocks(model) == expected
    assert last_hidden_state_is_normed(model) is True


def test_residual_blocks_unknown_architecture_names_model_type():
    model = torch.nn.Module()
    model.config = SimpleNamespace(model_type="weird_lm", num_hidden_layers=4)
    model.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])
    with pytest.raises(ValueError, match="model type 'weird_lm'.*num_hidden_layers=4"):
        residual_blocks(model)


def test_load_model_dtype_bfloat16(tiny_model_dir):
    model, _ = load_model(tiny_model_dir("llama"), dtype="bfloat16", device="cpu")
    assert model.dtype is torch.bfloat16
    logits = model(torch.tensor([[5, 6, 7]])).logits
    assert logits.dtype is torch.bfloat16
    assert logits.shape == (1, 3, model.config.vocab_size)


def test_load_model_accepts_str_and_gives_pad_token(tiny_model_dir, tmp_path):
    folder = tmp_path / "nopad"
    shutil.copytree(tiny_model_dir("gpt2"), folder)
    tokenizer = make_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    model, tok = load_model(str(folder), dtype="auto", device="cpu")
    assert model.dtype is torch.float32
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    assert tok.pad_token_id == tok.eos_token_id == 0


def test_load_model_folder_without_weights(tiny_model_dir, tmp_path):
    folder = tmp_path / "noweights"
    folder.mkdir()
    shutil.copy(tiny_model_dir("gpt2") / "config.json", folder / "config.json")
    with pytest.raises(ModelLoadError, match="noweights.*no weights.*model.safetensors") as info:
        load_model(folder, device="cpu")
    assert "\n" not in str(info.value)


def test_load_model_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path, device="cpu")


def test_load_model_missing_path(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model(tmp_path / "results" / "models" / "absent", device="cpu")


def test_load_model_bad_options_fail_before_loading(tmp_path):
    with pytest.raises(ValueError, match="unknown dtype 'half'"):
        load_model(tmp_path / "absent", dtype="half", device="cpu")


def test_load_model_offline_uncached_id_is_one_clear_message(tmp_path):
    """With the hub unreachable and an empty cache, the error names the id and the fixes."""
    script = textwrap.dedent(
        """
        import sys
        from actspace.lm.models import ModelLoadError, load_model
        try:
            load_model("gpt2", device="cpu")
        except ModelLoadError as exc:
            print(exc)
            sys.exit(3)
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stderr[-2000:]
    message = result.stdout.strip()
    assert message.startswith("could not load model 'gpt2': not in the local Hugging Face cache")
    for fix in ("local folder", "HF_HOME", "HF_HUB_OFFLINE=1"):
        assert fix in message
    assert "Traceback" not in result.stdout + result.stderr
    assert len(message.splitlines()) == 1


def test_load_message_classifies_hub_errors():
    offline = OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    assert "hub cannot be reached" in models._load_message("org/m", offline, local=False)
    missing = OSError("org/m is not a local folder and is not a valid model identifier listed")
    assert "neither a local folder nor a model" in models._load_message(
        "org/m", missing, local=False
    )
    other = ValueError("model type `zzz` is not recognised\nmore detail")
    assert models._load_message("x", other, local=False) == (
        "could not load model 'x': model type `zzz` is not recognised"
    )


def test_saved_config_is_what_was_loaded(tiny_model_dir, loaded):
    model, _ = loaded("opt")
    config = json.loads((Path(tiny_model_dir("opt")) / "config.json").read_text())
    assert config["model_type"] == model.config.model_type == "opt"
    assert config["num_hidden_layers"] == num_layers(model)


@pytest.mark.parametrize(
    ("layer_norm_before", "proj_dim", "expected"),
    [(True, 32, True), (False, 32, False), (False, 16, True)],
)
def test_opt_variants_normed_flag(layer_norm_before, proj_dim, expected):
    """OPT-350m style: no final norm but a project_out; plain post-norm OPT has neither."""
    import transformers

    config = transformers.OPTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        vocab_size=100,
        word_embed_proj_dim=proj_dim,
        do_layer_norm_before=layer_norm_before,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    assert last_hidden_state_is_normed(model) is expected
    assert models._probe_last_normed(model) is expected
    assert hidden_size(model) == 32 and num_layers(model) == 2
