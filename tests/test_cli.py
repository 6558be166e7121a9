"""The command line every script shares: --params, the schema's defaults, the common flags."""

from __future__ import annotations

import argparse

import pytest

from actspace.core.cli import (
    call_params,
    parse_layers,
    schema_defaults,
    step_params,
    step_parser,
)
from actspace.core.schema import validate_schema


def _params(argv: list[str], section: str | None = "premortems.pm2", required=()) -> dict:
    args = step_parser("test", section=section).parse_args([*argv, "--output-dir", "out"])
    return step_params(args, required=tuple(required))


def test_a_section_starts_from_the_schemas_defaults() -> None:
    defaults = validate_schema({})["premortems"]["pm2"]
    assert schema_defaults("premortems.pm2") == defaults
    assert _params([]) == defaults


def test_params_override_defaults_and_flags_override_params() -> None:
    params = _params(["--params", '{"n_bootstrap": 7, "layer": 2}', "--n-samples", "30"])
    assert params["n_bootstrap"] == 7 and params["layer"] == 2 and params["n_samples"] == 30
    assert params["threshold"] == 0.55  # the schema's default, untouched
    assert _params(["--params", '{"seed": 3}', "--seed", "9"])["seed"] == 9


def test_the_studys_seed_dtype_and_device_fill_in_only_where_a_step_needs_them() -> None:
    study = validate_schema({})
    assert "seed" not in _params([])
    needed = _params([], required=("seed", "dtype", "device"))
    assert needed["seed"] == study["seed"] and needed["device"] == study["extract"]["device"]


def test_a_step_without_a_section_names_what_it_lacks() -> None:
    with pytest.raises(ValueError, match="missing parameter\\(s\\) n_bootstrap, seed"):
        _params(["--params", '{"layer": 1}'], section=None, required=("n_bootstrap", "seed"))


def test_model_flag_sets_the_model_reference() -> None:
    params = _params(["--model", "some/model", "--revision", "abc"])
    assert params["model_ref"] == {"path": "some/model", "revision": "abc"}


def test_call_params_hands_a_function_exactly_its_keywords() -> None:
    def run(store, *, layer, n_bootstrap, ci_level=0.95):
        return layer, n_bootstrap, ci_level

    args = step_parser("t", section="premortems.pm2").parse_args(["--output-dir", "o"])
    params, keywords = call_params(run, args)
    assert keywords == {"layer": "auto", "n_bootstrap": 1000}
    assert params["threshold"] == 0.55


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,3,5", [1, 3, 5]), ("all", None), ("auto", None), ("", None), ("0", [0])],
)
def test_one_layer_parser(text: str, expected: list[int] | None) -> None:
    assert parse_layers(text) == expected


@pytest.mark.parametrize("text", ["1,x", "-1"])
def test_bad_layers_are_one_line(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="layers must be"):
        parse_layers(text)
