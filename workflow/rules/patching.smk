# Branch 2C: activation patching and behaviour editing. Scheduled when PM3 passes.
#
#   patching_layers        denoising and noising at every layer x position of the prompt pairs
#   behavior_edit          steering vectors (toxicity, formality) swept over layer x coefficient
#   patching_vs_prompting  the best steering setting against a prompt prefix, on held-out prompts
#
# The sections' null choices (models, pairs, the side task, the world's files) are filled by
# actspace.branches.patching.resolve; the branch's targets come from the plan's registry.

from actspace.branches.patching.resolve import side_task_file


rule patching_layers:
    """Denoising and noising at every layer and position of the prompt pairs, batched; effect
    heatmaps, by-layer curves with CIs, and the strongest layer."""
    input:
        script="scripts/patching_layers.py",
        model=model_input(config["experiments"]["patching_layers"]["model"]),
        pairs=config["experiments"]["patching_layers"]["pairs"],
    output:
        **experiment_output("patching_layers"),
    log:
        experiment_log("patching_layers", ".log"),
    benchmark:
        experiment_log("patching_layers", ".tsv")
    conda:
        CONDA_ENV
    threads: 2
    resources:
        runs_model=1,
    params:
        step=step_params(
            config["experiments"]["patching_layers"],
            model_ref=model_reference(config["experiments"]["patching_layers"]["model"]),
            dtype=EXTRACT["dtype"],
            device=EXTRACT["device"],
            seed=config["seed"],
        ),
        outdir=path_param(experiment_folder("patching_layers")),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --params {params.step:q} "
        "--pairs {input.pairs} --output-dir {params.outdir} "
        + progress_arg("patching_layers")
        + "> {log} 2>&1"


rule behavior_edit:
    """Steer toward toxicity and formality with contrastive mean-difference vectors; attribute
    shift of sampled continuations by layer and coefficient, with side effects."""
    input:
        script="scripts/behavior_edit.py",
        model=model_input(config["experiments"]["behavior_edit"]["model"]),
        attributes=config["experiments"]["behavior_edit"]["attribute_sets"],
        prompts=config["experiments"]["behavior_edit"]["prompts"],
        task=side_task_file(config["experiments"]["behavior_edit"]) or [],
    output:
        **experiment_output("behavior_edit"),
    log:
        experiment_log("behavior_edit", ".log"),
    benchmark:
        experiment_log("behavior_edit", ".tsv")
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    threads: 2
    resources:
        runs_model=1,
    params:
        step=step_params(
            config["experiments"]["behavior_edit"],
            model_ref=model_reference(config["experiments"]["behavior_edit"]["model"]),
            model_source=MODELS[config["experiments"]["behavior_edit"]["model"]]["source"],
            dtype=EXTRACT["dtype"],
            device=EXTRACT["device"],
        ),
        outdir=path_param(experiment_folder("behavior_edit")),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --params {params.step:q} "
        "--attribute-sets {input.attributes} --prompts {input.prompts} "
        "$([ -n '{input.task}' ] && echo --task-file {input.task}) "
        "--seed {wildcards.seed} --output-dir {params.outdir} "
        + progress_arg("behavior_edit/seed{wildcards.seed}")
        + "> {log} 2>&1"


rule patching_vs_prompting:
    """The best steering setting of behavior_edit against a prompt prefix on its report prompts:
    attribute shift, side effects and compute cost side by side."""
    input:
        script="scripts/patching_vs_prompting.py",
        model=model_input(config["experiments"]["behavior_edit"]["model"]),
        edit=rules.behavior_edit.output.results,
        vectors=rules.behavior_edit.output.vectors,
        attributes=config["experiments"]["behavior_edit"]["attribute_sets"],
        prompts=config["experiments"]["behavior_edit"]["prompts"],
        task=side_task_file(config["experiments"]["behavior_edit"]) or [],
    output:
        **experiment_output("patching_vs_prompting"),
    log:
        experiment_log("patching_vs_prompting", ".log"),
    benchmark:
        experiment_log("patching_vs_prompting", ".tsv")
    wildcard_constraints:
        seed=r"\d+",
    conda:
        CONDA_ENV
    threads: 2
    resources:
        runs_model=1,
    params:
        step=step_params(
            config["experiments"]["patching_vs_prompting"],
            behavior_edit=config["experiments"]["behavior_edit"],
            model_ref=model_reference(config["experiments"]["behavior_edit"]["model"]),
            model_source=MODELS[config["experiments"]["behavior_edit"]["model"]]["source"],
            dtype=EXTRACT["dtype"],
            device=EXTRACT["device"],
        ),
        edit=path_param(experiment_folder("behavior_edit")),
        outdir=path_param(experiment_folder("patching_vs_prompting")),
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --params {params.step:q} "
        "--behavior-edit {params.edit} --attribute-sets {input.attributes} "
        "--prompts {input.prompts} $([ -n '{input.task}' ] && echo --task-file {input.task}) "
        "--seed {wildcards.seed} --output-dir {params.outdir} > {log} 2>&1"
