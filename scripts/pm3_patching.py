"""Pre-mortem PM3: activation patching on clean/corrupted prompt pairs.

Reads the prompt pairs (--pairs), loads the model of the model reference in --params (or --model
and --revision) and writes results.json, config.json, summary.md and per_pair.jsonl (the per-pair
logit differences) to --output-dir. The parameters are the keys of premortems.pm3, the study's
seed, the model reference and extract's dtype and device, passed as --params (the workflow does);
by hand, --n-samples N draws N pairs at random, seeded by the study's seed (premortems.pm3.n_pairs).
"""

from __future__ import annotations

import time

from actspace.core.cli import (
    keyword_arguments,
    model_path,
    one_line_errors,
    required_keywords,
    step_params,
    step_parser,
)
from actspace.core.io import write_experiment, write_jsonl
from actspace.core.progress import optional_progress
from actspace.lm.models import ModelLoadError, load_model
from actspace.methods.patching import load_prompt_pairs
from actspace.premortems.pm3 import run_pm3, summary_markdown

#: What the script reads beyond run_pm3's keywords: the model to load, and how.
SCRIPT_KEYS = ("model_ref", "dtype", "device")


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__, section="premortems.pm3")
    parser.add_argument("--pairs", required=True, help="prompt pairs file (JSONL)")
    parser.add_argument("--max-batch", type=int, help="rows per patched forward (default: all)")
    parser.add_argument("--progress-file", help="keep a progress file here (for status.py)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with one_line_errors(ModelLoadError):
        params = step_params(args, required=(*required_keywords(run_pm3), *SCRIPT_KEYS))
        n_samples = params.pop("n_samples", None)
        if n_samples is not None:
            params["n_pairs"] = n_samples
        path, revision = model_path(params)
        pairs = load_prompt_pairs(args.pairs)
        with optional_progress(args.progress_file, step="pm3_patching") as progress:
            model, tokenizer = load_model(
                path, revision=revision, dtype=params["dtype"], device=params["device"]
            )
            results = run_pm3(
                model,
                tokenizer,
                pairs,
                **keyword_arguments(run_pm3, params),
                max_batch=args.max_batch,
                progress=progress,
            )
    per_pair = results.pop("per_pair")
    results["model"] = path
    results["duration_s"] = round(time.perf_counter() - start, 3)
    config = {
        "premortem": "pm3",
        **params,
        "pairs": args.pairs,
        "max_batch": args.max_batch,
        "model_dtype": str(next(model.parameters()).dtype),
    }
    write_jsonl(args.output_dir / "per_pair.jsonl", per_pair)
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    print(
        f"pm3: change rate {results['value']} at layer {results['chosen_layer']} "
        f"(n = {results['n']}), CI {results['ci']}: plan {results['plan_verdict']}; interior "
        f"layer {results['interior_layer']}: controlled {results['controlled_verdict']}"
    )


if __name__ == "__main__":
    main()
