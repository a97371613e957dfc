"""The run-parameter table: one source for defaults, parsing and every entry point's options."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from virnucpro.config import DeviceKind, Precision, RunConfig
from virnucpro.errors import ConfigError
from virnucpro.pipeline.parameters import (
    RUN_PARAMETERS,
    add_argparse_option,
    build_config,
    parameter,
    parameters_docstring,
    parse_gpus,
)


def test_defaults_are_runconfigs() -> None:
    config = build_config({"input_fasta": "/data/s.fa"})
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}
    for name, value in defaults.items():
        assert getattr(config, name) == value, name
    assert config.precision is Precision.AUTO and config.device is DeviceKind.AUTO
    table = {p.name: p.default for p in RUN_PARAMETERS}
    assert table["chunk_length"] == RunConfig.__dataclass_fields__["chunk_length"].default
    assert table["shard_frames"] == defaults["shard_frames"] and table["resume"] is defaults["resume"]


def test_default_output_dir_is_next_to_the_input() -> None:
    config = build_config({"input_fasta": "/data/run7/sample.fasta.gz"})
    assert config.output_dir == Path("/data/run7/sample_virnucpro")
    explicit = build_config({"input_fasta": "/data/s.fa", "output_dir": "/tmp/o"})
    assert explicit.output_dir == Path("/tmp/o")


def test_raw_values_become_typed() -> None:
    config = build_config({
        "input_fasta": "s.fa", "chunk_length": "300", "device": "CPU", "precision": "bf16",
        "gpus": "0,2", "toks_per_batch": "8192", "dnabert_model": "~/m/dnabert",
        "persistent_models": True,
    })
    assert config.chunk_length == 300 and config.device is DeviceKind.CPU
    assert config.precision is Precision.BF16 and config.gpus == (0, 2)
    assert config.toks_per_batch == 8192 and config.persistent_models is True
    assert config.models.dnabert == Path("~/m/dnabert").expanduser()


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("0", (0,)), ("0, 1", (0, 1)), ([1, 3], (1, 3)), ((2,), (2,)), ([], None),
])
def test_parse_gpus(value, expected) -> None:  # type: ignore[no-untyped-def]
    assert parse_gpus(value) == expected


def test_one_gpus_error_for_every_entry_point() -> None:
    with pytest.raises(ConfigError, match=r"gpus 'a,b' is not a comma-separated list .* e\.g\. 0,1"):
        parse_gpus("a,b")
    with pytest.raises(ConfigError, match="is not a list of GPU indices"):
        parse_gpus(["x"])


def test_unknown_and_bad_values_name_the_parameter() -> None:
    with pytest.raises(ConfigError, match="unknown run parameter.*chunk_len"):
        build_config({"input_fasta": "s.fa", "chunk_len": 500})
    with pytest.raises(ConfigError, match="precision 'fp8x' is not known"):
        build_config({"input_fasta": "s.fa", "precision": "fp8x"})
    with pytest.raises(ConfigError, match="chunk length 400 is not supported"):
        build_config({"input_fasta": "s.fa", "chunk_length": 400})
    with pytest.raises(ConfigError, match="input_fasta is required"):
        build_config({})


def test_precision_resolves_once() -> None:
    assert Precision.AUTO.resolve(on_gpu=False) is Precision.FP32
    assert Precision.BF16.resolve(on_gpu=False) is Precision.BF16
    assert Precision.AUTO not in Precision.concrete()
    with pytest.raises(ValueError, match="resolve"):
        Precision.AUTO.bytes_per_element  # noqa: B018


def test_docstring_comes_from_the_table() -> None:
    doc = parameters_docstring("Summary.", ("input_fasta", "resume"), extra={"resume": "Own words."})
    assert doc.splitlines()[:3] == ["Summary.", "", "Args:"]
    assert f"    input_fasta: {parameter('input_fasta').help}" in doc and "    resume: Own words." in doc
    with pytest.raises(ValueError, match="no help text"):
        parameters_docstring("S.", ("nope",))


def test_argparse_options_follow_the_table() -> None:
    parser = argparse.ArgumentParser()
    for p in RUN_PARAMETERS:
        add_argparse_option(parser, p.name)
    args = vars(parser.parse_args(["in.fa", "--no-resume", "--chunk-length", "300", "--gpus", "1"]))
    assert set(args) == {p.name for p in RUN_PARAMETERS}
    assert args["resume"] is False and args["chunk_length"] == "300" and args["gpus"] == "1"
    assert build_config(args).chunk_length == 300
