"""The tested range of transformers: the shared-prefix pass behaves the same at both ends.

pyproject.toml states the range (``transformers>=LOWER,<UPPER``). The one place the code branches on
the version is the name of the key/value cache argument (``cache`` from 5.24 on,
``past_key_values`` before: :func:`actspace.lm.forward.cache_argument`). The slow test installs the
lower bound into a virtual environment that sees this one's packages, scores the same items of the
same tiny models there, and checks that the old branch was taken and gives the same numbers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest
import transformers
from packaging.version import Version

from actspace.lm.forward import cache_argument, encode_items, score_batch
from actspace.lm.models import load_model
from actspace.lm.tasks import Item

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("gpt2", "llama", "opt")
pytestmark = pytest.mark.filterwarnings("error::FutureWarning")
ITEMS = [
    Item(id="a", context="The cat sat on the", choices=[" mat", " roof of the house"], label=0),
    Item(id="b", context="Question: what is 2 + 2?\nAnswer:", choices=[" 4", " 10", " D"], label=0),
]

#: Run inside the lower-bound environment: score ITEMS with every model given, print JSON.
PROBE = """
import json, sys
import transformers
from actspace.lm.forward import cache_argument, encode_items, score_batch
from actspace.lm.models import load_model
from actspace.lm.tasks import Item
items = [Item(**row) for row in json.loads(sys.argv[1])]
out = {"version": transformers.__version__}
for folder in sys.argv[2:]:
    model, tokenizer = load_model(folder, dtype="float32", device="cpu")
    encoded, _ = encode_items(tokenizer, items)
    result = score_batch(model, encoded, capture=False)
    out[folder] = {"argument": cache_argument(model), "logliks": result.logliks}
print(json.dumps(out))
"""


def _transformers_range() -> tuple[Version, Version]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in dependencies if d.startswith("transformers"))
    lower = re.search(r">=\s*([\w.]+)", spec)
    upper = re.search(r"<\s*([\w.]+)", spec)
    assert lower and upper, f"pyproject.toml must state both bounds of transformers: {spec!r}"
    return Version(lower.group(1)), Version(upper.group(1))


def test_installed_transformers_is_inside_the_stated_range():
    lower, upper = _transformers_range()
    assert lower <= Version(transformers.__version__) < upper


def test_current_transformers_uses_the_new_cache_argument(tiny_model_dir):
    model, _ = load_model(tiny_model_dir("llama"), dtype="float32", device="cpu")
    expected = (
        "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
    )
    assert cache_argument(model) == expected


def _score_here(folders: list[Path]) -> dict[str, list[list[float]]]:
    scores = {}
    for folder in folders:
        model, tokenizer = load_model(folder, dtype="float32", device="cpu")
        encoded, _ = encode_items(tokenizer, ITEMS)
        scores[str(folder)] = score_batch(model, encoded, capture=False).logliks
    return scores


def _portable_copy(folder: Path, tmp_path: Path) -> Path:
    """A copy of a tiny model that transformers 4.x can read too: transformers 5 names its
    tokenizer class ``TokenizersBackend``, which 4.x lacks; ``PreTrainedTokenizerFast`` is the same
    fast tokenizer under the name both know."""
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    config_file = copy / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config))
    return copy


@pytest.mark.slow
def test_lower_bound_takes_the_old_branch_and_scores_the_same(tiny_model_dir, tmp_path):
    lower, _ = _transformers_range()
    env = tmp_path / "lower"
    venv.create(env, system_site_packages=True, with_pip=True)
    python = env / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", f"transformers=={lower}"]
    done = subprocess.run(install, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot install transformers=={lower}: {done.stderr.strip()[-300:]}")
    folders = [_portable_copy(tiny_model_dir(family), tmp_path) for family in FAMILIES]
    items = json.dumps([vars(item) for item in ITEMS])
    command = [str(python), "-c", PROBE, items, *map(str, folders)]
    probe = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    there = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Version(there["version"]) == lower
    here = _score_here(folders)
    for folder in map(str, folders):
        assert there[folder]["argument"] == "past_key_values"
        for theirs, ours in zip(there[folder]["logliks"], here[folder], strict=True):
            assert theirs == pytest.approx(ours, abs=1e-5)
    print(f"transformers {lower} and {transformers.__version__} agree on {', '.join(FAMILIES)}")
