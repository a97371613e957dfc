"""What ``virnucpro models check`` reports: per model, found (where, how, SHA-256) or missing
(every place looked, how to install it), and how to try the pipeline without the real weights."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from virnucpro.models.discovery import ModelSearch

__all__ = ["describe_models", "format_model_check", "DEMO_HINT"]

DEMO_HINT = (
    "To try the pipeline without the real weights: `virnucpro models make-demo DIR` and "
    "`export VIRNUCPRO_MODELS_DIR=DIR`, or `python flows/predict.py INPUT --demo-if-missing` "
    "(tiny models with RANDOM weights: the calls are meaningless)."
)


def describe_models(searches: Iterable[ModelSearch], checksums: bool = True) -> list[dict[str, object]]:
    """One row per model: ``found`` and, if found, its path, origin, weights file, size (and
    SHA-256); if missing, the problem, every place looked and the install hint."""
    rows: list[dict[str, object]] = []
    for search in searches:
        location = search.location
        if location is None:
            rows.append({"model": search.kind, "found": False, "problem": search.problem,
                         "looked": list(search.looked), "hint": search.hint})
            continue
        weights = location.weights_file
        row: dict[str, object] = {
            "model": location.kind,
            "found": True,
            "path": str(location.path),
            "source": location.source,
            "found_via": location.found_via,
            "file": str(weights),
            "size": weights.stat().st_size,
        }
        if checksums:
            row["sha256"] = location.sha256()
        if location.tokenizer_file is not None:
            row["tokenizer"] = str(location.tokenizer_file)
        rows.append(row)
    return rows


def _size(n_bytes: object) -> str:
    size = float(n_bytes)  # type: ignore[arg-type]
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("KB", "MB"):
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} GB"


def format_model_check(rows: Sequence[dict[str, object]]) -> str:
    """The rows of :func:`describe_models` as a plain-text table, with the hint when one is missing."""
    width = max(len("classifier"), *(len(str(r["model"])) for r in rows))
    indent = " " * (width + 2 + len("missing") + 2)
    lines = [f"{'model':<{width}}  {'status':<7}  where"]
    for row in rows:
        head = f"{row['model']!s:<{width}}  "
        if row["found"]:
            lines.append(f"{head}{'found':<7}  {row['path']} ({row['source']}, via {row['found_via']})")
            detail = f"{row['file']}, {_size(row['size'])}"
            if "sha256" in row:
                detail += f", sha256 {row['sha256']}"
            lines.append(f"{indent}{detail}")
            if "tokenizer" in row:
                lines.append(f"{indent}tokenizer {row['tokenizer']}")
            continue
        lines.append(f"{head}{'missing':<7}  {row['problem']}")
        looked = list(row["looked"])  # type: ignore[call-overload]
        if looked:
            lines.append(f"{indent}looked in:")
            lines.extend(f"{indent}  - {place}" for place in looked)
        if row["hint"]:
            lines.append(f"{indent}{row['hint']}")
    missing = [str(r["model"]) for r in rows if not r["found"]]
    if missing:
        lines += ["", f"{len(missing)} of {len(rows)} models missing ({', '.join(missing)}). {DEMO_HINT}"]
    return "\n".join(lines)
