"""What a newcomer sees first (issue 19): the CLI's words, its files, its exit codes."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.integration.pipeline_helpers import write_sample
from virnucpro.cli import cli
from virnucpro.pipeline.work_queue import PHASES

pytest.importorskip("torch")

_MODEL_VARIABLES = ("VIRNUCPRO_MODELS_DIR", "VIRNUCPRO_DNABERT_MODEL", "VIRNUCPRO_ESM_MODEL",
                    "VIRNUCPRO_CLASSIFIER", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), obj={}, catch_exceptions=False)


def _model_args(demo) -> list[str]:  # type: ignore[no-untyped-def]
    return ["--dnabert-model", str(demo.dnabert), "--esm-model", str(demo.esm),
            "--classifier", str(demo.classifier(500))]


@pytest.fixture()
def no_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment where model discovery finds nothing (empty HOME and caches)."""
    for name in _MODEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    for name in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME"):
        monkeypatch.setenv(name, str(home))
    return home


@pytest.fixture(scope="module")
def verbose_run(golden_tiny_dir: Path, demo_models, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``virnucpro predict ... -v`` (the flag after the subcommand, as the README writes it)."""
    folder = tmp_path_factory.mktemp("newcomer")
    sample = write_sample(golden_tiny_dir / "shared_real.fa", folder / "s.fa", 10)
    out = folder / "out"
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(level=logging.DEBUG)
    logging.getLogger().addHandler(keep)
    try:
        result = _invoke("predict", str(sample), "--output-dir", str(out), "--device", "cpu",
                         *_model_args(demo_models), "-v")
    finally:
        logging.getLogger().removeHandler(keep)
    assert result.exit_code == 0, result.output
    return result, [r.getMessage() for r in records], out


def test_verbose_after_the_subcommand_adds_debug_messages(verbose_run) -> None:  # type: ignore[no-untyped-def]
    _, messages, _ = verbose_run
    assert any(re.search(r"DNABERT-S: shard \S+ done by cpu: \d+ frames", m) for m in messages)


def test_verbosity_before_or_after_the_subcommand_and_back(tmp_path: Path, golden_tiny_dir: Path) -> None:
    args = ["prepare", str(golden_tiny_dir / "shared_real.fa"), "--output-dir", str(tmp_path)]
    for argv, level in ((["-v", *args], logging.DEBUG), ([*args, "-v"], logging.DEBUG),
                        (args, logging.INFO), ([*args, "-vv"], logging.DEBUG)):
        assert _invoke(*argv).exit_code == 0
        assert logging.getLogger("virnucpro").getEffectiveLevel() == level, argv
    assert logging.getLogger().level == logging.DEBUG  # -vv: every library's debug messages too
    assert _invoke(*args).exit_code == 0 and logging.getLogger().level == logging.INFO


def test_each_progress_line_is_printed_once(verbose_run) -> None:  # type: ignore[no-untyped-def]
    result, messages, _ = verbose_run
    for label in ("DNABERT-S", "ESM-2"):
        finals = [line for line in result.output.splitlines() if re.match(rf"\s+{label}: (\d+)/\1 shards", line)]
        assert len(finals) == 1, result.output
        assert not any(re.match(rf"{label}: \d+/\d+ shards", m) for m in messages)  # not logged as well


def test_each_rate_says_what_it_covers(verbose_run) -> None:  # type: ignore[no-untyped-def]
    result, messages, out = verbose_run
    stages = {s["stage"]: s for s in json.loads((out / "run_info.json").read_text())["stages"]}
    dnabert = stages["dnabert"]
    progress = next(line for line in result.output.splitlines() if "DNABERT-S: 1/1 shards" in line)
    assert re.search(r"\d+ frames in [\d.]+ s embedding \(\d+ frames/s, \d+ tokens/s\)", progress)
    summary = next(m for m in messages if m.startswith("DNABERT-S: ") and "whole stage" in m)
    match = re.search(r"in ([\d.]+) s \(([\d.]+) s embedding: (\d+) frames/s, \d+ tokens/s; ([\d.]+) s "
                      r"getting workers ready and checking files \(([^)]*)\); (\d+) frames/s over the whole "
                      r"stage\)", summary)
    assert match, summary
    total, embed, embed_rate, waiting, whole_rate = map(float, match.group(1, 2, 3, 4, 6))
    assert embed >= 0 and waiting >= 0 and abs(embed + waiting - total) <= 0.15  # printed to 0.1 s
    steps = dict(re.fullmatch(r"(.+) ([\d.]+) s", part).groups() for part in match.group(5).split(", "))
    assert list(steps) == list(PHASES.values())  # each step outside the embedding, named
    assert abs(sum(map(float, steps.values())) - waiting) <= 0.05 * len(steps) + 0.05  # they add up to it
    assert dnabert["phase_seconds"]["workers"] >= dnabert["pool_start_seconds"] - 0.05
    assert waiting >= dnabert["pool_start_seconds"] - 0.05  # the workers' start is not in the embedding rate
    assert embed_rate == round(dnabert["frames"] / dnabert["embed_seconds"])  # from the unrounded seconds
    assert whole_rate == round(dnabert["frames"] / dnabert["seconds"]) < embed_rate


def test_a_cpu_worker_reports_its_peak_resident_memory(verbose_run) -> None:  # type: ignore[no-untyped-def]
    _, _, out = verbose_run
    for stage in json.loads((out / "run_info.json").read_text())["stages"]:
        assert stage["worker_peak_mib"]["cpu"] > 50  # a torch process: tens of MiB at least
        assert stage["worker_peak_measure"] == "worker process resident memory (peak RSS)"


def test_explicit_model_paths_are_named_as_cli_options(verbose_run) -> None:  # type: ignore[no-untyped-def]
    _, messages, out = verbose_run
    models = json.loads((out / "run_info.json").read_text())["models"]
    assert [m["found_via"] for m in models.values()] == [
        "option --dnabert-model", "option --esm-model", "option --classifier"]
    assert any(m.startswith("esm: ") and m.endswith("(demo, via option --esm-model)") for m in messages)


def test_a_finished_run_leaves_no_lock_file(verbose_run) -> None:  # type: ignore[no-untyped-def]
    _, _, out = verbose_run
    assert not (out / ".virnucpro.lock").exists()
    assert (out / "prediction_results.txt").exists()


def test_a_run_that_fails_before_any_work_leaves_nothing(no_models: Path, tmp_path: Path, golden_tiny_dir: Path) -> None:
    out = tmp_path / "results" / "s1"
    result = _invoke("predict", str(golden_tiny_dir / "shared_real.fa"), "--output-dir", str(out),
                     "--device", "cpu")
    assert result.exit_code == 3 and "ModelNotFoundError" in result.output
    assert not (tmp_path / "results").exists()  # it made both levels; both are gone
    mine = tmp_path / "mine"
    mine.mkdir()
    assert _invoke("predict", str(golden_tiny_dir / "shared_real.fa"), "--output-dir", str(mine),
                   "--device", "cpu").exit_code == 3
    assert mine.is_dir() and list(mine.iterdir()) == []  # the user's own directory stays, empty


def test_models_check_with_nothing_found_is_a_table_and_exit_3(no_models: Path) -> None:
    result = _invoke("models", "check", "--no-checksums")
    assert result.exit_code == 3
    lines = result.output.splitlines()
    assert lines[0].split() == ["model", "status", "where"]
    for kind in ("dnabert", "esm", "classifier"):
        assert any(line.startswith(kind) and " missing " in line for line in lines), kind
    assert "$VIRNUCPRO_ESM_MODEL (not set)" in result.output
    assert f"{no_models / 'hub' / 'checkpoints' / 'esm2_t36_3B_UR50D.pt'} (torch hub cache)" in result.output
    assert "3 of 3 models missing" in result.output
    assert "virnucpro models make-demo DIR" in result.output and "--demo-if-missing" in result.output
    assert "Error:" not in result.output  # a report, not the one-line error of a failed command


def test_models_check_found_models_and_json(demo_models, no_models: Path) -> None:  # type: ignore[no-untyped-def]
    result = _invoke("models", "check", "--no-checksums", *_model_args(demo_models))
    assert result.exit_code == 0
    assert re.search(rf"^esm\s+found\s+{re.escape(str(demo_models.esm))} \(demo, via option --esm-model\)$",
                     result.output, re.M)
    rows = [json.loads(line) for line in _invoke("models", "check", "--json", "--no-checksums",
                                                 "--dnabert-model", str(demo_models.dnabert)).stdout.splitlines()]
    assert [(r["model"], r["found"]) for r in rows] == [("dnabert", True), ("esm", False), ("classifier", False)]


def test_make_demo_prints_plain_paths_one_per_line(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        result = _invoke("models", "make-demo", str(tmp_path / "d"))
    finally:
        os.umask(old)
    assert result.exit_code == 0
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert [p.name for p in paths] == ["dnabert_s", "esm2_t36_3B_UR50D.pt", "300_model.pth", "500_model.pth",
                                       "300_model.safetensors", "500_model.safetensors"]
    assert all(p.exists() and p.parent == tmp_path / "d" for p in paths)
    assert "random weights" in result.stderr and f"VIRNUCPRO_MODELS_DIR={tmp_path / 'd'}" in result.stderr
    for path in paths[2:]:  # a shared models directory is readable by the lab
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_the_flow_script_says_why_the_temporary_server_is_slow(capsys) -> None:  # type: ignore[no-untyped-def]
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.predict import announce_temporary_server

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        announce_temporary_server()
    said = capsys.readouterr().err
    assert "temporary local server" in said and "20-60 s" in said and "the first time" in said
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.example:4200/api"}):
        announce_temporary_server()
    assert capsys.readouterr().err == ""  # a real server: nothing to wait for


def test_the_readme_lists_the_cli_as_it_is() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Using it", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = {tuple(line.split("#")[0].split()[1:3]) for line in block.splitlines()
                if line.startswith("virnucpro ")}
    for words in commands:  # every command shown exists, with the options shown
        sub = [w for w in words if not w.startswith(("-", "~")) and "." not in w and "/" not in w]
        assert _invoke(*sub, "--help").exit_code == 0, words
    listed = readme.split("`virnucpro predict` options:", 1)[1].split("Input is FASTA", 1)[0]
    options = set(re.findall(r"(--?[a-z][a-z-]*)", listed))
    assert {"-v", "--verbose", "--persistent-models", "--no-resume"} <= options
    help_text = _invoke("predict", "--help").output
    for option in options:
        assert re.search(rf"(^|[\s,/]){re.escape(option)}\b", help_text), option


def _health_wait_command(port: int, seconds: int) -> str:
    """The copy-paste wait loop of deployments/README.md, pointed at ``port``."""
    readme = (Path(__file__).resolve().parents[2] / "deployments" / "README.md").read_text()
    command = next(block for block in readme.split("```bash")[1:] if "/api/health" in block).split("```")[0]
    assert "timeout 180" in command and "localhost:4200" in command
    return command.replace("timeout 180", f"timeout {seconds}").replace("localhost:4200", f"127.0.0.1:{port}")


def test_the_deployment_readme_waits_for_the_server(tmp_path: Path) -> None:
    import http.server
    import shutil
    import socket
    import subprocess
    import threading

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "health").write_text("true")

    class Late(http.server.SimpleHTTPRequestHandler):  # answers 503 for its first requests
        calls = 0

        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def do_GET(self) -> None:
            Late.calls += 1
            if Late.calls < 3:
                self.send_error(503)
            else:
                super().do_GET()

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Late)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        up = subprocess.run(["bash", "-c", _health_wait_command(server.server_address[1], 60)],
                            capture_output=True, text=True, timeout=90)
    finally:
        server.shutdown()
        server.server_close()
    assert "Prefect server is up" in up.stdout and Late.calls >= 3
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = subprocess.run(["bash", "-c", _health_wait_command(port, 3)], capture_output=True, text=True,
                          timeout=30)
    assert "no answer from the Prefect server after" in down.stdout
