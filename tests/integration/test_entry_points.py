"""Every entry point takes the run parameters of ONE table, with the same names and defaults."""

from __future__ import annotations

import inspect
import typing

from virnucpro.cli import cli
from virnucpro.pipeline.parameters import RUN_PARAMETERS


def _hints(fn) -> dict:  # type: ignore[no-untyped-def]
    return typing.get_type_hints(fn)


def test_predict_flow_signature_equals_the_table() -> None:
    from flows.predict import predict_flow

    signature = inspect.signature(predict_flow.fn)
    assert list(signature.parameters) == [p.name for p in RUN_PARAMETERS]
    hints = _hints(predict_flow.fn)
    for param in RUN_PARAMETERS:
        got = signature.parameters[param.name]
        assert (got.default is inspect.Parameter.empty) is param.required, param.name
        if not param.required:
            assert got.default == param.default, param.name
        assert hints[param.name] == param.annotation, param.name
        assert param.help in predict_flow.fn.__doc__  # the help Prefect shows is the table's


def test_nightly_flow_run_parameters_equal_the_table() -> None:
    from flows.nightly import NIGHT_RUN_PARAMETERS, nightly_flow

    signature = inspect.signature(nightly_flow.fn)
    hints = _hints(nightly_flow.fn)
    table = {p.name: p for p in RUN_PARAMETERS}
    for name in NIGHT_RUN_PARAMETERS:
        assert hints[name] == table[name].annotation, name
        expected = True if name == "persistent_models" else table[name].default  # a night keeps models
        assert signature.parameters[name].default == expected, name


def test_batch_flow_run_parameters_equal_the_night_s() -> None:
    from flows.batch import batch_flow
    from flows.nightly import NIGHT_RUN_PARAMETERS, nightly_flow

    batch = inspect.signature(batch_flow.fn)
    assert list(batch.parameters) == ["samples", *NIGHT_RUN_PARAMETERS]
    night = inspect.signature(nightly_flow.fn)
    for name in NIGHT_RUN_PARAMETERS:  # a dispatched night hands its values to the batch as they are
        assert batch.parameters[name].default == night.parameters[name].default, name
        assert _hints(batch_flow.fn)[name] == _hints(nightly_flow.fn)[name], name


def test_cli_predict_options_are_the_table() -> None:
    command = cli.commands["predict"]
    options = {p.name: p for p in command.params if p.name != "verbose"}  # -v: every subcommand's
    assert set(options) == {p.name for p in RUN_PARAMETERS}
    for param in RUN_PARAMETERS:
        if param.required:
            continue
        option = options[param.name]
        assert option.help == param.help, param.name
        assert param.option in option.opts, param.name
        expected = str(param.default) if param.kind == "choice" else param.default
        assert option.default == expected, param.name
        if param.kind == "bool":
            assert option.secondary_opts == [f"--no-{param.option[2:]}"]
