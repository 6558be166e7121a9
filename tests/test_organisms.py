"""Built-in organisms: tokenizer, deterministic training, saved folders and what they learn."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from helpers.scripts import load_script
from helpers.world import SMALL_WORLD
from safetensors.torch import load_file

from actspace.core.io import read_jsonl
from actspace.core.schema import validate_schema
from actspace.world.organisms import (
    ORGANISM_FAMILIES,
    _batches,
    _choice_logliks,
    _mc_accuracy,
    is_single_token,
    organism_config,
    prepare_world,
    read_corpus,
    train_organism,
    train_tokenizer,
)
from actspace.world.synthetic import BUILTIN_TASKS, World


@pytest.fixture(scope="module")
def small_world() -> World:
    return World.generate(3, **SMALL_WORLD)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory, small_world: World) -> Path:
    folder = tmp_path_factory.mktemp("world")
    prepare_world(
        folder,
        small_world,
        vocab_size=1024,
        n_prompt_pairs=20,
        n_attribute_texts=10,
        n_neutral_prompts=5,
    )
    return folder


def _tensor_hashes(folder: Path) -> dict[str, str]:
    tensors = load_file(str(folder / "model.safetensors"))
    return {
        name: hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()
        for name, t in sorted(tensors.items())
    }


def test_prepare_world_writes_every_file(world_dir: Path, small_world: World) -> None:
    expected = [
        "world.json",
        "corpus.txt",
        "corpus_marks.jsonl",
        "prompt_pairs.jsonl",
        "attributes.jsonl",
        "neutral_prompts.jsonl",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        *[f"tasks/{task}.jsonl" for task in BUILTIN_TASKS],
    ]
    for name in expected:
        assert (world_dir / name).is_file(), name
    saved = World.from_json(json.loads((world_dir / "world.json").read_text()))
    assert saved == small_world
    lines = read_corpus(world_dir / "corpus.txt")
    assert lines == small_world.corpus().lines
    assert len(read_jsonl(world_dir / "corpus_marks.jsonl")) == len(lines)
    assert read_jsonl(world_dir / "tasks" / "facts.jsonl") == small_world.task_items("facts")
    assert len(read_jsonl(world_dir / "prompt_pairs.jsonl")) == 20
    assert len(read_jsonl(world_dir / "attributes.jsonl")) == 40


def test_tokenizer_loads_and_keeps_world_words_whole(world_dir: Path, small_world: World) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(world_dir / "tokenizer"))
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert all(is_single_token(tokenizer, word) for word in small_world.lexicon())
    assert tokenizer.decode(tokenizer.encode("Furthermore, the dog left.")) == (
        "Furthermore, the dog left."
    )


def test_prompt_pairs_differ_in_exactly_one_token(world_dir: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(world_dir / "tokenizer"))
    pairs = read_jsonl(world_dir / "prompt_pairs.jsonl")
    assert pairs
    for pair in pairs:
        clean = tokenizer.encode(pair["clean"], add_special_tokens=False)
        corrupted = tokenizer.encode(pair["corrupted"], add_special_tokens=False)
        assert len(clean) == len(corrupted) == 3
        assert [i for i, (a, b) in enumerate(zip(clean, corrupted, strict=True)) if a != b] == [0]
        answers = [" " + pair["clean_answer"], " " + pair["corrupted_answer"]]
        ids = [tokenizer.encode(a, add_special_tokens=False) for a in answers]
        assert len(ids[0]) == len(ids[1]) == 1 and ids[0] != ids[1]


def test_tokenizer_too_small_for_the_lexicon_raises(small_world: World) -> None:
    with pytest.raises(ValueError, match="larger vocab_size"):
        lines, words = small_world.corpus().lines[:50], small_world.lexicon()
        train_tokenizer(lines, vocab_size=300, required_words=words)


def test_default_size_is_a_few_hundred_thousand_parameters() -> None:
    for family in ORGANISM_FAMILIES:
        config = organism_config(family, "default", vocab_size=1000)
        model = transformers.AutoModelForCausalLM.from_config(config)
        n = sum(p.numel() for p in model.parameters())
        assert 0.2e6 <= n <= 0.4e6, (family, n)
        assert config.model_type == family
    with pytest.raises(ValueError, match="known: gpt2, gpt_neox"):
        organism_config("llama", vocab_size=1000)
    with pytest.raises(ValueError, match="known: default, small"):
        organism_config("gpt2", "huge", vocab_size=1000)


def test_training_is_deterministic_for_a_seed(world_dir: Path, tmp_path: Path) -> None:
    lines = read_corpus(world_dir / "corpus.txt")
    hashes = []
    for run, seed in enumerate((11, 11, 12)):
        out = tmp_path / f"run{run}"
        stats = train_organism(
            "gpt2",
            lines,
            world_dir / "tokenizer",
            out,
            train_seed=seed,
            size="small",
            train_steps=6,
        )
        assert stats["steps"] == 6 and np.isfinite(stats["final_loss"])
        hashes.append(_tensor_hashes(out))
    assert hashes[0] == hashes[1]
    assert hashes[0] != hashes[2]


def test_saved_organism_loads_and_records_training(world_dir: Path, tmp_path: Path) -> None:
    lines = read_corpus(world_dir / "corpus.txt")
    out = tmp_path / "models" / "tiny_neox"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier run")
    stats = train_organism(
        "gpt_neox", lines, world_dir / "tokenizer", out, train_seed=0, size="small", train_steps=4
    )
    assert not (out / "stale.txt").exists()  # the folder is replaced as a whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny_neox"]  # no temp folders
    record = json.loads((out / "training.json").read_text())
    assert record["family"] == "gpt_neox" and record["n_params"] == stats["n_params"]
    assert record["steps"] == 4 and "provenance" in record
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    assert model.config.model_type == "gpt_neox"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.vocab_size == len(tokenizer)


def test_choice_logliks_match_a_plain_forward(world_dir: Path, tmp_path: Path) -> None:
    lines = read_corpus(world_dir / "corpus.txt")
    out = tmp_path / "m"
    train_organism(
        "gpt2", lines, world_dir / "tokenizer", out, train_seed=0, size="small", train_steps=2
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    context, choices = "3 plus 4 is", ["7", "12"]
    got = _choice_logliks(model, tokenizer, context, choices)
    for choice, value in zip(choices, got, strict=True):
        whole = tokenizer.encode(f"{context} {choice}")
        n_context = len(tokenizer.encode(context))
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0], dim=-1)
        expected = sum(float(logprobs[i - 1, whole[i]]) for i in range(n_context, len(whole)))
        assert value == pytest.approx(expected, abs=1e-4)


def test_bad_training_requests_raise(world_dir: Path, tmp_path: Path) -> None:
    knobs = {"train_seed": 0, "size": "default", "train_steps": None}
    with pytest.raises(ValueError, match="known: gpt2, gpt_neox"):
        train_organism("opt", ["a b"], world_dir / "tokenizer", tmp_path / "x", **knobs)
    with pytest.raises(ValueError, match="no tokenizer.json"):
        train_organism("gpt2", ["a b"], tmp_path / "nowhere", tmp_path / "x", **knobs)
    with pytest.raises(ValueError, match="smaller than one batch"):
        train_organism(
            "gpt2", ["a b"], world_dir / "tokenizer", tmp_path / "x", **{**knobs, "size": "small"}
        )


def test_scripts_run_end_to_end(tmp_path: Path) -> None:
    """The scripts as the rules call them: the resolved section as ``--params``."""
    make_world = load_script("make_world")
    train_script = load_script("train_organism")
    world = {**validate_schema({})["world"], **SMALL_WORLD, "seed": 5, "n_prompt_pairs": 8}
    make_world.main(["--params", json.dumps(world), "--output-dir", str(tmp_path / "world")])
    assert (tmp_path / "world" / "tasks" / "arithmetic.jsonl").is_file()
    assert len((tmp_path / "world" / "prompt_pairs.jsonl").read_text().splitlines()) == 8
    organism = {"source": "organism", "family": "gpt2", "size": "small", "train_steps": 3}
    out = tmp_path / "models" / "tiny_gpt2"
    train_script.main(
        [
            "--params",
            json.dumps({**organism, "train_seed": 0, "revision": None}),
            f"--corpus={tmp_path / 'world' / 'corpus.txt'}",
            f"--tokenizer={tmp_path / 'world' / 'tokenizer'}",
            f"--output-dir={out}",
            "--seed=7",  # by hand: overrides train_seed
        ]
    )
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "training.json").read_text())["seed"] == 7
    with pytest.raises(SystemExit, match="^error: unknown world parameter"):
        make_world.main(
            ["--params", json.dumps({**world, "colour": 1}), "--output-dir", str(tmp_path / "w2")]
        )
    with pytest.raises(SystemExit, match="^error: missing parameter.*train_steps"):
        train_script.main(
            [
                "--params",
                json.dumps({"family": "gpt2"}),
                "--corpus=c",
                "--tokenizer=t",
                "--output-dir=o",
            ]
        )


def test_batches_cover_each_line_once_per_epoch_grouped_by_length() -> None:
    lengths = np.random.default_rng(0).integers(3, 40, size=256)
    batches = _batches(lengths, batch_size=16, steps=16, rng=np.random.default_rng(1))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(256))
    # Sorting within chunks keeps padding small: each batch spans a narrow range of lengths.
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.25 * np.ptp(lengths)
    again = _batches(lengths, batch_size=16, steps=40, rng=np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again[:16], strict=True))


@pytest.mark.slow
def test_default_organisms_learn_the_world_but_not_all_of_it(default_study: Path) -> None:
    """The organisms the default study trained (config/config.yaml): accuracy between chance and
    perfect on each built-in task, ordered by how often the corpus states the fact."""
    world = World.generate(42)
    for family, name in zip(ORGANISM_FAMILIES, ("tiny_gpt2", "tiny_neox"), strict=True):
        out = default_study / "results" / "models" / name
        stats = json.loads((out / "training.json").read_text(encoding="utf-8"))
        assert stats["family"] == family, stats
        model = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
        for task in BUILTIN_TASKS:
            result = _mc_accuracy(model, tokenizer, world.task_items(task))
            acc = {bucket: value["acc"] for bucket, value in result["by_bucket"].items()}
            assert result["chance"] == 0.25
            assert 0.5 <= result["acc"] <= 0.9, (family, task, result)
            assert acc["frequent"] > acc["rare"] > acc["unseen"], (family, task, result)
