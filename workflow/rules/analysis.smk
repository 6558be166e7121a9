# Phase 3: statistics, the summary table, figures, and the study summary, over whatever ran.
#
#   study_config   the resolved configuration as JSON (the paper's appendix reads it)
#   statistics     effect sizes, CIs, p-values (Holm) -> statistics.json, summary_table.md
#   figures        every figure whose data exist; a style change redraws only these
#   study_summary  results/summary.md: what ran and why, headline numbers, where outputs are
#   track          (only with tracking.wandb) every experiment logged to Weights & Biases

ANALYSIS = config["analysis"]
A_DIR = f"{R}/analysis"


rule study_config:
    """The resolved configuration (defaults filled in), for the paper's appendix."""
    input:
        script="scripts/write_config.py",
    output:
        f"{A_DIR}/config.json",
    params:
        config=as_json(config),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/study_config.log",
    benchmark:
        f"{R}/benchmarks/study_config.tsv"
    shell:
        "python {input.script} --config-json {params.config:q} --output {output} > {log} 2>&1"


rule statistics:
    """Effect size, bootstrap CI and p-value of every experiment's main comparison, Holm-corrected
    across experiments, with per-seed values; and the summary table."""
    input:
        script="scripts/make_statistics.py",
        decision=rules.decision.output.json,
        results=experiment_results,
    output:
        statistics=f"{A_DIR}/statistics.json",
        table=report(
            f"{A_DIR}/summary_table.md",
            caption="../report/summary_table.rst",
            category="Summary",
        ),
    params:
        stats=ANALYSIS["statistics"],
        results=lambda wc, input: ",".join(input.results),
        primary_seed=config["seed"],
        seed=config["seed"],
        outdir=folder_of("output.statistics"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/statistics.log",
    benchmark:
        f"{R}/benchmarks/statistics.tsv"
    shell:
        "python {input.script} --decision {input.decision} --results '{params.results}' "
        "--primary-seed {params.primary_seed} --n-bootstrap {params.stats[n_bootstrap]} "
        "--n-permutations {params.stats[n_permutations]} --alpha {params.stats[alpha]} "
        "--seed {params.seed} --output-dir {params.outdir} > {log} 2>&1"


rule figures:
    """Draw the figures of the branches that ran (PNG and PDF) and a manifest with captions."""
    input:
        script="scripts/make_figures.py",
        decision=rules.decision.output.json,
        results=experiment_results,
    output:
        report(
            directory(f"{A_DIR}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    params:
        style=as_json(ANALYSIS["figures"]),
        results=lambda wc, input: os.path.dirname(os.path.dirname(input.decision)),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/figures.log",
    benchmark:
        f"{R}/benchmarks/figures.tsv"
    shell:
        "MPLBACKEND=Agg python {input.script} --results-dir {params.results} "
        "--style-json {params.style:q} --output-dir {output} > {log} 2>&1"


rule study_summary:
    """results/summary.md for a person: the decision, the headline numbers, the outputs."""
    input:
        script="scripts/study_summary.py",
        statistics=rules.statistics.output.statistics,
        table=rules.statistics.output.table,
        figures=rules.figures.output[0],
        decision=rules.decision.output.md,
        paper=paper_targets,
        abort=abort_targets,
    output:
        report(f"{R}/summary.md", caption="../report/summary.rst", category="Summary"),
    params:
        outputs=lambda wc, input: as_json(
            {
                "decision": input.decision,
                "statistics": input.statistics,
                "summary_table": input.table,
                "figures": input.figures,
                **({"paper_draft": input.paper[0]} if input.paper else {}),
                **({"negative_results": input.abort[0]} if input.abort else {}),
                "report": "snakemake --report results/report.html",
            }
        ),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/study_summary.log",
    benchmark:
        f"{R}/benchmarks/study_summary.tsv"
    shell:
        "python {input.script} --statistics {input.statistics} "
        "--figures-manifest {input.figures}/figures.json --outputs-json {params.outputs:q} "
        "--output {output} > {log} 2>&1"


rule track:
    """Log every pre-mortem and experiment (configuration, metrics, figures) to W&B."""
    input:
        script="scripts/track.py",
        statistics=rules.statistics.output.statistics,
        figures=rules.figures.output[0],
        config=rules.study_config.output[0],
    output:
        f"{A_DIR}/tracking.json",
    params:
        wandb=config["tracking"]["wandb"] or {},
        group=lambda wc: (config["tracking"]["wandb"] or {}).get("group")
        or f"seed{config['seed']}",
        entity=lambda wc: (config["tracking"]["wandb"] or {}).get("entity") or "",
        run_dir=folder_of("output.0"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/track.log",
    benchmark:
        f"{R}/benchmarks/track.tsv"
    shell:
        "python {input.script} --statistics {input.statistics} --figures-dir {input.figures} "
        "--config-json {input.config} --project {params.wandb[project]:q} "
        "--group {params.group:q} --mode {params.wandb[mode]} --run-dir {params.run_dir} "
        "$([ -n '{params.entity}' ] && echo --entity {params.entity:q}) "
        "--output {output} > {log} 2>&1"
