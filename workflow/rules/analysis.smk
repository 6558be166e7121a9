# Phase 3: statistics, the summary table, figures, and the study summary, over whatever ran.
#
#   study_config   the resolved configuration as JSON (the paper's appendix reads it)
#   statistics     effect sizes, CIs, p-values (Holm) -> statistics.json, summary_table.md
#   figures        every figure whose data exist; a style change redraws only these
#   study_summary  results/summary.md: what ran and why, headline numbers, where outputs are
#   track          (only with tracking.wandb) every experiment logged to Weights & Biases


rule study_config:
    """The resolved configuration (defaults filled in), for the paper's appendix."""
    input:
        script="scripts/write_config.py",
    output:
        analysis_output("config"),
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
        decision=gate_output("decision"),
        results=experiment_results,
    output:
        statistics=analysis_output("statistics"),
        table=report(
            analysis_output("summary_table"),
            caption=report_caption("summary_table.rst"),
            category="Summary",
        ),
    params:
        step=step_params(
            config["analysis"]["statistics"], seed=config["seed"], primary_seed=config["seed"]
        ),
        outdir=path_param(os.path.dirname(analysis_output("statistics"))),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/statistics.log",
    benchmark:
        f"{R}/benchmarks/statistics.tsv"
    shell:
        "python {input.script} --params {params.step:q} --decision {input.decision} "
        "--results {input.results} --output-dir {params.outdir} > {log} 2>&1"


rule figures:
    """Draw the figures of the branches that ran (PNG and PDF) and a manifest with captions."""
    input:
        script="scripts/make_figures.py",
        decision=gate_output("decision"),
        results=experiment_results,
    output:
        report(
            directory(analysis_output("figures")),
            patterns=["{name}.png"],
            caption=report_caption("figures.rst"),
            category="Figures",
        ),
    params:
        style=step_params(config["analysis"]["figures"]),
        # the results folder the figures' data live in
        results=path_param(R),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/figures.log",
    benchmark:
        f"{R}/benchmarks/figures.tsv"
    shell:
        "MPLBACKEND=Agg python {input.script} --results-dir {params.results} "
        "--params {params.style:q} "
        "--output-dir {output} > {log} 2>&1"


rule study_summary:
    """results/summary.md for a person: the decision, the headline numbers, the outputs."""
    input:
        script="scripts/study_summary.py",
        statistics=analysis_output("statistics"),
        table=analysis_output("summary_table"),
        figures=analysis_output("figures"),
        decision=gate_output("decision_md"),
        paper=paper_targets,
        abort=abort_targets,
    output:
        report(analysis_output("summary"), caption=report_caption("summary.rst"), category="Summary"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/study_summary.log",
    benchmark:
        f"{R}/benchmarks/study_summary.tsv"
    shell:
        "python {input.script} --statistics {input.statistics} --summary-table {input.table} "
        "--decision {input.decision} --figures {input.figures} --paper {input.paper} "
        "--negative-results {input.abort} --output {output} > {log} 2>&1"


rule track:
    """Log every pre-mortem and experiment (configuration, metrics, figures) to W&B."""
    input:
        script="scripts/track.py",
        statistics=analysis_output("statistics"),
        figures=analysis_output("figures"),
        config=analysis_output("config"),
    output:
        analysis_output("tracking"),
    params:
        step=step_params(config["tracking"]["wandb"] or {}, seed=config["seed"]),
        run_dir=path_param(os.path.dirname(analysis_output("tracking"))),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/track.log",
    benchmark:
        f"{R}/benchmarks/track.tsv"
    shell:
        "python {input.script} --params {params.step:q} --statistics {input.statistics} "
        "--figures-dir {input.figures} --config-json {input.config} --run-dir {params.run_dir} "
        "--output {output} > {log} 2>&1"
