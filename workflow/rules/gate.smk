# The gate. The checkpoint records the *measured* verdicts (both: plan and controlled) and has no
# params a preview changes; the decision rule takes the one gate.criterion names and applies
# gate.force on top, so switching the criterion or forcing a verdict never re-runs the checkpoint.
# The pre-mortems it reads are the plan's (actspace.plan.PREMORTEMS), one --<name> flag each.


checkpoint gate:
    """Read every pre-mortem's two verdicts and its control; the branches downstream are chosen
    from this output."""
    input:
        script="scripts/gate.py",
        **{pm: pm_outputs(pm)["results"] for pm in plan.PREMORTEM_NAMES},
    output:
        verdicts=gate_output("verdicts"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/gate.log",
    benchmark:
        f"{R}/benchmarks/gate.tsv"
    shell:
        "python {input.script} "
        + "".join(f"--{pm} {{input.{pm}}} " for pm in plan.PREMORTEM_NAMES)
        + "--output {output.verdicts} > {log} 2>&1"


rule decision:
    """The effective decision (the measured verdicts gate.criterion names, with gate.force
    applied), for people and for every later output."""
    input:
        script="scripts/decide.py",
        verdicts=gate_output("verdicts"),
    output:
        json=gate_output("decision"),
        md=report(
            gate_output("decision_md"), caption=report_caption("decision.rst"), category="Decision"
        ),
    params:
        gate=gate_params(),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/decision.log",
    benchmark:
        f"{R}/benchmarks/decision.tsv"
    shell:
        "python {input.script} --params {params.gate:q} --verdicts {input.verdicts} "
        "--output-json {output.json} --output-md {output.md} > {log} 2>&1"
