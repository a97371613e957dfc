"""Which checkout a deployment's run uses, and its code version (the pull step and the check)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import virnucpro
from virnucpro.errors import ConfigError
from virnucpro.orchestration.checkout import (
    FLOW_FILES,
    code_version,
    find_checkout,
    version_mismatch,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def _fake_checkout(root: Path) -> Path:
    for name in FLOW_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def test_virnucpro_home_wins(tmp_path: Path) -> None:
    home = _fake_checkout(tmp_path / "checkout")
    assert find_checkout({"VIRNUCPRO_HOME": str(home)}) == home.resolve()


def test_without_virnucpro_home_the_installed_package_checkout_is_used() -> None:
    assert find_checkout({}) == Path(virnucpro.__file__).resolve().parents[1] == REPO_ROOT


def test_a_wrong_virnucpro_home_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"VIRNUCPRO_HOME=.* is not a VirNucPro checkout \(no flows/predict.py"):
        find_checkout({"VIRNUCPRO_HOME": str(tmp_path)})


def test_an_installed_package_outside_a_checkout_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages" / "virnucpro"
    site.mkdir(parents=True)
    monkeypatch.setattr(virnucpro, "__file__", str(site / "__init__.py"))
    with pytest.raises(ConfigError, match="VIRNUCPRO_HOME is not set and the installed virnucpro package"):
        find_checkout({})


def test_code_version_names_the_commit(tmp_path: Path) -> None:
    assert code_version(tmp_path) == virnucpro.__version__  # no git: the package version alone
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f.txt").write_text("one\n")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    commit = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    assert code_version(repo) == f"{virnucpro.__version__} git {commit}"
    (repo / "f.txt").write_text("two\n")
    assert code_version(repo) == f"{virnucpro.__version__} git {commit}-dirty"


def test_version_mismatch_message() -> None:
    assert version_mismatch("0.1.0 git aaa", "0.1.0 git aaa") is None
    assert version_mismatch(None, "0.1.0") is None  # a deployment without a version: nothing to compare
    text = version_mismatch("0.1.0 git aaa", "0.1.0 git bbb")
    assert text is not None and "made from virnucpro 0.1.0 git aaa" in text and "runs virnucpro 0.1.0 git bbb" in text
