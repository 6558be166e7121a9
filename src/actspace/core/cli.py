"""The command line every script shares.

A workflow rule passes its resolved configuration section as one JSON argument (``--params``), so
each parameter is declared once, in the schema, and reaches the library under the schema's name.
The common flags (``--model``, ``--task``, ``--layers``, ``--n-samples``, ``--dtype``,
``--device``, ``--seed``) let a researcher run a step by hand; a flag that is given overrides the
same key of ``--params``. A step's own inputs (store folders, files) are separate flags.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Words that mean "no layer list given" (every layer, or the step's own choice).
NO_LAYERS = frozenset({"", "all", "auto", "none", "null"})


def parse_layers(text: str | None) -> list[int] | None:
    """A comma-separated list of layer indices (0 = embeddings); ``all``/``auto``/empty: None."""
    if text is None or text.strip().lower() in NO_LAYERS:
        return None
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"layers must be comma-separated integers (0 = embeddings) or 'all', got {text!r}"
        ) from None
    negative = [layer for layer in layers if layer < 0]
    if negative:
        raise argparse.ArgumentTypeError(f"layers must be 0 or more, got {negative[0]}")
    return layers


def json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg}): {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text[:80]!r}")
    return value


#: The common flags: flag -> (key in --params, parser, help).
COMMON_FLAGS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "--task": ("task", str, "task name (or file, for steps that read one)"),
    "--layers": ("layers", parse_layers, "comma-separated layers (0 = embeddings) or 'all'"),
    "--n-samples": ("n_samples", int, "items (or pairs) to use"),
    "--dtype": ("dtype", str, "compute dtype: auto, float32, bfloat16, float16"),
    "--device": ("device", str, "auto, cpu, cuda, cuda:N or mps"),
    "--seed": ("seed", int, "random seed"),
}


def _study_defaults() -> dict[str, Any]:
    from actspace.core.schema import validate_schema

    return validate_schema({})


def schema_defaults(section: str) -> dict[str, Any]:
    """The schema's defaults of a configuration section (dotted, e.g. ``premortems.pm2``): what
    a step run by hand starts from."""
    values: Any = _study_defaults()
    for key in section.split("."):
        values = values[key]
    return dict(values)


def _study_extras() -> dict[str, Any]:
    """The study-wide values a step may need beside its section: seed, dtype and device."""
    config = _study_defaults()
    return {"seed": config["seed"], **{k: config["extract"][k] for k in ("dtype", "device")}}


def step_parser(
    description: str | None, *, output_dir: bool = True, section: str | None = None
) -> argparse.ArgumentParser:
    """A parser with ``--params``, the common flags and (by default) ``--output-dir``.

    ``section`` names the configuration section the step reads: a key missing from ``--params``
    then takes the schema's default, so a step runs by hand with its inputs alone.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.set_defaults(schema_section=section)
    parser.add_argument(
        "--model",
        default=None,
        help="the model to load: a folder written by save_pretrained or a hub id "
        "(overrides the model reference in --params)",
    )
    parser.add_argument("--revision", default=None, help="hub revision of --model")
    parser.add_argument(
        "--params",
        type=json_object,
        default={},
        help="the step's resolved configuration section as JSON (the workflow passes it)",
    )
    for flag, (_, kind, text) in COMMON_FLAGS.items():
        parser.add_argument(flag, type=kind, default=None, help=f"{text} (overrides --params)")
    if output_dir:
        parser.add_argument("--output-dir", type=Path, required=True, help="where results go")
    return parser


def step_params(args: argparse.Namespace, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The schema's defaults of the step's section (if it names one), ``--params`` over them, and
    every common flag that was given over both; refuses missing keys."""
    section = getattr(args, "schema_section", None)
    params = {**(schema_defaults(section) if section else {}), **args.params}
    if section:
        extras = _study_extras()
        params.update({k: extras[k] for k in required if k in extras and k not in params})
    for flag, (key, _, _) in COMMON_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            params[key] = value
    if args.model is not None:
        params["model_ref"] = {"path": args.model, "revision": args.revision}
    missing = [key for key in required if key not in params]
    if missing:
        raise ValueError(
            f"missing parameter(s) {', '.join(missing)}: pass --params (the workflow does) "
            "or the matching flags"
        )
    return params


def model_path(params: Mapping[str, Any]) -> tuple[str, str | None]:
    """The folder or hub id, and the revision, of the model a step loads (``model_ref``).

    The workflow resolves every model it passes to a reference (``path``: the organism's or local
    folder, or the hub id; ``revision``: the hub revision or None), so that every step loads the
    same weights as the extraction did.
    """
    ref = params.get("model_ref")
    if not isinstance(ref, Mapping) or not ref.get("path"):
        raise ValueError("no model: pass --model (a folder or hub id) or --params with model_ref")
    return str(ref["path"]), ref.get("revision")


@contextmanager
def one_line_errors(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the expected failures of a step into one line on stderr and exit status 1."""
    try:
        yield
    except (ValueError, *errors) as error:
        sys.exit(f"error: {error}")


def _keyword_only(function: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(function).parameters.items()
    return {name: p for name, p in parameters if p.kind is p.KEYWORD_ONLY}


def required_keywords(function: Callable[..., Any]) -> tuple[str, ...]:
    """The keyword-only parameters of ``function`` without a default: the schema sets them."""
    return tuple(name for name, p in _keyword_only(function).items() if p.default is p.empty)


def keyword_arguments(function: Callable[..., Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``params`` that ``function`` takes as keyword-only arguments.

    A resolved section also holds what the script reads itself (the model reference, the
    device); those stay with the script.
    """
    return {name: params[name] for name in _keyword_only(function) if name in params}


def call_params(
    function: Callable[..., Any], args: argparse.Namespace, *also: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The step's parameters (``--params`` and flags; every keyword ``function`` requires, and
    ``also``, must be there) and the part of them that ``function`` takes."""
    params = step_params(args, required=(*required_keywords(function), *also))
    return params, keyword_arguments(function, params)
