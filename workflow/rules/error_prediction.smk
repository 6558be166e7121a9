# Branch 2B (error prediction), scheduled by the gate when PM2 passes: the correctness probe at
# every layer with calibration and task transfer, Contrast-Consistent Search without labels, and
# abstention. All three read activation stores only; one job per experiment and seed.

from actspace.branches.error_prediction.error_prediction_extended import experiment_pairs

EP_EXPERIMENTS = ("error_prediction_extended", "unsupervised_error", "abstention")
EP = {name: config["experiments"][name] for name in EP_EXPERIMENTS}
try:
    # Each experiment's (model, task) stores: its models x tasks (null: all configured).
    EP_PAIRS = {name: experiment_pairs(name, EP[name], MODELS, TASKS) for name in EP}
except ValueError as error:
    raise WorkflowError(f"configuration refused before any job ran: {error}") from None
# The meta.json of every store an experiment reads (the extract rule makes any on demand).
EP_STORES = {
    name: [store_files(model, task)["meta"] for model, task in pairs]
    for name, pairs in EP_PAIRS.items()
}
EP_OUTPUTS = {
    name: {
        key: f"{R}/experiments/{name}/seed{{seed}}/{file}"
        for key, file in (
            ("results", "results.json"),
            ("config", "config.json"),
            ("summary", "summary.md"),
            ("figures", "figure_data.json"),
        )
    }
    for name in EP
}
# Layer lists as the scripts read them: comma-separated, or 'all' for null.
EP_LAYERS = {
    name: ",".join(map(str, EP[name]["layers"])) if EP[name].get("layers") else "all"
    for name in EP
}


rule error_prediction_extended:
    """PM2's probe at every layer: balanced accuracy, AUROC, calibration, groups, task transfer."""
    input:
        script="scripts/error_prediction_extended.py",
        stores=EP_STORES["error_prediction_extended"],
    output:
        **EP_OUTPUTS["error_prediction_extended"],
    log:
        f"{R}/logs/error_prediction_extended/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/error_prediction_extended/seed{{seed}}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    params:
        stores=folder_of("input.stores"),
        exp=EP["error_prediction_extended"],
        layers=EP_LAYERS["error_prediction_extended"],
        outdir=folder_of("output.results"),
    shell:
        "python {input.script} --stores {params.stores} --layers {params.layers} "
        "--pooling {params.exp[pooling]} --n-samples {params.exp[n_samples]} "
        "--test-fraction {params.exp[test_fraction]} --cv-folds {params.exp[cv_folds]} "
        "--Cs {params.exp[Cs]} --n-bins {params.exp[n_bins]} "
        "--n-bootstrap {params.exp[n_bootstrap]} --group-key '{params.exp[group_key]}' "
        "--seed {wildcards.seed} --output-dir {params.outdir} > {log} 2>&1"


rule unsupervised_error:
    """Contrast-Consistent Search on the chosen answer against the other choices, no labels."""
    input:
        script="scripts/unsupervised_error.py",
        stores=EP_STORES["unsupervised_error"],
    output:
        **EP_OUTPUTS["unsupervised_error"],
    log:
        f"{R}/logs/unsupervised_error/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/unsupervised_error/seed{{seed}}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    params:
        stores=folder_of("input.stores"),
        exp=EP["unsupervised_error"],
        layers=EP_LAYERS["unsupervised_error"],
        outdir=folder_of("output.results"),
    shell:
        "python {input.script} --stores {params.stores} --layer {params.exp[layer]} "
        "--layers {params.layers} --pooling {params.exp[pooling]} "
        "--n-samples {params.exp[n_samples]} --test-fraction {params.exp[test_fraction]} "
        "--n-restarts {params.exp[n_restarts]} --n-epochs {params.exp[n_epochs]} "
        "--lr {params.exp[lr]} --weight-decay {params.exp[weight_decay]} "
        "--n-random {params.exp[n_random]} --cv-folds {params.exp[cv_folds]} "
        "--Cs {params.exp[Cs]} --n-bootstrap {params.exp[n_bootstrap]} "
        "--success-ratio {params.exp[success_ratio]} --seed {wildcards.seed} "
        "--output-dir {params.outdir} > {log} 2>&1"


rule abstention:
    """Abstain below the probe's P(correct) threshold: coverage, effective accuracy, risk-coverage."""
    input:
        script="scripts/abstention.py",
        stores=EP_STORES["abstention"],
    output:
        **EP_OUTPUTS["abstention"],
    log:
        f"{R}/logs/abstention/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/abstention/seed{{seed}}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    params:
        stores=folder_of("input.stores"),
        exp=EP["abstention"],
        outdir=folder_of("output.results"),
    shell:
        "python {input.script} --stores {params.stores} --threshold {params.exp[threshold]} "
        "--layer {params.exp[layer]} --pooling {params.exp[pooling]} "
        "--n-samples {params.exp[n_samples]} --test-fraction {params.exp[test_fraction]} "
        "--cv-folds {params.exp[cv_folds]} --Cs {params.exp[Cs]} "
        "--n-bootstrap {params.exp[n_bootstrap]} --n-random {params.exp[n_random]} "
        "--seed {wildcards.seed} --output-dir {params.outdir} > {log} 2>&1"
