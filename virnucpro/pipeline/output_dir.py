"""The output directory's final outputs: what a run may remove, and publishing them all at once.

- Before any work that can fail (model resolution included), :func:`clear_earlier_outputs`
  removes the final outputs of the last finished run in this directory, and only those: files
  listed, with their SHA-256, in ``.virnucpro_outputs.json`` (written when they were published)
  and unchanged since. A file of an output's name that VirNucPro cannot prove it wrote (a user's
  file, or one of ours edited since) stops the run with an error and nothing is touched.
- A run writes its final outputs into ``.virnucpro_work/staging/`` and :func:`publish_outputs`
  moves them into the output directory together at the end, then records them. A failed run
  publishes nothing, so it never leaves a partial set that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.checksums import sha256_file
from virnucpro.domain.outputs import OutputPaths
from virnucpro.errors import OutputError

__all__ = ["clear_earlier_outputs", "publish_outputs", "MANIFEST_VERSION"]

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1


def _read_manifest(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("%s is unreadable (%s); no earlier output counts as VirNucPro's", path, exc)
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def clear_earlier_outputs(paths: OutputPaths) -> list[Path]:
    """Remove the last finished run's final outputs here (proved by SHA-256) and its DONE marker
    (a night must not count a run that is starting over as finished); return the outputs.

    OutputError (nothing removed) when a final output's name is taken by a file VirNucPro cannot
    prove it wrote.
    """
    published = paths.published()
    manifest = _read_manifest(published.outputs_manifest)
    ours: list[Path] = []
    for path in published.final_outputs:
        if not os.path.lexists(path):
            continue
        expected = manifest.get(path.name)
        if path.is_symlink() or not path.is_file() or expected is None or sha256_file(path) != expected:
            raise OutputError(
                f"{path} exists and VirNucPro cannot tell that an earlier run wrote it (it is not "
                f"listed unchanged in {published.outputs_manifest.name}); nothing was changed. Move "
                "the file away or choose another --output-dir"
            )
        ours.append(path)
    paths.done_marker.unlink(missing_ok=True)  # first: the earlier run is no longer the finished one
    for path in ours:
        path.unlink()
    published.outputs_manifest.unlink(missing_ok=True)
    if published.staging_dir.is_dir() and not published.staging_dir.is_symlink():
        shutil.rmtree(published.staging_dir)  # a failed run's unpublished outputs
    if ours:
        logger.info("removed %d outputs of the earlier run in %s", len(ours), published.output_dir)
    return ours


def publish_outputs(staged: OutputPaths) -> OutputPaths:
    """Move every staged final output into the output directory and record them (SHA-256)."""
    published = staged.published()
    moves = [(src, dst) for src, dst in zip(staged.final_outputs, published.final_outputs) if src.is_file()]
    files = {dst.name: sha256_file(src) for src, dst in moves}
    for src, dst in moves:
        os.replace(src, dst)
    atomic_write_text(
        published.outputs_manifest,
        json.dumps({"version": MANIFEST_VERSION, "files": files}, indent=1) + "\n",
    )
    return published
