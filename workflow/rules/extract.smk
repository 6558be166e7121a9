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
        step=lambda wc: step_params(config["extract"], model_ref=model_reference(wc.model)),
        outdir=path_param(store_path("{model}", "{task}")),
    threads: lambda wc: model_threads(wc.model)
    resources:
        runs_model=1,
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/extract/{{model}}/{{task}}.log",
    benchmark:
        f"{R}/benchmarks/extract/{{model}}/{{task}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --params {params.step:q} "
        "--task {input.task} --task-name {wildcards.task} --output-dir {params.outdir} "
        + progress_arg("extract/{wildcards.model}/{wildcards.task}")
        + "> {log} 2>&1"
