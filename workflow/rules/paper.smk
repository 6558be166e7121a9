# Phase 4: the paper draft (skipped when the plan aborts). The venue template is chosen by the
# strongest result; the abstract and draft are Jinja templates filled from statistics.json.
from pathlib import Path

PAPER_TEMPLATES = sorted(str(p) for p in Path("paper/templates").glob("*.j2"))


rule paper:
    """abstract.txt, draft.tex, related_work.bib and the figures the draft includes."""
    input:
        script="scripts/make_paper.py",
        statistics=rules.statistics.output.statistics,
        table=rules.statistics.output.table,
        figures=rules.figures.output[0],
        config=rules.study_config.output[0],
        templates=PAPER_TEMPLATES,
        bib="paper/related_work.bib",
    output:
        abstract=f"{R}/paper/abstract.txt",
        draft=f"{R}/paper/draft.tex",
        bib=f"{R}/paper/related_work.bib",
        info=f"{R}/paper/paper.json",
        figures=directory(f"{R}/paper/figures"),
    params:
        outdir=folder_of("output.draft"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/paper.log",
    benchmark:
        f"{R}/benchmarks/paper.tsv"
    shell:
        "python {input.script} --statistics {input.statistics} "
        "--figures-manifest {input.figures}/figures.json --config-json {input.config} "
        "--summary-table {input.table} "
        "--templates paper/templates --bib {input.bib} --output-dir {params.outdir} "
        "> {log} 2>&1"
