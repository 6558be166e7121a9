# Branch 2A, cross-model transfer (scheduled when PM1 passes): the layer-by-layer alignment of
# every model pair, and the transfer of one model's activation into another's forward pass.
# Null model/task choices are already resolved (actspace.branches.cross_model.resolve, run by
# resolve_config in common.smk); each rule passes its section as --params.


rule cross_model_extended:
    """2A: every model pair x every layer pair: ridge correlation, debiased CKA, mutual kNN."""
    input:
        script="scripts/cross_model_extended.py",
        stores=[
            store_files(model, config["experiments"]["cross_model_extended"]["task"])["meta"]
            for model in config["experiments"]["cross_model_extended"]["models"]
        ],
    output:
        **experiment_output("cross_model_extended"),
    log:
        experiment_log("cross_model_extended", ".log"),
    benchmark:
        experiment_log("cross_model_extended", ".tsv")
    conda:
        CONDA_ENV
    threads: 2
    params:
        step=step_params(config["experiments"]["cross_model_extended"], seed=config["seed"]),
        stores=path_param(
            store_paths(
                (model, config["experiments"]["cross_model_extended"]["task"])
                for model in config["experiments"]["cross_model_extended"]["models"]
            )
        ),
        outdir=path_param(experiment_folder("cross_model_extended")),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --params {params.step:q} "
        "--stores {params.stores} --output-dir {params.outdir} > {log} 2>&1"


rule activation_transfer:
    """2A: inject the source's mapped activation into the target while it scores the choices."""
    input:
        script="scripts/activation_transfer.py",
        model=model_input(config["experiments"]["activation_transfer"]["target"]),
        task=f"{R}/tasks/{config['experiments']['activation_transfer']['task']}.jsonl",
        source=store_files(
            config["experiments"]["activation_transfer"]["source"],
            config["experiments"]["activation_transfer"]["task"],
        )["meta"],
        target=store_files(
            config["experiments"]["activation_transfer"]["target"],
            config["experiments"]["activation_transfer"]["task"],
        )["meta"],
    output:
        **experiment_output("activation_transfer"),
    log:
        experiment_log("activation_transfer", ".log"),
    benchmark:
        experiment_log("activation_transfer", ".tsv")
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    threads: 2
    resources:
        runs_model=1,
    params:
        step=step_params(
            config["experiments"]["activation_transfer"],
            model_ref=model_reference(config["experiments"]["activation_transfer"]["target"]),
            dtype=EXTRACT["dtype"],
            device=EXTRACT["device"],
        ),
        source_store=path_param(
            store_path(
                config["experiments"]["activation_transfer"]["source"],
                config["experiments"]["activation_transfer"]["task"],
            )
        ),
        target_store=path_param(
            store_path(
                config["experiments"]["activation_transfer"]["target"],
                config["experiments"]["activation_transfer"]["task"],
            )
        ),
        outdir=path_param(experiment_folder("activation_transfer")),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --params {params.step:q} "
        "--source-store {params.source_store} --target-store {params.target_store} "
        "--task {input.task} --seed {wildcards.seed} --output-dir {params.outdir} > {log} 2>&1"
