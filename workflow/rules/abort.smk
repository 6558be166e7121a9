# Phase X: when no pre-mortem passes, the plan stops and writes up the negative result.


rule abort_report:
    """results/negative_results.md: the numbers, thresholds, implications and pivot options."""
    input:
        script="scripts/abort_report.py",
        decision=rules.decision.output.json,
    output:
        f"{R}/negative_results.md",
    params:
        force=force_arg(),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/abort_report.log",
    benchmark:
        f"{R}/benchmarks/abort_report.tsv"
    shell:
        "python {input.script} --decision {input.decision} --output {output} > {log} 2>&1"
