# Branch 2C: activation patching and behaviour editing. Scheduled when PM3 passes.
#
#   patching_layers        denoising and noising at every layer x position of the prompt pairs
#   behavior_edit          steering vectors (toxicity, formality) swept over layer x coefficient
#   patching_vs_prompting  the best steering setting against a prompt prefix, on held-out prompts
#
# Every rule of the branch adds its target files to BRANCH_2C_TARGETS; register_branch at the end
# of the file hands the list to the gate.

from actspace.config import model_depth

PL = config["experiments"]["patching_layers"]
PL_MODEL = PL["model"] or PM["pm3"]["model"]
BE = config["experiments"]["behavior_edit"]
PVP = config["experiments"]["patching_vs_prompting"]
BE_MODEL = BE["model"] or PM["pm3"]["model"]
BE_TASK = BE["side_task"] or next(iter(TASKS))
if BE_MODEL not in MODELS:
    raise WorkflowError(
        f"experiments.behavior_edit.model: model {BE_MODEL!r} is not defined "
        f"(defined models: {', '.join(MODELS)})"
    )
if PL_MODEL not in MODELS:
    raise WorkflowError(
        f"experiments.patching_layers.model: model {PL_MODEL!r} is not defined "
        f"(defined models: {', '.join(MODELS)})"
    )
PL_DEPTH = model_depth(MODELS[PL_MODEL]) if PL["layers"] else None
if PL_DEPTH is not None and max(PL["layers"]) > PL_DEPTH:
    raise WorkflowError(
        f"experiments.patching_layers.layers: layer {max(PL['layers'])} is beyond model "
        f"{PL_MODEL!r}, which has {PL_DEPTH} blocks (allowed: 0 = embeddings to {PL_DEPTH})"
    )
if BE_TASK not in TASKS:
    raise WorkflowError(
        f"experiments.behavior_edit.side_task: task {BE_TASK!r} is not defined "
        f"(defined tasks: {', '.join(TASKS)})"
    )
BE_DEPTH = model_depth(MODELS[BE_MODEL]) if BE["layers"] else None
if BE_DEPTH is not None and max(BE["layers"]) > BE_DEPTH:
    raise WorkflowError(
        f"experiments.behavior_edit.layers: layer {max(BE['layers'])} is beyond model "
        f"{BE_MODEL!r}, which has {BE_DEPTH} blocks (allowed: 1 to {BE_DEPTH})"
    )
BE_ATTRIBUTES = BE["attribute_sets"] or f"{R}/world/attributes.jsonl"
BE_PROMPTS = BE["prompts"] or f"{R}/world/neutral_prompts.jsonl"
#: The branch's target files; "{seed}" in a pattern fans out over config["seeds"].
BRANCH_2C_TARGETS = []


#: The side-effect task's items, unless the accuracy side effect is switched off.
BE_TASK_FILE = f"{R}/tasks/{BE_TASK}.jsonl" if BE["side_task_items"] > 0 else []
#: The sampling, scoring and side-effect flags behavior_edit and patching_vs_prompting share.
BE_SAMPLING_ARGS = (
    f"--max-new-tokens {BE['max_new_tokens']} --temperature {BE['temperature']} "
    f"--top-k {BE['top_k']} --samples-per-prompt {BE['samples_per_prompt']} "
    f"--batch-size {BE['batch_size']} --n-bootstrap {BE['n_bootstrap']} "
    f"--n-task-items {BE['side_task_items']}"
)
PL_DIR = f"{R}/experiments/patching_layers"
BE_DIR = f"{R}/experiments/behavior_edit/seed{{seed}}"
PVP_DIR = f"{R}/experiments/patching_vs_prompting/seed{{seed}}"


rule patching_layers:
    """Denoising and noising at every layer and position of the prompt pairs, batched; effect
    heatmaps, by-layer curves with CIs, and the strongest layer."""
    input:
        script="scripts/patching_layers.py",
        model=model_input(PL_MODEL),
        pairs=PL["pairs"] or pm3_pairs(),
    output:
        results=f"{PL_DIR}/results.json",
        config=f"{PL_DIR}/config.json",
        summary=f"{PL_DIR}/summary.md",
        figure_data=f"{PL_DIR}/figure_data.json",
        per_pair=f"{PL_DIR}/per_pair.jsonl",
    log:
        f"{R}/logs/patching_layers.log",
    benchmark:
        f"{R}/benchmarks/patching_layers.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        runs_model=1,
    params:
        model=lambda wc, input: input.model or model_ref(PL_MODEL),
        revision=MODELS[PL_MODEL].get("revision") or "",
        pl=PL,
        n_pairs=PL["n_pairs"] or PM["pm3"]["n_pairs"],
        layers=",".join(map(str, PL["layers"] or [])) or "all",
        dtype=EXTRACT["dtype"],
        device=EXTRACT["device"],
        seed=config["seed"],
        outdir=folder_of("output.results"),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --model {params.model} "
        "--pairs {input.pairs} --n-samples {params.n_pairs} --layers {params.layers} "
        "--max-batch {params.pl[max_batch]} --n-bootstrap {params.pl[n_bootstrap]} "
        "--dtype {params.dtype} --device {params.device} --seed {params.seed} "
        "$([ -n '{params.revision}' ] && echo --revision {params.revision}) "
        "--output-dir {params.outdir} "
        + progress_arg("patching_layers")
        + "> {log} 2>&1"


BRANCH_2C_TARGETS.append(f"{PL_DIR}/summary.md")


rule behavior_edit:
    """Steer toward toxicity and formality with contrastive mean-difference vectors; attribute
    shift of sampled continuations by layer and coefficient, with side effects."""
    input:
        script="scripts/behavior_edit.py",
        model=model_input(BE_MODEL),
        attributes=BE_ATTRIBUTES,
        prompts=BE_PROMPTS,
        task=BE_TASK_FILE,
    output:
        results=f"{BE_DIR}/results.json",
        config=f"{BE_DIR}/config.json",
        summary=f"{BE_DIR}/summary.md",
        vectors=f"{BE_DIR}/vectors.safetensors",
        generations=f"{BE_DIR}/generations.jsonl",
    log:
        f"{R}/logs/behavior_edit/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/behavior_edit/seed{{seed}}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    threads: 2
    resources:
        runs_model=1,
    params:
        model=lambda wc, input: input.model or model_ref(BE_MODEL),
        source=MODELS[BE_MODEL]["source"],
        revision=MODELS[BE_MODEL].get("revision") or "",
        be=BE,
        task=lambda wc, input: f"--task-file {input.task}" if input.task else "",
        attributes=",".join(BE["attributes"]),
        layers=",".join(map(str, BE["layers"] or [])),
        coefficients=",".join(map(str, BE["coefficients"])),
        n_vector_pairs=BE["n_vector_pairs"] or "",
        n_prompts=BE["n_prompts"] or "",
        max_ratio=BE["max_perplexity_ratio"] or "",
        scorers=as_json(BE["scorers"]),
        sampling=BE_SAMPLING_ARGS,
        dtype=EXTRACT["dtype"],
        device=EXTRACT["device"],
        outdir=folder_of("output.results"),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --model {params.model} "
        "--model-source {params.source} --attribute-sets {input.attributes} "
        "--prompts {input.prompts} {params.task} --attributes {params.attributes} "
        "--coefficients={params.coefficients} --pooling {params.be[pooling]} "
        "--selection-fraction {params.be[selection_fraction]} "
        "--n-neutral-texts {params.be[n_neutral_texts]} {params.sampling} "
        "--scorers-json {params.scorers:q} --dtype {params.dtype} --device {params.device} "
        "$([ -n '{params.revision}' ] && echo --revision {params.revision}) "
        "$([ -n '{params.layers}' ] && echo --layers {params.layers}) "
        "$([ -n '{params.n_vector_pairs}' ] && echo --n-vector-pairs {params.n_vector_pairs}) "
        "$([ -n '{params.n_prompts}' ] && echo --n-samples {params.n_prompts}) "
        "$([ -n '{params.max_ratio}' ] && echo --max-perplexity-ratio {params.max_ratio}) "
        "--seed {wildcards.seed} --output-dir {params.outdir} "
        + progress_arg("behavior_edit/seed{wildcards.seed}")
        + "> {log} 2>&1"


rule patching_vs_prompting:
    """The best steering setting of behavior_edit against a prompt prefix on its report prompts:
    attribute shift, side effects and compute cost side by side."""
    input:
        script="scripts/patching_vs_prompting.py",
        model=model_input(BE_MODEL),
        edit=rules.behavior_edit.output.results,
        vectors=rules.behavior_edit.output.vectors,
        attributes=BE_ATTRIBUTES,
        prompts=BE_PROMPTS,
        task=BE_TASK_FILE,
    output:
        results=f"{PVP_DIR}/results.json",
        config=f"{PVP_DIR}/config.json",
        summary=f"{PVP_DIR}/summary.md",
        generations=f"{PVP_DIR}/generations.jsonl",
    log:
        f"{R}/logs/patching_vs_prompting/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/patching_vs_prompting/seed{{seed}}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    threads: 2
    resources:
        runs_model=1,
    params:
        model=lambda wc, input: input.model or model_ref(BE_MODEL),
        source=MODELS[BE_MODEL]["source"],
        revision=MODELS[BE_MODEL].get("revision") or "",
        be=BE,
        pvp=PVP,
        edit=folder_of("input.edit"),
        task=lambda wc, input: f"--task-file {input.task}" if input.task else "",
        prefixes=as_json(PVP["prefixes"]),
        n_prompts=PVP["n_prompts"] or "",
        scorers=as_json(BE["scorers"]),
        sampling=BE_SAMPLING_ARGS,
        dtype=EXTRACT["dtype"],
        device=EXTRACT["device"],
        outdir=folder_of("output.results"),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --model {params.model} "
        "--model-source {params.source} --behavior-edit {params.edit} "
        "--attribute-sets {input.attributes} --prompts {input.prompts} {params.task} "
        "--prefixes-json {params.prefixes:q} --scorers-json {params.scorers:q} "
        "{params.sampling} --dtype {params.dtype} --device {params.device} "
        "$([ -n '{params.revision}' ] && echo --revision {params.revision}) "
        "$([ -n '{params.n_prompts}' ] && echo --n-samples {params.n_prompts}) "
        "--timing-repeats {params.pvp[timing_repeats]} "
        "--seed {wildcards.seed} --output-dir {params.outdir} > {log} 2>&1"


BRANCH_2C_TARGETS += [f"{BE_DIR}/summary.md", f"{PVP_DIR}/summary.md"]
