# Phase 1 input: ONE forward pass per item gives the choice log-likelihoods, the prediction, its
# correctness and the pooled residual stream at every layer, stored once for every later step.


rule extract:
    """Score every item of a task with a model and fill the activation store."""
    input:
        script="scripts/extract.py",
        model=lambda wc: model_input(wc.model),
        task=f"{R}/tasks/{{task}}.jsonl",
    output:
        **store_files("{model}", "{task}"),
    params:
        model=lambda wc: model_ref(wc.model),
        revision=lambda wc: (
            f"--revision {MODELS[wc.model]['revision']}" if MODELS[wc.model].get("revision") else ""
        ),
        poolings=",".join(EXTRACT["poolings"]),
        batch_size=EXTRACT["batch_size"],
        shard_size=EXTRACT["shard_size"],
        dtype=EXTRACT["dtype"],
        device=EXTRACT["device"],
        storage_dtype=EXTRACT["storage_dtype"],
        outdir=folder_of("output.meta"),
    threads: 2
    resources:
        runs_model=1,
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/extract/{{model}}/{{task}}.log",
    benchmark:
        f"{R}/benchmarks/extract/{{model}}/{{task}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --model {params.model} "
        "{params.revision} --model-name {wildcards.model} --task {input.task} --task-name {wildcards.task} "
        "--poolings {params.poolings} --batch-size {params.batch_size} "
        "--shard-size {params.shard_size} --dtype {params.dtype} --device {params.device} "
        "--storage-dtype {params.storage_dtype} --output-dir {params.outdir} "
        + progress_arg("extract/{wildcards.model}/{wildcards.task}")
        + "> {log} 2>&1"
