"""The error hierarchy. Raised in the library, turned into exit codes only in ``cli.py``.

Every message names the file or record concerned and says how to fix it.
"""

from __future__ import annotations

__all__ = [
    "VirNucProError",
    "InputError",
    "ConfigError",
    "ModelNotFoundError",
    "ModelLoadError",
    "WorkerError",
    "OutputError",
    "DiskError",
    "Terminated",
]


class VirNucProError(Exception):
    """Base class of every error the package raises on purpose."""

    exit_code: int = 1


class InputError(VirNucProError):
    """The input FASTA cannot be used (empty, not FASTA, protein, duplicate IDs, ...)."""

    exit_code = 2


class ConfigError(VirNucProError):
    """An option or parameter has a value the pipeline cannot run with."""

    exit_code = 2


class ModelNotFoundError(VirNucProError):
    """A model file was not found in any place it was looked for."""

    exit_code = 3


class ModelLoadError(VirNucProError):
    """A model file was found but cannot be loaded (wrong format, missing keys, unsafe pickle)."""

    exit_code = 3


class WorkerError(VirNucProError):
    """A GPU/CPU worker failed a shard more often than allowed; names the frame IDs."""

    exit_code = 4


class OutputError(VirNucProError):
    """An output directory cannot be written, or holds results of a different run."""

    exit_code = 5


class DiskError(OutputError):
    """A file cannot be written: the disk is full, over quota, read-only or not writable.

    ``errno`` is the ``OSError``'s; a worker reports it, so that the parent stops instead of
    retrying a shard that cannot be written (see :mod:`virnucpro.domain.disk`).
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    def __reduce__(self) -> tuple[type, tuple[str, int | None]]:
        return (type(self), (str(self), self.errno))


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM; raised by the handler the entry points install, so a terminated
    run stops like an interrupted one (workers ended, finished shards kept). Exit code 143."""

    exit_code = 143
