# Phase 1: the three cheap pre-mortem experiments, each with a PASS / INCONCLUSIVE / FAIL verdict.
# Each rule's params hold exactly its own section of the configuration (and the seed), so that
# changing one pre-mortem's key re-runs that pre-mortem, the gate and what follows, nothing else.



rule pm1_cross_model:
    """PM1: held-out correlation after a ridge projection between every pair of models."""
    input:
        script="scripts/pm1_cross_model.py",
        stores=[store_files(m, PM["pm1"]["task"])["meta"] for m in PM["pm1"]["models"]],
    output:
        **pm_outputs("pm1"),
    params:
        stores=folder_of("input.stores"),
        names=",".join(PM["pm1"]["models"]),
        pm=PM["pm1"],
        seed=config["seed"],
        outdir=folder_of("output.results"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/pm1_cross_model.log",
    benchmark:
        f"{R}/benchmarks/pm1_cross_model.tsv"
    shell:
        "python {input.script} --stores {params.stores} --model-names {params.names} "
        "--layer-depth {params.pm[layer_depth]} --pooling {params.pm[pooling]} "
        "--n-samples {params.pm[n_samples]} --test-fraction {params.pm[test_fraction]} "
        "--ridge-alpha {params.pm[ridge_alpha]} --n-permutations {params.pm[n_permutations]} "
        "--n-bootstrap {params.pm[n_bootstrap]} --threshold {params.pm[threshold]} "
        "--seed {params.seed} --output-dir {params.outdir} > {log} 2>&1"


rule pm2_error_prediction:
    """PM2: a linear probe on one layer predicts whether the model answered correctly."""
    input:
        script="scripts/pm2_error_prediction.py",
        store=store_files(PM["pm2"]["model"], PM["pm2"]["task"])["meta"],
    output:
        **pm_outputs("pm2"),
    params:
        store=folder_of("input.store"),
        pm=PM["pm2"],
        seed=config["seed"],
        outdir=folder_of("output.results"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/pm2_error_prediction.log",
    benchmark:
        f"{R}/benchmarks/pm2_error_prediction.tsv"
    shell:
        "python {input.script} --store {params.store} --layer {params.pm[layer]} "
        "--pooling {params.pm[pooling]} --n-samples {params.pm[n_samples]} "
        "--test-fraction {params.pm[test_fraction]} --val-fraction {params.pm[val_fraction]} "
        "--cv-folds {params.pm[cv_folds]} --n-bootstrap {params.pm[n_bootstrap]} "
        "--threshold {params.pm[threshold]} --seed {params.seed} "
        "--output-dir {params.outdir} > {log} 2>&1"



rule pm3_patching:
    """PM3: patch one layer of the clean run into the corrupted run; count answers that flip."""
    input:
        script="scripts/pm3_patching.py",
        model=model_input(PM["pm3"]["model"]),
        pairs=pm3_pairs(),
    output:
        **pm_outputs("pm3"),
        per_pair=f"{plan.premortem('pm3').folder}/per_pair.jsonl",
    params:
        model=lambda wc, input: input.model or model_ref(PM["pm3"]["model"]),
        pm=PM["pm3"],
        layers=",".join(map(str, PM["pm3"]["layers"] or [])),
        dtype=EXTRACT["dtype"],
        device=EXTRACT["device"],
        seed=config["seed"],
        outdir=folder_of("output.results"),
    threads: 2
    resources:
        runs_model=1,
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/pm3_patching.log",
    benchmark:
        f"{R}/benchmarks/pm3_patching.tsv"
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --model {params.model} "
        "--pairs {input.pairs} --position {params.pm[position]} "
        "--n-samples {params.pm[n_pairs]} --selection-fraction {params.pm[selection_fraction]} "
        "--n-bootstrap {params.pm[n_bootstrap]} --threshold {params.pm[threshold]} "
        "--dtype {params.dtype} --device {params.device} --seed {params.seed} "
        "$([ -n '{params.layers}' ] && echo --layers {params.layers}) "
        "--output-dir {params.outdir} "
        + progress_arg("pm3_patching")
        + "> {log} 2>&1"
