# The gate. The checkpoint records the *measured* verdicts and has no params a preview changes;
# the decision rule applies gate.force on top, so forcing a verdict never re-runs the checkpoint.


checkpoint gate:
    """Read the three pre-mortem verdicts; the branches downstream are chosen from this output."""
    input:
        script="scripts/gate.py",
        pm1=pm_outputs("pm1")["results"],
        pm2=pm_outputs("pm2")["results"],
        pm3=pm_outputs("pm3")["results"],
    output:
        verdicts=f"{R}/gate/verdicts.json",
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/gate.log",
    benchmark:
        f"{R}/benchmarks/gate.tsv"
    shell:
        "python {input.script} --pm1 {input.pm1} --pm2 {input.pm2} --pm3 {input.pm3} "
        "--output {output.verdicts} > {log} 2>&1"


rule decision:
    """The effective decision (measured verdicts with gate.force applied), for people and for
    every later output."""
    input:
        script="scripts/decide.py",
        verdicts=rules.gate.output.verdicts,
    output:
        json=f"{R}/gate/decision.json",
        md=report(f"{R}/gate/decision.md", caption="../report/decision.rst", category="Decision"),
    params:
        force=force_arg(),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/decision.log",
    benchmark:
        f"{R}/benchmarks/decision.tsv"
    shell:
        "python {input.script} --verdicts {input.verdicts} --force '{params.force}' "
        "--output-json {output.json} --output-md {output.md} > {log} 2>&1"
