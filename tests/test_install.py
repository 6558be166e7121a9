"""A non-editable install runs the workflow: the package finds its schema and templates (package
data, through importlib.resources), not the source tree.

The project is installed with ``pip install --no-deps --no-build-isolation .`` into a fresh virtual
environment that sees this environment's packages (``--system-site-packages``: torch, Snakemake,
...), so the test needs no network. Then ``snakemake -n`` runs with that environment's Python in a
copy of the workflow, with ``PYTHONPATH`` unset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from helpers.workflow import ROOT, copy_workflow, scheduled_jobs

#: What ``pip install .`` reads from the project (the build works on a copy, so that the source
#: tree gets no build/ or egg-info folders).
PROJECT_FILES = ("pyproject.toml", "README.md", "src")


def _run(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


@pytest.mark.slow
def test_a_non_editable_install_runs_the_workflow_from_a_copy(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", HF_HUB_OFFLINE="1")

    source = tmp_path / "source"
    source.mkdir()
    for name in PROJECT_FILES:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)

    # No pip inside the environment (Debian's Python has no ensurepip): this pip installs into it.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
        + ["--no-build-isolation", "--no-index", str(source)],
        cwd=tmp_path,
        env=env,
    )

    workdir = copy_workflow(tmp_path / "workflow")
    where = _run(
        [str(python), "-c", "import actspace, sys; print(actspace.__file__)"], cwd=workdir, env=env
    )
    installed = Path(where.stdout.strip()).resolve()
    assert installed.is_relative_to(env_dir.resolve()), installed
    assert not installed.is_relative_to(ROOT.resolve()), installed

    result = _run([str(python), "-m", "snakemake", "-n", "--cores", "1"], cwd=workdir, env=env)
    jobs = scheduled_jobs(result.stdout + result.stderr)
    assert jobs["make_world"] == 1 and jobs["gate"] == 1, jobs
    assert jobs["extract"] >= 1 and jobs["all"] == 1, jobs
    assert not (workdir / "results").exists()  # a dry run writes nothing
