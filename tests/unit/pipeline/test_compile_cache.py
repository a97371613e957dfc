"""Workers keep compiled kernels in the user's cache directory; a user's own setting wins."""

from __future__ import annotations

from pathlib import Path

from virnucpro.pipeline.compile_cache import compile_cache_env


def test_defaults_to_the_xdg_cache_directory(tmp_path: Path) -> None:
    env = compile_cache_env({"XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")})
    assert env == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "xdg" / "virnucpro" / "inductor"),
                   "TRITON_CACHE_DIR": str(tmp_path / "xdg" / "virnucpro" / "triton")}
    assert all(Path(p).is_dir() for p in env.values())


def test_falls_back_to_home_and_never_overrides_a_users_setting(tmp_path: Path) -> None:
    env = compile_cache_env({"HOME": str(tmp_path), "TRITON_CACHE_DIR": "/mine"})
    assert env == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / ".cache" / "virnucpro" / "inductor")}


def test_an_unwritable_cache_directory_is_left_alone(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert compile_cache_env({"XDG_CACHE_HOME": str(blocker)}) == {}
