"""Writers (atomic) and readers of the result tables.

- ``prediction_results.txt`` (original format, byte-identical): tab-separated, header
  ``Sequence_ID\\tPrediction\\tscore1\\tscore2``, one row per kept frame in identified-file order;
  score1 = P(others), score2 = P(virus), each printed as ``str(numpy.float32(x))`` as the original
  does.
- ``prediction_results_highestscore.csv`` (original format; tab-separated despite the name): header
  ``Modified_ID\\tIs_Virus``, one row per scored chunk, ``True``/``False``.
- ``prediction_sequences.tsv`` (this project): one row per input record in input order, columns
  :data:`SEQUENCE_COLUMNS`; floats with 6 significant digits, ``NA`` when absent. The columns
  after ``reason`` were added later, at the end, so that readers of the first eleven keep
  working; :func:`read_sequence_calls` reads files with or without them.
  ``calibrated_virus_score`` and ``fdr`` are ``NA`` unless the run was calibrated.
  ``description`` (the FASTA header after the ID) has tabs and line breaks turned into spaces.
- ``prediction_regions.tsv`` (this project): one row per viral region
  (:mod:`virnucpro.domain.regions`), columns :data:`REGION_COLUMNS`, records in input order and
  regions along each record; coordinates 1-based and inclusive, scores as above.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterable, Iterator
from pathlib import Path

import numpy as np

from virnucpro.domain.atomic import atomic_open
from virnucpro.domain.calls import ChunkCall, SequenceCall, SequenceCallLabel, chunk_id_of, frame_label
from virnucpro.domain.records import FrameScore
from virnucpro.domain.regions import Region, RegionKind
from virnucpro.errors import OutputError

__all__ = [
    "PREDICTION_RESULTS_HEADER",
    "HIGHEST_SCORE_HEADER",
    "SEQUENCE_COLUMNS",
    "REGION_COLUMNS",
    "MISSING",
    "format_score",
    "write_prediction_results",
    "iter_prediction_results",
    "read_prediction_results",
    "write_highest_score",
    "read_highest_score",
    "write_sequence_calls",
    "read_sequence_calls",
    "write_regions",
    "read_regions",
]

PREDICTION_RESULTS_HEADER = ("Sequence_ID", "Prediction", "score1", "score2")
HIGHEST_SCORE_HEADER = ("Modified_ID", "Is_Virus")
SEQUENCE_COLUMNS = (
    "sequence_id",
    "length",
    "call",
    "virus_fraction",
    "n_chunks",
    "n_scored_chunks",
    "n_virus_chunks",
    "max_virus_score",
    "mean_chunk_virus_score",
    "best_frame_id",
    "reason",
    "virus_score",
    "calibrated_virus_score",
    "fdr",
    "description",
)
_FIRST_SEQUENCE_COLUMNS = SEQUENCE_COLUMNS[:11]  # the table before virus_score was added
REGION_COLUMNS = (
    "sequence_id",
    "start",
    "end",
    "length",
    "n_chunks",
    "mean_virus_score",
    "max_virus_score",
    "kind",
)
MISSING = "NA"
_BOOLEANS = {"True": True, "False": False}


def format_score(value: float) -> str:
    """A probability as the original prints it: ``str(numpy.float32(value))``."""
    return str(np.float32(value))


# ------------------------------------------------------------------------ prediction_results.txt
def write_prediction_results(path: str | os.PathLike[str], scores: Iterable[FrameScore]) -> int:
    """Write ``prediction_results.txt``; return the number of rows."""
    count = 0
    with atomic_open(path) as handle:
        handle.write("\t".join(PREDICTION_RESULTS_HEADER) + "\n")
        for score in scores:
            handle.write(
                f"{score.frame_id}\t{frame_label(score).value}\t"
                f"{format_score(score.score_others)}\t{format_score(score.score_virus)}\n"
            )
            count += 1
    return count


def iter_prediction_results(
    path: str | os.PathLike[str], chunk_ids: Container[str] | None = None
) -> Iterator[FrameScore]:
    """Read ``prediction_results.txt`` row by row; scores come back as exact float32 values.

    ``chunk_ids``: only the rows of the frames of these chunks
    (:func:`~virnucpro.domain.calls.chunk_id_of`) are yielded, and only their scores parsed.
    Raises :class:`OutputError` naming the file and line when it is not such a table.
    """
    with open(path, encoding="utf-8", newline="") as handle:
        _expect_header(path, handle.readline(), PREDICTION_RESULTS_HEADER)
        for line_no, line in enumerate(handle, 2):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 4 or fields[1] not in ("virus", "others"):
                raise _bad_row(path, line_no, "expected: frame ID, virus|others, two scores")
            if chunk_ids is not None and chunk_id_of(fields[0]) not in chunk_ids:
                continue
            try:
                others, virus = float(np.float32(fields[2])), float(np.float32(fields[3]))
            except ValueError:
                raise _bad_row(path, line_no, "the scores are not numbers") from None
            yield FrameScore(frame_id=fields[0], score_others=others, score_virus=virus)


def read_prediction_results(path: str | os.PathLike[str]) -> list[FrameScore]:
    """All rows of ``prediction_results.txt`` (see :func:`iter_prediction_results`)."""
    return list(iter_prediction_results(path))


# ------------------------------------------------------------ prediction_results_highestscore.csv
def write_highest_score(path: str | os.PathLike[str], calls: Iterable[ChunkCall]) -> int:
    """Write ``prediction_results_highestscore.csv`` in the order given; return the row count.

    :func:`~virnucpro.domain.calls.call_chunks` already returns the original's (sorted) order.
    """
    count = 0
    with atomic_open(path) as handle:
        handle.write("\t".join(HIGHEST_SCORE_HEADER) + "\n")
        for call in calls:
            handle.write(f"{call.chunk_id}\t{call.is_virus}\n")
            count += 1
    return count


def read_highest_score(path: str | os.PathLike[str]) -> dict[str, bool]:
    """``prediction_results_highestscore.csv`` as ``{chunk_id: is_virus}`` in file order."""
    result: dict[str, bool] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        _expect_header(path, handle.readline(), HIGHEST_SCORE_HEADER)
        for line_no, line in enumerate(handle, 2):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 2 or fields[1] not in _BOOLEANS:
                raise _bad_row(path, line_no, "expected: chunk ID, True|False")
            result[fields[0]] = _BOOLEANS[fields[1]]
    return result


# ----------------------------------------------------------------------- prediction_sequences.tsv
def write_sequence_calls(path: str | os.PathLike[str], calls: Iterable[SequenceCall]) -> int:
    """Write ``prediction_sequences.tsv``, one row per record in the order given."""
    count = 0
    with atomic_open(path) as handle:
        handle.write("\t".join(SEQUENCE_COLUMNS) + "\n")
        for call in calls:
            row = (
                call.record_id,
                str(call.length),
                call.call.value,
                _format_float(call.virus_fraction),
                str(call.n_chunks),
                str(call.n_scored_chunks),
                str(call.n_virus_chunks),
                _format_float(call.max_virus_score),
                _format_float(call.mean_chunk_virus_score),
                call.best_frame_id if call.best_frame_id is not None else MISSING,
                call.reason,
                _format_float(call.virus_score),
                _format_float(call.calibrated_virus_score),
                _format_float(call.fdr),
                _one_field(call.description),
            )
            handle.write("\t".join(row) + "\n")
            count += 1
    return count


def read_sequence_calls(path: str | os.PathLike[str]) -> list[SequenceCall]:
    """Read ``prediction_sequences.tsv`` back (floats at the 6 significant digits written).

    A table of the first eleven columns (written before ``virus_score`` was added) reads with
    the later fields absent (``None``, description ``""``).
    """
    calls: list[SequenceCall] = []
    with open(path, encoding="utf-8", newline="") as handle:
        header = handle.readline()
        columns = SEQUENCE_COLUMNS
        if header.rstrip("\r\n").split("\t") == list(_FIRST_SEQUENCE_COLUMNS):
            columns = _FIRST_SEQUENCE_COLUMNS
        _expect_header(path, header, columns)
        for line_no, line in enumerate(handle, 2):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != len(columns):
                raise _bad_row(path, line_no, f"expected {len(columns)} columns")
            later = fields[11:] if len(fields) > 11 else [MISSING, MISSING, MISSING, ""]
            try:
                calls.append(
                    SequenceCall(
                        record_id=fields[0],
                        length=int(fields[1]),
                        call=SequenceCallLabel(fields[2]),
                        virus_fraction=_parse_float(fields[3]),
                        n_chunks=int(fields[4]),
                        n_scored_chunks=int(fields[5]),
                        n_virus_chunks=int(fields[6]),
                        max_virus_score=_parse_float(fields[7]),
                        mean_chunk_virus_score=_parse_float(fields[8]),
                        best_frame_id=None if fields[9] == MISSING else fields[9],
                        reason=fields[10],
                        virus_score=_parse_float(later[0]),
                        calibrated_virus_score=_parse_float(later[1]),
                        fdr=_parse_float(later[2]),
                        description=later[3],
                    )
                )
            except ValueError as error:
                raise _bad_row(path, line_no, str(error)) from None
    return calls


# ------------------------------------------------------------------------ prediction_regions.tsv
def write_regions(path: str | os.PathLike[str], regions: Iterable[Region]) -> int:
    """Write ``prediction_regions.tsv`` in the order given; return the number of regions."""
    count = 0
    with atomic_open(path) as handle:
        handle.write("\t".join(REGION_COLUMNS) + "\n")
        for region in regions:
            row = (
                region.sequence_id,
                str(region.start),
                str(region.end),
                str(region.length),
                str(region.n_chunks),
                _format_float(region.mean_virus_score),
                _format_float(region.max_virus_score),
                region.kind.value,
            )
            handle.write("\t".join(row) + "\n")
            count += 1
    return count


def read_regions(path: str | os.PathLike[str]) -> list[Region]:
    """Read ``prediction_regions.tsv`` back (scores at the 6 significant digits written)."""
    regions: list[Region] = []
    with open(path, encoding="utf-8", newline="") as handle:
        _expect_header(path, handle.readline(), REGION_COLUMNS)
        for line_no, line in enumerate(handle, 2):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != len(REGION_COLUMNS):
                raise _bad_row(path, line_no, f"expected {len(REGION_COLUMNS)} columns")
            try:
                region = Region(
                    sequence_id=fields[0],
                    start=int(fields[1]),
                    end=int(fields[2]),
                    n_chunks=int(fields[4]),
                    mean_virus_score=float(fields[5]),
                    max_virus_score=float(fields[6]),
                    kind=RegionKind(fields[7]),
                )
            except ValueError as error:
                raise _bad_row(path, line_no, str(error)) from None
            if region.length != int(fields[3]):
                raise _bad_row(path, line_no, "length is not end - start + 1")
            regions.append(region)
    return regions


# --------------------------------------------------------------------------------------- helpers
def _one_field(text: str) -> str:
    """``text`` with tabs and line breaks as spaces, so that it stays one table field."""
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _format_float(value: float | None) -> str:
    return MISSING if value is None else format(value, ".6g")


def _parse_float(text: str) -> float | None:
    return None if text == MISSING else float(text)


def _expect_header(path: str | os.PathLike[str], line: str, header: tuple[str, ...]) -> None:
    if line.rstrip("\r\n").split("\t") != list(header):
        raise OutputError(
            f"{Path(path)}: line 1 is not the expected header {'<TAB>'.join(header)!r}; the file "
            "is not a VirNucPro table or was damaged. Delete it and re-run."
        )


def _bad_row(path: str | os.PathLike[str], line_no: int, what: str) -> OutputError:
    return OutputError(
        f"{Path(path)}: line {line_no} is malformed ({what}); the file was damaged or edited. "
        "Delete it and re-run."
    )
