# Branch 2B, error prediction (scheduled when PM2 passes): the correctness probe at every layer
# with calibration and task transfer, Contrast-Consistent Search without labels, and abstention.
# All three read activation stores only (the extract rule makes any on demand): the stores of
# their section's models x tasks, already resolved (actspace.branches.error_prediction.resolve,
# run by resolve_config in common.smk). Each rule passes its section as --params; one job per
# experiment and seed.

from actspace.branches.error_prediction.resolve import store_pairs


rule error_prediction_extended:
    """2B: PM2's probe at every layer: balanced accuracy, AUROC, calibration, groups, transfer."""
    input:
        script="scripts/error_prediction_extended.py",
        stores=[
            store_files(model, task)["meta"]
            for model, task in store_pairs(config["experiments"]["error_prediction_extended"])
        ],
    output:
        **experiment_output("error_prediction_extended"),
    log:
        experiment_log("error_prediction_extended", ".log"),
    benchmark:
        experiment_log("error_prediction_extended", ".tsv")
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    params:
        step=step_params(config["experiments"]["error_prediction_extended"]),
        stores=path_param(
            store_paths(store_pairs(config["experiments"]["error_prediction_extended"]))
        ),
        outdir=path_param(experiment_folder("error_prediction_extended")),
    shell:
        "python {input.script} --params {params.step:q} --stores {params.stores} "
        "--seed {wildcards.seed} --output-dir {params.outdir} > {log} 2>&1"


rule unsupervised_error:
    """2B: Contrast-Consistent Search on the chosen answer against the other choices, no labels."""
    input:
        script="scripts/unsupervised_error.py",
        stores=[
            store_files(model, task)["meta"]
            for model, task in store_pairs(config["experiments"]["unsupervised_error"])
        ],
    output:
        **experiment_output("unsupervised_error"),
    log:
        experiment_log("unsupervised_error", ".log"),
    benchmark:
        experiment_log("unsupervised_error", ".tsv")
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    params:
        step=step_params(config["experiments"]["unsupervised_error"]),
        stores=path_param(
            store_paths(store_pairs(config["experiments"]["unsupervised_error"]))
        ),
        outdir=path_param(experiment_folder("unsupervised_error")),
    shell:
        "python {input.script} --params {params.step:q} --stores {params.stores} "
        "--seed {wildcards.seed} --output-dir {params.outdir} > {log} 2>&1"


rule abstention:
    """2B: abstain below the probe's P(correct) threshold: coverage, effective accuracy, AURC."""
    input:
        script="scripts/abstention.py",
        stores=[
            store_files(model, task)["meta"]
            for model, task in store_pairs(config["experiments"]["abstention"])
        ],
    output:
        **experiment_output("abstention"),
    log:
        experiment_log("abstention", ".log"),
    benchmark:
        experiment_log("abstention", ".tsv")
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    params:
        step=step_params(config["experiments"]["abstention"]),
        stores=path_param(
            store_paths(store_pairs(config["experiments"]["abstention"]))
        ),
        outdir=path_param(experiment_folder("abstention")),
    shell:
        "python {input.script} --params {params.step:q} --stores {params.stores} "
        "--seed {wildcards.seed} --output-dir {params.outdir} > {log} 2>&1"
