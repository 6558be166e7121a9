# Phase X: when no pre-mortem passes, the plan stops and writes up the negative result.


rule abort_report:
    """results/negative_results.md: the numbers, thresholds, implications and pivot options."""
    input:
        script="scripts/abort_report.py",
        decision=gate_output("decision"),
    output:
        plan.ABORT_REPORT,
    params:
        # Not read by the script (the decision records what was forced): it re-runs the report
        # when gate.criterion or gate.force changes.
        gate=gate_params(),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/abort_report.log",
    benchmark:
        f"{R}/benchmarks/abort_report.tsv"
    shell:
        "python {input.script} --decision {input.decision} --output {output} > {log} 2>&1"
