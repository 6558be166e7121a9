"""The progress file of long steps: known rates and ETAs on a fake clock, few writes, failure
recorded, I/O errors survived; and the long steps that keep one."""

from __future__ import annotations

import itertools
import json
import os
import platform
import warnings
from pathlib import Path

import pytest
from helpers.scripts import load_script
from helpers.world import SMALL_WORLD

from actspace.core.progress import Progress, optional_progress, peak_rss_mb
from actspace.core.schema import validate_schema

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakeClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _progress(path: Path, clock: FakeClock, **kwargs) -> Progress:
    return Progress(path, clock=clock, wall_clock=lambda: 1_000_000.0 + clock.t, **kwargs)


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_rate_and_eta_on_a_fake_clock(tmp_path):
    clock = FakeClock()
    path = tmp_path / "p" / "step.json"
    with _progress(path, clock, total=100, step="demo", every_s=2.0) as progress:
        record = _read(path)  # written on entry, so status sees the step at once
        assert record["state"] == "running" and record["items_done"] == 0
        assert record["rate_per_s"] is None and record["eta_s"] is None
        clock.t = 5.0
        progress.update(10, checkpoint="shard 1/10")
        record = _read(path)
        assert record["items_done"] == 10 and record["total"] == 100
        assert record["rate_per_s"] == pytest.approx(2.0)  # 10 items in 5 s
        assert record["eta_s"] == pytest.approx(45.0)  # 90 items left at 2/s
        assert record["last_checkpoint"] == "shard 1/10"
        assert record["started"] == 1_000_000.0 and record["updated"] == 1_000_005.0
        assert record["step"] == "demo"
        assert record["pid"] == os.getpid() and record["host"] == platform.node()
        assert record["peak_rss_mb"] > 0
        clock.t = 10.0
        progress.update(90)
    record = _read(path)
    assert record["state"] == "done" and record["items_done"] == 100
    assert record["eta_s"] == 0.0 and record["rate_per_s"] == pytest.approx(10.0)
    assert record["elapsed_s"] == 10.0 and record["error"] is None


def test_writes_at_most_once_per_interval_plus_the_final_write(tmp_path, monkeypatch):
    written: list[dict] = []
    monkeypatch.setattr("actspace.core.progress.atomic_write_json", lambda p, r: written.append(r))
    clock = FakeClock()
    with _progress(tmp_path / "p.json", clock, total=1000, every_s=10.0) as progress:
        for _ in range(1000):  # one item per 0.1 s: 100 s in all
            clock.t += 0.1
            progress.update()
    # on entry, then at most once per 10 s of the 100 s, then the final write
    assert len(written) <= 1 + 10 + 1
    assert len(written) >= 10
    assert progress.n_writes == len(written)
    assert written[-1]["state"] == "done" and written[-1]["items_done"] == 1000


def test_an_exception_is_recorded_as_failed_and_re_raised(tmp_path):
    clock = FakeClock()
    path = tmp_path / "step.json"
    with pytest.raises(ValueError, match="boom"), _progress(path, clock, total=10) as progress:
        progress.update(3)
        raise ValueError("boom")
    record = _read(path)
    assert record["state"] == "failed" and record["items_done"] == 3
    assert record["error"] == "ValueError: boom"


def test_interrupt_is_failed_and_a_clean_exit_is_done(tmp_path):
    clock = FakeClock()
    with pytest.raises(KeyboardInterrupt), _progress(tmp_path / "a.json", clock):
        raise KeyboardInterrupt
    assert _read(tmp_path / "a.json")["error"] == "KeyboardInterrupt"
    with pytest.raises(SystemExit), _progress(tmp_path / "b.json", clock):
        raise SystemExit(0)
    assert _read(tmp_path / "b.json")["state"] == "done"
    with pytest.raises(SystemExit), _progress(tmp_path / "c.json", clock):
        raise SystemExit("error: no model")
    assert _read(tmp_path / "c.json")["state"] == "failed"


def test_an_unwritable_path_warns_once_and_the_step_goes_on(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    clock = FakeClock()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _progress(blocker / "step.json", clock, total=5, every_s=0.0) as progress:
            for _ in range(5):
                clock.t += 1
                progress.update()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "could not be written" in messages[0]
    assert progress.items_done == 5 and progress.state == "done" and progress.n_writes == 0


def test_a_resumed_run_counts_earlier_items_but_not_in_the_rate(tmp_path):
    clock = FakeClock()
    path = tmp_path / "step.json"
    with _progress(path, clock) as progress:
        assert _read(path)["total"] is None
        clock.t = 7.0  # model loading
        progress.set_total(10, initial=4)
        assert _read(path)["total"] == 10 and _read(path)["items_done"] == 4
        clock.t = 10.0
        progress.update(3)
        assert progress.rate_per_s == pytest.approx(1.0)  # 3 items in the 3 s since set_total
        assert progress.eta_s == pytest.approx(3.0)
        assert progress.elapsed_s == pytest.approx(10.0)


def test_optional_progress_and_bad_arguments(tmp_path):
    with optional_progress(None, step="x") as progress:
        assert progress is None
    with optional_progress(tmp_path / "x.json", 3, step="x") as progress:
        assert isinstance(progress, Progress) and progress.total == 3
    assert _read(tmp_path / "x.json")["state"] == "done"
    with pytest.raises(ValueError, match="every_s"):
        Progress(tmp_path / "y.json", every_s=-1)
    with pytest.raises(ValueError, match="state"):
        Progress(tmp_path / "y.json").close("paused")
    assert peak_rss_mb() > 1


# ------------------------------------------------------------------------------ the long steps
def _tracker(tmp_path: Path, name: str) -> Progress:
    return Progress(tmp_path / f"{name}.json", step=name, every_s=0.0)


@pytest.fixture(scope="module")
def gpt2(tiny_model_dir):
    from actspace.lm.models import load_model

    return load_model(tiny_model_dir("gpt2"), dtype="float32", device="cpu")


def _pairs(tokenizer, n: int = 3):
    from actspace.methods.patching import PromptPair, encode_pairs

    template = "The cat sat on{w} mat and looked at"
    candidates = [
        PromptPair(f"p{k}", template.format(w=a), template.format(w=b), "roof", "A", {})
        for k, (a, b) in enumerate(itertools.permutations((" roof", " A", " the", " and"), 2))
    ]
    usable, _ = encode_pairs(tokenizer, candidates)
    assert len(usable) >= n
    return [e.pair for e in usable[:n]]


def test_extraction_counts_items_and_shards(gpt2, tmp_path):
    from actspace.lm.extraction import extract_store
    from actspace.lm.tasks import Item

    model, tokenizer = gpt2
    items = [
        Item(f"i{k}", f"The cat sat on the {w}", ["mat", "roof"], k % 2, {})
        for k, w in enumerate(("mat", "roof", "dog", "bird", "fox"))
    ]
    tracker = _tracker(tmp_path, "extract")
    with tracker:
        extract_store(
            model,
            tokenizer,
            items,
            tmp_path / "store",
            poolings=["last", "mean"],
            batch_size=2,
            shard_size=2,
            storage_dtype="auto",
            progress=False,
            progress_file=tracker,
        )
    record = _read(tmp_path / "extract.json")
    assert (record["items_done"], record["total"], record["state"]) == (5, 5, "done")
    assert record["last_checkpoint"] == "shard 3/3"


def test_patching_sweeps_count_pairs(gpt2, tmp_path):
    from actspace.branches.patching.patching_layers import run_layer_position_sweep
    from actspace.premortems.pm3 import run_pm3

    model, tokenizer = gpt2
    pairs = _pairs(tokenizer)
    with _tracker(tmp_path, "pm3") as tracker:
        stats = {"n_bootstrap": 10, "seed": 0, "threshold": 0.5, "selection_fraction": 0.5}
        run_pm3(
            model,
            tokenizer,
            pairs,
            **stats,
            position="diff",
            layers=None,
            n_pairs=3,
            layer_band=(0.25, 0.75),
            progress=tracker,
        )
    assert (tracker.items_done, tracker.total) == (6, 6)  # each pair at both positions
    with _tracker(tmp_path, "sweep") as tracker:
        run_layer_position_sweep(
            model,
            tokenizer,
            pairs,
            layers=None,
            max_batch=256,
            n_bootstrap=10,
            seed=0,
            progress=tracker,
        )
    assert (tracker.items_done, tracker.total) == (3, 3)
    assert _read(tmp_path / "sweep.json")["state"] == "done"


def test_behavior_edit_counts_generation_settings(gpt2, tmp_path):
    from actspace.branches.patching.behavior_edit import (
        ContrastPair,
        SamplingSettings,
        SideEffectData,
        run_behavior_edit,
    )
    from actspace.methods.scorers import LexiconScorer

    model, tokenizer = gpt2
    texts = ["The cat sat on the mat.", "A man is on a roof.", "The dog", "The quick fox"]
    pairs = {
        "toxicity": [
            ContrastPair(f"t{k}", "toxicity", t + " idiot", t) for k, t in enumerate(texts)
        ]
    }
    prompts = [{"id": f"p{k}", "prompt": t} for k, t in enumerate(texts)]
    with _tracker(tmp_path, "edit") as tracker:
        run_behavior_edit(
            model,
            tokenizer,
            pairs=pairs,
            prompts=prompts,
            scorers={"toxicity": LexiconScorer("toxicity")},
            layers=[1],
            coefficients=[0.0, 2.0],
            side=SideEffectData(texts=texts),  # 2 check the budget, 2 report it
            vector_pairs={"toxicity": [0, 1]},
            settings=SamplingSettings(
                max_new_tokens=2, temperature=1.0, top_k=50, samples_per_prompt=1, batch_size=4
            ),
            pooling="mean",
            selection_fraction=0.5,
            max_perplexity_ratio=None,
            n_bootstrap=10,
            seed=0,
            progress=tracker,
        )
    # The baseline, two settings and the random direction at the chosen one.
    assert (tracker.items_done, tracker.total) == (4, 4)
    assert tracker.last_checkpoint == "toxicity random direction"


def test_training_counts_steps(tmp_path):
    from actspace.world.organisms import prepare_world, read_corpus, train_organism
    from actspace.world.synthetic import World

    world = World.generate(3, **SMALL_WORLD)
    prepare_world(
        tmp_path / "w",
        world,
        vocab_size=1024,
        n_prompt_pairs=20,
        n_attribute_texts=10,
        n_neutral_prompts=5,
    )
    with _tracker(tmp_path, "train") as tracker:
        train_organism(
            "gpt2",
            read_corpus(tmp_path / "w" / "corpus.txt"),
            tmp_path / "w" / "tokenizer",
            tmp_path / "model",
            train_seed=0,
            size="small",
            train_steps=3,
            progress=tracker,
        )
    assert (tracker.items_done, tracker.total) == (3, 3)
    assert tracker.last_checkpoint.startswith("saved to")


def test_extract_script_keeps_the_progress_file_and_records_a_failure(tiny_model_dir, tmp_path):
    from actspace.core.io import write_jsonl
    from actspace.lm.tasks import Item, items_to_rows

    task = tmp_path / "demo.jsonl"
    items = [Item(f"i{k}", f"The cat sat {k}", ["mat", "roof"], 0, {}) for k in range(3)]
    write_jsonl(task, items_to_rows(items))
    progress = tmp_path / "progress" / "extract" / "m" / "demo.json"
    section = validate_schema({})["extract"]
    args = ["--task", str(task), "--output-dir", str(tmp_path / "store"), "--no-progress"]
    args += ["--params", json.dumps(section)]
    args += ["--progress-file", str(progress)]
    assert load_script("extract").main(["--model", str(tiny_model_dir("gpt2")), *args]) == 0
    record = _read(progress)
    assert (record["state"], record["items_done"], record["total"]) == ("done", 3, 3)
    with pytest.raises(SystemExit, match="could not load model"):
        load_script("extract").main(["--model", str(tmp_path / "nope"), *args])
    record = _read(progress)
    assert record["state"] == "failed" and "nope" in record["error"]
