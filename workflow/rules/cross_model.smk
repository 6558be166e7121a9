# Branch 2A, cross-model transfer (scheduled when PM1 passes): the layer-by-layer alignment of
# every model pair, and the transfer of one model's activation into another's forward pass.
# Null model/task choices are resolved here and written back into the configuration, so that
# later steps see the models and task that actually ran.


XM = dict(config["experiments"]["cross_model_extended"])
XM["models"] = list(XM["models"] or MODELS)
XM["task"] = XM["task"] or next(iter(TASKS))
XT = dict(config["experiments"]["activation_transfer"])
XT["source"] = XT["source"] or list(MODELS)[0]
XT["target"] = XT["target"] or list(MODELS)[min(1, len(MODELS) - 1)]
XT["task"] = XT["task"] or next(iter(TASKS))
_2A_NAMES = [
    (f"cross_model_extended.models[{i}]", name, MODELS, "model")
    for i, name in enumerate(XM["models"])
] + [
    ("cross_model_extended.task", XM["task"], TASKS, "task"),
    ("activation_transfer.source", XT["source"], MODELS, "model"),
    ("activation_transfer.target", XT["target"], MODELS, "model"),
    ("activation_transfer.task", XT["task"], TASKS, "task"),
]
for _key, _name, _defined, _kind in _2A_NAMES:
    if _name not in _defined:
        raise WorkflowError(
            f"configuration refused before any job ran: experiments.{_key}: {_kind} "
            f"{_name!r} is not defined (defined {_kind}s: {', '.join(_defined)})"
        )
if len(XM["models"]) < 2:
    raise WorkflowError(
        "configuration refused before any job ran: experiments.cross_model_extended.models: "
        "needs at least two models"
    )
if XT["test_fraction"] + XT["val_fraction"] >= 1:
    raise WorkflowError(
        "configuration refused before any job ran: experiments.activation_transfer."
        "val_fraction: test_fraction + val_fraction must be below 1 "
        f"(got {XT['test_fraction']} + {XT['val_fraction']})"
    )
config["experiments"]["cross_model_extended"] = XM
config["experiments"]["activation_transfer"] = XT
XP_DIR = f"{R}/experiments"
EXPERIMENT_FILES = ("results.json", "config.json", "summary.md")
TRANSFER_REVISION = MODELS[XT["target"]].get("revision") or ""


rule cross_model_extended:
    """2A: every model pair x every layer pair: ridge correlation, debiased CKA, mutual kNN."""
    input:
        script="scripts/cross_model_extended.py",
        stores=[store_files(m, XM["task"])["meta"] for m in XM["models"]],
    output:
        results=f"{XP_DIR}/cross_model_extended/results.json",
        config=f"{XP_DIR}/cross_model_extended/config.json",
        summary=f"{XP_DIR}/cross_model_extended/summary.md",
        figure_data=f"{XP_DIR}/cross_model_extended/figure_data.json",
    log:
        f"{R}/logs/cross_model_extended.log",
    benchmark:
        f"{R}/benchmarks/cross_model_extended.tsv"
    conda:
        CONDA_ENV
    threads: 2
    params:
        stores=folder_of("input.stores"),
        names=",".join(XM["models"]),
        xm=XM,
        grid="--full-grid" if XM["full_grid"] else "--no-full-grid",
        seed=config["seed"],
        outdir=folder_of("output.results"),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --stores {params.stores} "
        "--model-names {params.names} --pooling {params.xm[pooling]} "
        "--n-samples {params.xm[n_samples]} --test-fraction {params.xm[test_fraction]} "
        "--ridge-alpha {params.xm[ridge_alpha]} --k {params.xm[k]} "
        "--n-permutations {params.xm[n_permutations]} "
        "--n-outlier-dims {params.xm[n_outlier_dims]} --layer-depth {params.xm[layer_depth]} "
        "{params.grid} --n-bootstrap {params.xm[n_bootstrap]} --seed {params.seed} "
        "--output-dir {params.outdir} > {log} 2>&1"


rule activation_transfer:
    """2A: inject the source's mapped activation into the target while it scores the choices."""
    input:
        script="scripts/activation_transfer.py",
        model=model_input(XT["target"]),
        task=f"{R}/tasks/{XT['task']}.jsonl",
        source=store_files(XT["source"], XT["task"])["meta"],
        target=store_files(XT["target"], XT["task"])["meta"],
    output:
        results=f"{XP_DIR}/activation_transfer/seed{{seed}}/results.json",
        config=f"{XP_DIR}/activation_transfer/seed{{seed}}/config.json",
        summary=f"{XP_DIR}/activation_transfer/seed{{seed}}/summary.md",
    log:
        f"{R}/logs/activation_transfer/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/activation_transfer/seed{{seed}}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    threads: 2
    resources:
        runs_model=1,
    params:
        model=lambda wc, input: input.model or model_ref(XT["target"]),
        revision=f"--revision {TRANSFER_REVISION}" if TRANSFER_REVISION else "",
        source_store=folder_of("input.source"),
        target_store=folder_of("input.target"),
        xt=XT,
        coefficients=",".join(str(c) for c in XT["coefficients"]),
        dtype=EXTRACT["dtype"],
        device=EXTRACT["device"],
        outdir=folder_of("output.results"),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --source-store {params.source_store} "
        "--target-store {params.target_store} --model {params.model} {params.revision} "
        "--task {input.task} --source-name {params.xt[source]} "
        "--target-name {params.xt[target]} --source-layer {params.xt[source_layer]} "
        "--target-layer {params.xt[target_layer]} --layer-depth {params.xt[layer_depth]} "
        "--mode {params.xt[mode]} --coefficients {params.coefficients} "
        "--metric {params.xt[metric]} --n-samples {params.xt[n_samples]} "
        "--test-fraction {params.xt[test_fraction]} --val-fraction {params.xt[val_fraction]} "
        "--ridge-alpha {params.xt[ridge_alpha]} --n-bootstrap {params.xt[n_bootstrap]} "
        "--min-gain {params.xt[min_gain]} --batch-size {params.xt[batch_size]} "
        "--dtype {params.dtype} --device {params.device} --seed {wildcards.seed} "
        "--output-dir {params.outdir} > {log} 2>&1"
