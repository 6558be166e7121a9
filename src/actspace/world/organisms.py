"""Built-in model organisms: a tokenizer and tiny causal LMs trained on the synthetic world.

The organisms are real Hugging Face models (GPT-2 and GPT-NeoX families, about 0.3M parameters at
the default size) trained from scratch on the corpus of
:mod:`actspace.world.synthetic` and saved with ``save_pretrained``, so the rest of the workflow
loads them through the same ``from_pretrained`` path as a hub model.

Training reads one corpus line per sequence (starting at position 0, ending in the EOS token,
padded on the right), the same position at which every task context and prompt starts, so that
the absolute positions GPT-2 learns are the ones it is asked about. Lines of similar length are
batched together to spend little compute on padding. Training is deterministic for a seed: the
weights come from ``torch.manual_seed``, the data order from a ``numpy`` generator, and
``torch.use_deterministic_algorithms`` holds while it runs.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from actspace.core.io import atomic_write_json, atomic_write_text, provenance, write_jsonl
from actspace.core.progress import Progress
from actspace.world.synthetic import BUILTIN_TASKS, World

#: The model families the built-in organisms come in.
ORGANISM_FAMILIES = ("gpt2", "gpt_neox")
#: Sizes: ``default`` (about 0.3M parameters; the study) and ``small`` (tests).
ORGANISM_SIZES = ("default", "small")

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"

#: Width, depth, heads and MLP width per size. The default width learns the world as well as 128
#: did (the same final loss, accuracy by bucket in the same ranges) at about half the CPU time.
_SHAPES = {
    "default": {"d": 64, "layers": 4, "heads": 4, "mlp": 256},
    "small": {"d": 32, "layers": 2, "heads": 2, "mlp": 64},
}
#: Training defaults per size (steps, lines per batch, peak learning rate, longest line).
TRAINING_DEFAULTS = {
    "default": {"steps": 1500, "batch_size": 64, "lr": 3e-3, "seq_len": 64},
    "small": {"steps": 20, "batch_size": 16, "lr": 3e-3, "seq_len": 64},
}
_MAX_POSITIONS = 128
# Each required word is shown to the tokenizer trainer this many times, with and without a space
# in front, so that byte-pair merges build it into one token in both forms.
_LEXICON_REPEATS = 50


# ------------------------------------------------------------------------------------ tokenizer
def train_tokenizer(
    lines: Iterable[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    vocab_size: int = 2048,
    required_words: Sequence[str] = (),
) -> transformers.PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``lines`` and, with ``out_dir``, save it there.

    Every word of ``required_words`` must come out as a single token both at the start of a text
    and after a space (entity names and cities, so that prompt pairs differ in one token);
    ValueError otherwise, naming the words and suggesting a larger vocabulary. The saved folder
    holds ``tokenizer.json`` and ``tokenizer_config.json`` and loads with
    ``AutoTokenizer.from_pretrained``.
    """
    if vocab_size < 300:
        raise ValueError(f"vocab_size must be at least 300 (256 bytes + merges), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lexicon_lines = [f"{word} {word}" for word in required_words] * _LEXICON_REPEATS
    tok.train_from_iterator(_chain(lines, lexicon_lines), trainer=trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=None,
        pad_token=PAD_TOKEN,
        model_max_length=_MAX_POSITIONS,
    )
    split = [w for w in required_words if not is_single_token(tokenizer, w)]
    if split:
        shown = ", ".join(split[:5]) + (" ..." if len(split) > 5 else "")
        raise ValueError(
            f"{len(split)} required word(s) are not single tokens with vocab_size={vocab_size} "
            f"({shown}); use a larger vocab_size"
        )
    if out_dir is not None:
        _save_atomically(out_dir, lambda tmp: tokenizer.save_pretrained(tmp))
    return tokenizer


def is_single_token(tokenizer: Any, word: str) -> bool:
    """Whether ``word`` is one token both at the start of a text and after a space."""
    alone = tokenizer.encode(word, add_special_tokens=False)
    spaced = tokenizer.encode(" " + word, add_special_tokens=False)
    return len(alone) == 1 and len(spaced) == 1


def _chain(*parts: Iterable[str]) -> Iterable[str]:
    for part in parts:
        yield from part


# -------------------------------------------------------------------------------------- models
def organism_depth(family: str, size: str = "default") -> int:
    """Number of blocks of an organism, without building its config."""
    _check_family_size(family, size)
    return int(_SHAPES[size]["layers"])


def organism_config(
    family: str, size: str = "default", *, vocab_size: int, **ids: int
) -> transformers.PretrainedConfig:
    """The ``transformers`` config of an organism; ``ids`` sets bos/eos/pad token ids."""
    _check_family_size(family, size)
    shape = _SHAPES[size]
    if family == "gpt2":
        return transformers.GPT2Config(
            vocab_size=vocab_size,
            n_positions=_MAX_POSITIONS,
            n_embd=shape["d"],
            n_layer=shape["layers"],
            n_head=shape["heads"],
            n_inner=shape["mlp"],
            # GPT-2's tanh approximation of GELU, as one fused kernel (``gelu_new`` composes it
            # from five element-wise operations, a fifth of a training step's time)
            activation_function="gelu_pytorch_tanh",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **ids,
        )
    # Pythia's choices: untied output embedding, parallel residual, rotary on a quarter of a head.
    return transformers.GPTNeoXConfig(
        vocab_size=vocab_size,
        max_position_embeddings=_MAX_POSITIONS,
        hidden_size=shape["d"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["mlp"],
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        **ids,
    )


def _check_family_size(family: str, size: str) -> None:
    if family not in ORGANISM_FAMILIES:
        raise ValueError(
            f"unknown organism family {family!r}; known: {', '.join(ORGANISM_FAMILIES)}"
        )
    if size not in ORGANISM_SIZES:
        raise ValueError(f"unknown organism size {size!r}; known: {', '.join(ORGANISM_SIZES)}")


def _encode_lines(tokenizer: Any, lines: Sequence[str], seq_len: int) -> list[list[int]]:
    """Token ids of each line with the EOS token appended, cut to ``seq_len`` tokens."""
    eos = int(tokenizer.eos_token_id)
    encoded = tokenizer(list(lines), add_special_tokens=False)["input_ids"]
    return [(ids + [eos])[:seq_len] for ids in encoded if ids]


def _batches(
    lengths: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """``steps`` batches of line indices: shuffled each epoch, grouped by similar length.

    Each epoch's permutation is cut into chunks of 32 batches; within a chunk lines are sorted by
    length and cut into batches, and the batches of the epoch are shuffled again.
    """
    out: list[np.ndarray] = []
    n = len(lengths)
    while len(out) < steps:
        order = rng.permutation(n)
        epoch: list[np.ndarray] = []
        chunk = batch_size * 32
        for start in range(0, n, chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(lengths[part], kind="stable")]
            epoch.extend(
                part[i : i + batch_size]
                for i in range(0, len(part), batch_size)
                if len(part[i : i + batch_size]) == batch_size
            )
        if not epoch:
            raise ValueError(f"corpus of {n} lines is smaller than one batch of {batch_size}")
        out.extend(epoch[int(i)] for i in rng.permutation(len(epoch)))
    return out[:steps]


def _collate(encoded: list[list[int]], index: np.ndarray, pad_id: int) -> tuple[torch.Tensor, ...]:
    rows = [encoded[int(i)] for i in index]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        input_ids[k, : len(row)] = torch.tensor(row)
        labels[k, : len(row)] = torch.tensor(row)
        mask[k, : len(row)] = 1
    return input_ids, mask, labels


def _lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to a tenth of the peak."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_organism(
    family: str,
    corpus_lines: Sequence[str],
    tokenizer_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    train_seed: int,
    size: str,
    train_steps: int | None,
    batch_size: int | None = None,
    lr: float | None = None,
    seq_len: int | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train an organism of ``family`` on ``corpus_lines``; save model and tokenizer in ``out_dir``.

    ``train_seed``, ``size`` and ``train_steps`` are the keys of a ``models.<name>`` section of the
    configuration; ``train_steps`` None and the other unset training knobs take
    :data:`TRAINING_DEFAULTS` of ``size``. ``threads`` sets torch's CPU
    threads for the run (restored afterwards). The folder is written beside ``out_dir`` and moved
    into place when complete; it holds the ``save_pretrained`` files of model and tokenizer and a
    ``training.json`` with the statistics returned here (final loss, parameters, seconds, ...).
    ``progress`` (a :class:`~actspace.core.progress.Progress`) counts optimizer steps.
    """
    _check_family_size(family, size)
    knobs = dict(TRAINING_DEFAULTS[size])
    for name, value in (
        ("steps", train_steps),
        ("batch_size", batch_size),
        ("lr", lr),
        ("seq_len", seq_len),
    ):
        if value is not None:
            knobs[name] = value
    if knobs["steps"] < 1 or knobs["batch_size"] < 1 or knobs["seq_len"] < 2 or knobs["lr"] <= 0:
        raise ValueError(f"steps, batch_size, lr must be positive and seq_len >= 2; got {knobs}")
    if knobs["seq_len"] > _MAX_POSITIONS:
        raise ValueError(f"seq_len must be at most {_MAX_POSITIONS}, got {knobs['seq_len']}")

    if not (Path(tokenizer_dir) / "tokenizer.json").is_file():
        raise ValueError(f"no tokenizer.json in {tokenizer_dir} (make_world writes one)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    encoded = _encode_lines(tokenizer, corpus_lines, knobs["seq_len"])
    if not encoded:
        raise ValueError("the corpus has no non-empty line")
    lengths = np.array([len(r) for r in encoded])
    batches = _batches(
        lengths, knobs["batch_size"], knobs["steps"], np.random.default_rng(train_seed)
    )
    if progress is not None:
        progress.set_total(len(batches))

    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        torch.use_deterministic_algorithms(True)
        torch.manual_seed(train_seed)
        ids = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        config = organism_config(family, size, vocab_size=len(tokenizer), **ids)
        model = transformers.AutoModelForCausalLM.from_config(config)
        model.loss_type = "ForCausalLM"  # GPT2LMHeadModel's class name maps to no loss type
        model.train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=knobs["lr"], betas=(0.9, 0.95), weight_decay=0.01
        )
        losses: list[float] = []
        for step, index in enumerate(batches):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, knobs["steps"], knobs["lr"])
            input_ids, mask, labels = _collate(encoded, index, int(tokenizer.pad_token_id))
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress.update()
        model.eval()
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        used_threads = torch.get_num_threads()
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)

    tail = losses[-max(1, len(losses) // 20) :]
    stats = {
        "family": family,
        "size": size,
        "seed": int(train_seed),
        **knobs,
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "vocab_size": len(tokenizer),
        "corpus_lines": len(encoded),
        "corpus_tokens": int(lengths.sum()),
        "tokens_seen": int(sum(int(lengths[b].sum()) for b in batches)),
        "epochs": round(sum(len(b) for b in batches) / len(encoded), 3),
        "final_loss": float(np.mean(tail)),
        "loss_curve": [round(x, 4) for x in losses[:: max(1, len(losses) // 50)]],
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "threads": used_threads,
        "corpus_sha256": hashlib.sha256("\n".join(corpus_lines).encode("utf-8")).hexdigest(),
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "training.json", {**stats, "provenance": provenance()})

    _save_atomically(out_dir, write)
    if progress is not None:
        progress.update(0, checkpoint=f"saved to {out_dir}")
    return stats


def _save_atomically(out_dir: str | os.PathLike[str], write) -> None:
    """Let ``write(tmp)`` fill a fresh folder beside ``out_dir``, then move it into place.

    An existing ``out_dir`` is moved aside first and deleted after the swap, so a reader sees
    either the old complete folder or the new one.
    """
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir()
    try:
        write(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)


# -------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def _choice_logliks(
    model: Any, tokenizer: Any, context: str, choices: Sequence[str]
) -> list[float]:
    """Sum of log-probabilities of ``" " + choice`` after ``context``, per choice.

    Encoding as lm-evaluation-harness does it: ``whole = enc(context + " " + choice)``, the
    continuation is ``whole[len(enc(context)):]``. Used to tune and test the organisms; the
    workflow scores with :mod:`actspace.lm.scoring`.
    """
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    rows, spans = [], []
    for choice in choices:
        whole = tokenizer.encode(f"{context} {choice}", add_special_tokens=False)
        rows.append(whole)
        spans.append((len(context_ids), len(whole)))
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), int(tokenizer.pad_token_id), dtype=torch.long)
    for k, row in enumerate(rows):
        input_ids[k, : len(row)] = torch.tensor(row)
    logprobs = torch.log_softmax(model(input_ids=input_ids).logits.float(), dim=-1)
    out = []
    for k, (start, end) in enumerate(spans):
        targets = input_ids[k, start:end]
        out.append(float(logprobs[k, start - 1 : end - 1].gather(1, targets[:, None]).sum()))
    return out


def _mc_accuracy(model: Any, tokenizer: Any, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy over task rows, overall and per ``metadata["bucket"]``, with the chance level."""
    correct: list[bool] = []
    by_bucket: dict[str, list[bool]] = {}
    for item in items:
        scores = _choice_logliks(model, tokenizer, item["context"], item["choices"])
        hit = int(np.argmax(scores)) == int(item["label"])
        correct.append(hit)
        by_bucket.setdefault(item["metadata"].get("bucket", "all"), []).append(hit)
    return {
        "acc": float(np.mean(correct)),
        "n": len(correct),
        "chance": float(np.mean([1.0 / len(item["choices"]) for item in items])),
        "by_bucket": {k: {"acc": float(np.mean(v)), "n": len(v)} for k, v in by_bucket.items()},
    }


# ------------------------------------------------------------------------------ world on disk
def prepare_world(
    output_dir: str | os.PathLike[str],
    world: World,
    *,
    vocab_size: int,
    n_prompt_pairs: int,
    n_attribute_texts: int,
    n_neutral_prompts: int,
) -> dict[str, str]:
    """Write a world, its corpus, built-in tasks and tokenizer into the folder ``output_dir``.

    The corpus has ``world.params.corpus_lines`` lines.
    Files (returned by name): ``world.json``, ``corpus.txt`` (one line per training sequence),
    ``corpus_marks.jsonl``, ``tasks/{task}.jsonl`` for each built-in task, ``prompt_pairs.jsonl``,
    ``attributes.jsonl``, ``neutral_prompts.jsonl`` and the folder ``tokenizer/``. Schemas: see
    :mod:`actspace.world.synthetic`. ``world.json`` is written last, so a folder that has it is
    complete.
    """
    root = Path(output_dir)
    corpus = world.corpus()
    paths: dict[str, Path] = {
        "world": root / "world.json",
        "corpus": root / "corpus.txt",
        "corpus_marks": root / "corpus_marks.jsonl",
        **{task: root / "tasks" / f"{task}.jsonl" for task in BUILTIN_TASKS},
        "prompt_pairs": root / "prompt_pairs.jsonl",
        "attributes": root / "attributes.jsonl",
        "neutral_prompts": root / "neutral_prompts.jsonl",
        "tokenizer": root / "tokenizer",
    }
    train_tokenizer(
        corpus.lines, paths["tokenizer"], vocab_size=vocab_size, required_words=world.lexicon()
    )
    atomic_write_text(paths["corpus"], "".join(line + "\n" for line in corpus.lines))
    write_jsonl(paths["corpus_marks"], corpus.marks)
    for task in BUILTIN_TASKS:
        write_jsonl(paths[task], world.task_items(task))
    write_jsonl(paths["prompt_pairs"], world.prompt_pairs(n_prompt_pairs))
    write_jsonl(paths["attributes"], world.attribute_sets(n_attribute_texts))
    write_jsonl(paths["neutral_prompts"], world.neutral_prompts(n_neutral_prompts))
    atomic_write_json(paths["world"], world.to_json())
    return {name: str(path) for name, path in paths.items()}


def make_world(
    output_dir: str | os.PathLike[str],
    *,
    seed: int,
    vocab_size: int,
    n_prompt_pairs: int,
    n_attribute_texts: int,
    n_neutral_prompts: int,
    **world_params: Any,
) -> dict[str, str]:
    """Draw the world the ``world:`` section describes and write it with :func:`prepare_world`.

    The keywords are that section's keys: ``seed`` draws the world, ``world_params`` (such as
    ``n_entities``, ``corpus_lines``) override fields of
    :class:`~actspace.world.synthetic.WorldParams`, the others size what :func:`prepare_world`
    writes.
    """
    world = World.generate(seed, **world_params)
    return prepare_world(
        output_dir,
        world,
        vocab_size=vocab_size,
        n_prompt_pairs=n_prompt_pairs,
        n_attribute_texts=n_attribute_texts,
        n_neutral_prompts=n_neutral_prompts,
    )


def read_corpus(path: str | os.PathLike[str]) -> list[str]:
    """The lines of a ``corpus.txt`` written by :func:`prepare_world` (blank lines dropped)."""
    text = Path(path).read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line.strip()]
