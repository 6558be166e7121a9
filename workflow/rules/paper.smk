# Phase 4: the paper draft (skipped when the plan aborts). The venue template is chosen by the
# strongest result; the abstract and draft are Jinja templates filled from statistics.json. The
# templates and the bibliography are package data of actspace: make_paper.py reads them from the
# installed package, and the rule lists them as inputs (common.smk's paper_templates), so that
# editing one re-runs the paper.


rule paper:
    """abstract.txt, draft.tex, related_work.bib and the figures the draft includes."""
    input:
        script="scripts/make_paper.py",
        statistics=analysis_output("statistics"),
        table=analysis_output("summary_table"),
        figures=analysis_output("figures"),
        config=analysis_output("config"),
        templates=paper_templates(),
    output:
        abstract=f"{R}/paper/abstract.txt",
        draft=f"{R}/paper/draft.tex",
        bib=f"{R}/paper/related_work.bib",
        info=f"{R}/paper/paper.json",
        figures=directory(f"{R}/paper/figures"),
    params:
        outdir=path_param(f"{R}/paper"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/paper.log",
    benchmark:
        f"{R}/benchmarks/paper.tsv"
    shell:
        "python {input.script} --statistics {input.statistics} "
        "--figures-manifest {input.figures}/figures.json --config-json {input.config} "
        "--summary-table {input.table} --output-dir {params.outdir} > {log} 2>&1"
