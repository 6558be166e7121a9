"""Run the workflow in a scratch copy of the project and read what Snakemake schedules."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: What a run needs from the project (the package itself is installed).
WORKFLOW_PARTS = ("Snakefile", "workflow", "config", "scripts", "envs")


def copy_workflow(target: Path) -> Path:
    """Copy the workflow files (not results) into ``target``, as a fresh clone would have them."""
    target.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            shutil.copy2(source, target / part)
    return target


def snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir``; on failure raise with its output."""
    result = subprocess.run(
        ["snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    return result


def scheduled_jobs(output: str) -> Counter:
    """The job counts of Snakemake's 'Job stats' table (empty when there is nothing to do)."""
    jobs: Counter = Counter()
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Job stats:"), None)
    if start is None:
        return jobs
    for line in lines[start + 3 :]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match or match.group(1) == "total":
            break
        jobs[match.group(1)] = int(match.group(2))
    return jobs


def dry_run(workdir: Path, *args: str) -> Counter:
    """The jobs ``snakemake -n`` schedules."""
    result = snakemake(workdir, "-n", "--cores", "1", *args)
    return scheduled_jobs(result.stdout + result.stderr)


def force_args(pm1: str | None, pm2: str | None, pm3: str | None) -> list[str]:
    """``--config`` arguments that force verdicts (None leaves one measured)."""
    force = {"pm1": pm1, "pm2": pm2, "pm3": pm3}
    body = ", ".join(f'"{pm}": ' + (f'"{v}"' if v else "null") for pm, v in force.items())
    return ["--config", f'gate={{"force": {{{body}}}}}']


def compile_paper(paper: Path, build: Path) -> Path:
    """Copy the paper folder to ``build`` and compile it as a person would (pdflatex, bibtex,
    pdflatex twice); return the PDF. Raises with the LaTeX log's tail when a step fails."""
    shutil.copytree(paper, build)
    steps = [
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "draft.tex"],
        ["bibtex", "draft"],
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "draft.tex"],
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "draft.tex"],
    ]
    for argv in steps:
        done = subprocess.run(argv, cwd=build, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}")
    return build / "draft.pdf"


def pdf_pages(pdf: Path, folder: Path, dpi: int = 40) -> list[Path]:
    """Render every page of ``pdf`` to a PNG in ``folder`` with poppler's pdftoppm (as a reader
    would see them); the pages in order."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = ["pdftoppm", "-r", str(dpi), "-png", str(pdf), str(folder / "page")]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return sorted(folder.glob("page*.png"), key=lambda p: int(re.sub(r"\D", "", p.stem)))


def pdf_page_texts(pdf: Path) -> list[str]:
    """The text of each page of ``pdf`` in reading order, column by column (poppler's
    pdftotext; pages end with a form feed)."""
    argv = ["pdftotext", str(pdf), "-"]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)
    return done.stdout.split("\f")[:-1] if done.stdout.endswith("\f") else done.stdout.split("\f")
