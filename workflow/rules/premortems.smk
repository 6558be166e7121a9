# Phase 1: the three cheap pre-mortem experiments, each with a PASS / INCONCLUSIVE / FAIL verdict.
# Each rule passes its own resolved section of the configuration (and the seed) as --params, so
# that changing one pre-mortem's key re-runs that pre-mortem, the gate and what follows, nothing
# else. Null model/task choices are already resolved (actspace.premortems.resolve).


rule pm1_cross_model:
    """PM1: held-out correlation after a ridge projection between every pair of models."""
    input:
        script="scripts/pm1_cross_model.py",
        stores=[store_files(m, PM["pm1"]["task"])["meta"] for m in PM["pm1"]["models"]],
    output:
        **pm_outputs("pm1"),
    params:
        step=step_params(PM["pm1"], seed=config["seed"]),
        stores=path_param(
            store_paths((model, PM["pm1"]["task"]) for model in PM["pm1"]["models"])
        ),
        outdir=path_param(plan.premortem("pm1").folder),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/pm1_cross_model.log",
    benchmark:
        f"{R}/benchmarks/pm1_cross_model.tsv"
    shell:
        "python {input.script} --params {params.step:q} --stores {params.stores} "
        "--output-dir {params.outdir} > {log} 2>&1"


rule pm2_error_prediction:
    """PM2: a linear probe on one layer predicts whether the model answered correctly."""
    input:
        script="scripts/pm2_error_prediction.py",
        store=store_files(PM["pm2"]["model"], PM["pm2"]["task"])["meta"],
    output:
        **pm_outputs("pm2"),
    params:
        step=step_params(PM["pm2"], seed=config["seed"]),
        store=path_param(store_path(PM["pm2"]["model"], PM["pm2"]["task"])),
        outdir=path_param(plan.premortem("pm2").folder),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/pm2_error_prediction.log",
    benchmark:
        f"{R}/benchmarks/pm2_error_prediction.tsv"
    shell:
        "python {input.script} --params {params.step:q} --store {params.store} "
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
        step=step_params(
            PM["pm3"],
            seed=config["seed"],
            model_ref=model_reference(PM["pm3"]["model"]),
            dtype=EXTRACT["dtype"],
            device=EXTRACT["device"],
        ),
        outdir=path_param(plan.premortem("pm3").folder),
    threads: model_threads(PM["pm3"]["model"])
    resources:
        runs_model=1,
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/pm3_patching.log",
    benchmark:
        f"{R}/benchmarks/pm3_patching.tsv"
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --params {params.step:q} "
        "--pairs {input.pairs} --output-dir {params.outdir} "
        + progress_arg("pm3_patching")
        + "> {log} 2>&1"
