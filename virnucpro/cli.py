"""The Click CLI: options → RunConfig → run_prediction(). Thin; errors become exit codes here only."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from virnucpro import __version__
from virnucpro.config import DeviceKind, Precision
from virnucpro.errors import ConfigError, Terminated, VirNucProError
from virnucpro.pipeline.parameters import RUN_PARAMETERS, RunParameter, build_config, parameter, parse_gpus

__all__ = ["main", "cli"]


logger = logging.getLogger("virnucpro.cli")


def _click_option(param: RunParameter):  # type: ignore[no-untyped-def]
    """The Click option of one run parameter, from the run-parameter table."""
    if param.kind == "bool":
        flag = param.option[2:]
        return click.option(f"--{flag}/--no-{flag}", param.name, default=param.default,
                            show_default=True, help=param.help)
    if param.kind == "choice":
        return click.option(param.option, param.name, type=click.Choice(list(param.choices)),
                            default=str(param.default), show_default=True, help=param.help)
    if param.kind == "path":
        return click.option(param.option, param.name, type=click.Path(path_type=Path), default=None,
                            help=param.help)
    if param.kind == "gpus":
        return click.option(param.option, param.name, default=None, metavar="0,1",
                            callback=lambda _ctx, _p, value: parse_gpus(value), help=param.help)
    if param.kind in ("int", "float"):
        return click.option(param.option, param.name, type=int if param.kind == "int" else float,
                            default=param.default, show_default=param.default is not None,
                            help=param.help)
    raise ValueError(f"run parameter {param.name!r} has an unknown kind {param.kind!r}")


def _run_options(*names: str):  # type: ignore[no-untyped-def]
    """Decorator: the named run parameters as Click options, in the table's words."""

    def decorate(f):  # type: ignore[no-untyped-def]
        for name in reversed(names):
            f = _click_option(parameter(name))(f)
        return f

    return decorate


_MODEL_OPTIONS = ("dnabert_model", "esm_model", "classifier")


_VERBOSE_HELP = ("More log output: -v adds VirNucPro's debug messages (e.g. each shard), -vv "
                 "every library's too [default: info].")


def _configure_logging(verbose: int) -> None:
    """Log to stderr at info; ``-v`` (before or after the subcommand) adds VirNucPro's debug
    messages, ``-vv`` every library's."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.getLogger("virnucpro").setLevel(logging.DEBUG if verbose else logging.NOTSET)


def _subcommand_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        ctx.meta["virnucpro.verbose"] = ctx.meta.get("virnucpro.verbose", 0) + value
        _configure_logging(ctx.meta["virnucpro.verbose"])


class _Command(click.Command):
    """A subcommand that also takes ``-v/--verbose`` after its name (``virnucpro predict ... -v``)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(["-v", "--verbose"], count=True, expose_value=False,
                                        callback=_subcommand_verbose, help=_VERBOSE_HELP))


class _Group(click.Group):
    """Turns library errors into a one-line message and the error's exit code."""

    command_class = _Command
    group_class = type  # subgroups (``models``) are _Groups too

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except VirNucProError as exc:
            click.echo(f"Error: {type(exc).__name__}: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # a full, read-only or unwritable disk wherever it is met: exit 5
            from virnucpro.domain.disk import disk_error

            error = disk_error(exc)
            if error is None:
                raise
            click.echo(f"Error: {type(error).__name__}: {error}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as Terminated
            from virnucpro.pipeline.termination import INTERRUPTED_MESSAGE, TERMINATED_MESSAGE

            terminated = isinstance(exc, Terminated)
            click.echo(TERMINATED_MESSAGE if terminated else INTERRUPTED_MESSAGE, err=True)
            ctx.exit(Terminated.exit_code if terminated else 130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="virnucpro")
@click.option("-v", "--verbose", count=True, help=_VERBOSE_HELP)
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """VirNucPro: find viral sequences with DNABERT-S + ESM-2 features."""
    ctx.meta["virnucpro.verbose"] = verbose
    _configure_logging(verbose)
    ctx.ensure_object(dict)


@cli.command()
@click.argument("input_fasta", type=click.Path(path_type=Path))
@_run_options("chunk_length")
@click.option("--output-dir", type=click.Path(path_type=Path), required=True,
              help="Directory for the three prepared FASTA files.")
def prepare(input_fasta: Path, chunk_length: str, output_dir: Path) -> None:
    """Write the chunk and identified-frame FASTA files the original tool writes."""
    from virnucpro.domain.prepare import prepare_files

    files = prepare_files(input_fasta, int(chunk_length), output_dir)
    for path in (files.chunked, files.nucleotide, files.protein):
        click.echo(str(path))


_PREDICT_OPTIONS = tuple(p.name for p in RUN_PARAMETERS if p.name != "input_fasta")


@cli.command()
@click.argument("input_fasta", type=click.Path(path_type=Path))
@_run_options(*_PREDICT_OPTIONS)
@click.pass_context
def predict(ctx: click.Context, input_fasta: Path, **options: object) -> None:
    """Predict viral sequences in INPUT_FASTA (FASTA or FASTA.gz)."""
    from virnucpro.pipeline.prediction import run_prediction
    from virnucpro.progress_display import ProgressDisplay

    ctx.obj["persistent_models"] = bool(options["persistent_models"])
    config = build_config({"input_fasta": input_fasta, **options}, origin="option")

    progress = ProgressDisplay(sys.stderr)  # a bar on a terminal, lines in a log
    end_bar = progress.logging_filter()
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "stream", None) is sys.stderr]
    for handler in handlers:
        handler.addFilter(end_bar)
    try:
        result = run_prediction(config, persistent_models=ctx.obj["persistent_models"], on_progress=progress)
    finally:
        progress.close()
        for handler in handlers:
            handler.removeFilter(end_bar)
    counts = result.report.sequence_calls
    if result.demo_models:
        click.echo("WARNING: DEMO MODELS WITH RANDOM WEIGHTS - these calls are meaningless.", err=True)
    click.echo(
        f"{result.prepared.n_records} sequences: {counts.get('virus', 0)} virus, "
        f"{counts.get('non-virus', 0)} non-virus, {counts.get('no-call', 0)} no-call "
        f"({result.prepared.n_frames} frames in {result.timings['total']:.1f} s)"
    )
    for path in (p for p in result.paths.final_outputs if p.exists()):
        click.echo(f"  {path}")


@cli.command()
@click.argument("output_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--labels", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="labels.tsv: sequence_id<TAB>label per line, label virus/non-virus (1/0, true/false).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the calibration file [default: OUTPUT_DIR/calibration.json].")
def calibrate(output_dir: Path, labels: Path, out: Path | None) -> None:
    """Fit temperature scaling of virus_score on the labelled run in OUTPUT_DIR; write the file
    that `predict --calibration FILE` applies."""
    from virnucpro.pipeline.calibrate import calibrate_run

    result = calibrate_run(output_dir, labels, out)
    c = result.calibration
    click.echo(
        f"temperature {c.temperature:.4g} fitted on {c.n_sequences} labelled sequences "
        f"({c.n_virus} virus, {c.n_non_virus} non-virus); expected calibration error "
        f"{c.ece_before:.3f} -> {c.ece_after:.3f}, log loss {c.nll_before:.3f} -> {c.nll_after:.3f}"
    )
    click.echo(str(result.path))


@cli.group()
def models() -> None:
    """Find, check, convert and build models."""


@models.command("check")
@_run_options("chunk_length", *_MODEL_OPTIONS)
@click.option("--no-checksums", is_flag=True, help="Skip SHA-256 (the ESM-2 file is 5.7 GB).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model instead of the table.")
@click.pass_context
def models_check(ctx: click.Context, chunk_length: str, dnabert_model: Path | None,
                 esm_model: Path | None, classifier: Path | None, no_checksums: bool,
                 as_json: bool) -> None:
    """Show each model: found (where, how, SHA-256) or missing (where looked, how to install).

    Exits 3 when a model is missing, so scripts can test it."""
    from virnucpro.errors import ModelNotFoundError
    from virnucpro.models.check import describe_models, format_model_check
    from virnucpro.models.discovery import find_models

    searches = find_models(dnabert_model, esm_model, classifier, int(chunk_length))
    rows = describe_models(searches, checksums=not no_checksums)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
    else:
        click.echo(format_model_check(rows))
    if not all(s.found for s in searches):
        ctx.exit(ModelNotFoundError.exit_code)


@models.command("convert-classifier")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("target", type=click.Path(path_type=Path, dir_okay=False))
def models_convert_classifier(source: Path, target: Path) -> None:
    """Convert an original pickled classifier (.pth) to the project's safetensors format."""
    from virnucpro.models.reference.classifier import load_classifier, save_classifier

    save_classifier(load_classifier(source), target)
    click.echo(str(target))


@models.command("make-demo")
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True)
def models_make_demo(out_dir: Path, seed: int) -> None:
    """Build tiny RANDOM models with the real architectures (for trying the pipeline only)."""
    from virnucpro.models.demo import make_demo_models

    demo = make_demo_models(out_dir, seed=seed)
    click.echo(f"DEMO MODELS (random weights; calls are meaningless) written to {demo.root}:",
               err=True)
    for path in demo.paths:
        click.echo(str(path))
    click.echo(f"Use them: export VIRNUCPRO_MODELS_DIR={demo.root}", err=True)


@cli.command("validate-precision")
@click.argument("input_fasta", type=click.Path(path_type=Path))
@_run_options("chunk_length", *_MODEL_OPTIONS, "device")
@click.option("--precisions", default="bf16,fp16", show_default=True,
              help="Comma-separated precisions to compare with fp32.")
@click.option("--max-frames", type=int, default=2000, show_default=True,
              help="Compare on the input's first N kept frames.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the full result as JSON here.")
def validate_precision_cmd(input_fasta: Path, chunk_length: str, dnabert_model: Path | None,
                           esm_model: Path | None, classifier: Path | None, device: str,
                           precisions: str, max_frames: int, json_out: Path | None) -> None:
    """Compare fp32 with faster precisions on a sample of INPUT_FASTA: embedding cosine, scores, labels."""
    from virnucpro.models.discovery import resolve_models
    from virnucpro.validation import format_table, validate_precision

    chosen = [Precision.parse(p) for p in precisions.split(",") if p.strip()]
    if not chosen or Precision.AUTO in chosen:
        raise ConfigError(f"--precisions '{precisions}' must list bf16, fp16, fp8 and/or fp32")
    if max_frames < 1:
        raise ConfigError("--max-frames must be at least 1")
    models = resolve_models(dnabert_model, esm_model, classifier, int(chunk_length))
    kind = DeviceKind.parse(device)
    if kind is not DeviceKind.CPU:
        import torch

        if torch.cuda.is_available():
            kind = DeviceKind.CUDA
        elif kind is DeviceKind.CUDA:
            raise ConfigError("--device cuda was requested but no GPU is visible; use --device cpu")
    if Precision.FP8 in chosen and kind is not DeviceKind.CUDA:
        from virnucpro.models.fast.fp8 import fp8_device_problem

        raise ConfigError(fp8_device_problem("cpu") or "fp8 needs a GPU")
    result = validate_precision(
        input_fasta, models.dnabert.path, models.esm.path, models.classifier.path,
        device="cuda:0" if kind is DeviceKind.CUDA else "cpu", precisions=chosen,
        chunk_length=int(chunk_length), max_frames=max_frames,
        progress=lambda msg: click.echo(f"  {msg}", err=True),
    )
    click.echo(format_table(result))
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Console entry point (SIGTERM stops a run like Ctrl-C; exit code 143). A command that ends
    normally ends the process at once after the exit handlers (:mod:`virnucpro.process_exit`);
    an error or an interrupt leaves through the interpreter's usual exit."""
    from virnucpro.pipeline.termination import sigterm_stops
    from virnucpro.process_exit import exit_now

    with sigterm_stops():
        try:
            cli(args=argv, prog_name="virnucpro", obj={})
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    exit_now(0)


if __name__ == "__main__":
    main()
