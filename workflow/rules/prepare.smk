# Phase 0: the synthetic world, the built-in organisms trained on it, and the task files.

from actspace.world.synthetic import BUILTIN_TASKS


rule make_world:
    """Generate the synthetic world, its corpus, tokenizer, built-in tasks, prompt pairs and
    attribute sets (all seeded)."""
    input:
        script="scripts/make_world.py",
    output:
        world=f"{R}/world/world.json",
        corpus=f"{R}/world/corpus.txt",
        tokenizer=f"{R}/world/tokenizer/tokenizer.json",
        tasks=[builtin_task_file(name) for name in BUILTIN_TASKS],
        pairs=f"{R}/world/prompt_pairs.jsonl",
        attributes=f"{R}/world/attributes.jsonl",
        neutral=f"{R}/world/neutral_prompts.jsonl",
    params:
        step=step_params(config["world"]),
        outdir=path_param(f"{R}/world"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/make_world.log",
    benchmark:
        f"{R}/benchmarks/make_world.tsv"
    shell:
        "python {input.script} --params {params.step:q} --output-dir {params.outdir} > {log} 2>&1"


rule train_organism:
    """Train one built-in organism (a tiny causal LM) on the world's corpus; deterministic."""
    input:
        script="scripts/train_organism.py",
        corpus=rules.make_world.output.corpus,
        tokenizer=rules.make_world.output.tokenizer,
    output:
        directory(f"{R}/models/{{model}}"),
    params:
        step=lambda wc: step_params(organism_spec(wc)),
        tokenizer=path_param(os.path.dirname(rules.make_world.output.tokenizer)),
    # One thread each and no runs_model slot: an organism is small enough that two train at once
    # on two cores sooner than one after the other with two threads each.
    threads: 1
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/train_organism/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/train_organism/{{model}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} python {input.script} --params {params.step:q} "
        "--corpus {input.corpus} --tokenizer {params.tokenizer} --threads {threads} "
        "--output-dir {output} "
        + progress_arg("train_organism/{wildcards.model}")
        + "> {log} 2>&1"


rule prepare_task:
    """Materialise one task as multiple-choice items in results/tasks/{task}.jsonl."""
    input:
        script="scripts/prepare_task.py",
        data=task_inputs,
    output:
        f"{R}/tasks/{{task}}.jsonl",
    params:
        step=lambda wc: step_params(prepared_task_spec(wc.task), seed=config["seed"]),
        outdir=path_param(f"{R}/tasks"),
    conda:
        CONDA_ENV
    log:
        f"{R}/logs/prepare_task/{{task}}.log",
    benchmark:
        f"{R}/benchmarks/prepare_task/{{task}}.tsv"
    shell:
        "python {input.script} --params {params.step:q} --task {wildcards.task} "
        "--output-dir {params.outdir} > {log} 2>&1"
