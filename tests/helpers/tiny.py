"""Tiny random-initialised causal LMs of every supported family, saved with ``save_pretrained``.

Tests build these instead of downloading anything: each is a real transformers model of its family,
a few thousand parameters, with a small byte-level BPE tokenizer trained on a fixed text.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

FAMILIES = ("gpt2", "gpt_neo", "gpt_neox", "opt", "llama", "qwen2", "gemma2", "gemma3")

_TEXT = (
    "The quick brown fox jumps over the lazy dog. A man is sitting on a roof. "
    "He starts pulling up roofing on a roof. Question: what is the capital of France? "
    "Answer: Paris. The cat sat on the mat and looked at the bird outside the window. "
    "Numbers like 1, 2, 3, 10 and 42 appear here too; so do A, B, C and D."
)


def make_tokenizer(bos: str | None = None) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of ~300 tokens; with ``bos`` it prepends that token (as OPT)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<pad>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([_TEXT] * 4, trainer=trainer)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    eos = bos or "<|endoftext|>"
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=eos, eos_token=eos, unk_token=None, pad_token="<pad>"
    )


def tiny_config(family: str, vocab_size: int) -> transformers.PretrainedConfig:
    """A 2- or 3-layer random config of ``family`` with hidden size 32."""
    common = dict(vocab_size=vocab_size, pad_token_id=1, bos_token_id=0, eos_token_id=0)
    if family == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=256, **common)
    if family == "gpt_neo":
        return transformers.GPTNeoConfig(
            hidden_size=32,
            num_layers=3,
            num_heads=4,
            attention_types=[[["global", "local"], 1], [["global"], 1]],
            max_position_embeddings=256,
            window_size=16,
            **common,
        )
    if family == "gpt_neox":
        return transformers.GPTNeoXConfig(
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=256,
            **common,
        )
    if family == "opt":
        return transformers.OPTConfig(
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            ffn_dim=64,
            word_embed_proj_dim=32,
            max_position_embeddings=256,
            **{**common, "bos_token_id": 2, "eos_token_id": 2},
        )
    llama_like = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        **common,
    )
    if family == "llama":
        return transformers.LlamaConfig(**llama_like)
    if family == "qwen2":
        return transformers.Qwen2Config(**llama_like)
    if family == "gemma2":
        return transformers.Gemma2Config(head_dim=8, **llama_like)
    if family == "gemma3":
        return transformers.Gemma3TextConfig(head_dim=8, **llama_like)
    raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def make_tiny_model(family: str, folder: Path, seed: int = 0) -> Path:
    """Build, seed-initialise and ``save_pretrained`` a tiny model of ``family`` into ``folder``."""
    tokenizer = make_tokenizer(bos="</s>" if family == "opt" else None)
    config = tiny_config(family, vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
