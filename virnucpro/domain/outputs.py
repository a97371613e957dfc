"""Every path a run reads or writes under its output directory, in ONE place.

Like geNomad's ``GenomadOutputs``: no other module builds an output path string. Get the object with
:meth:`OutputPaths.for_dir` and use its properties::

    paths = OutputPaths.for_dir(output_dir)
    paths.prediction_results      # <out>/prediction_results.txt
    paths.prepared(input_fasta, 500).chunked

Layout::

    <out>/prediction_results.txt               one row per kept frame (original format)
    <out>/prediction_results_highestscore.csv  one row per scored chunk (original format)
    <out>/prediction_sequences.tsv             one row per input record (this project's call)
    <out>/prediction_regions.tsv               one row per viral region (whole or provirus)
    <out>/virus.fna                            the records called virus (for CheckV etc.)
    <out>/provirus.fna                         the provirus regions' sequences
    <out>/run_info.json                        provenance
    <out>/report.html                          human-readable summary
    <out>/calibration.json                     written by `virnucpro calibrate` (not by predict)
    <out>/.virnucpro_work/                     intermediates (resumable)
        shards/  records.tsv  prepared.json     frame shards, records, the resume key (with
                                               each prepared file's size and SHA-256)
        descriptions.tsv                       FASTA header descriptions (records having one)
        features/dnabert/  features/esm/       per-shard embeddings
        scores/  DONE                          per-shard scores, the finished marker

The original's prepared FASTA files (:meth:`OutputPaths.prepared`) are named after the input:
``<stem>_chunked<L>.fa``, ``<stem>_identified_nucleotide.fa``, ``<stem>_identified_protein.faa``,
where ``<stem>`` is the input file name without ``.gz`` and without its last FASTA extension
(``.fa``, ``.fasta``, ``.fna``, ``.fas``, ``.ffn``; compared case-insensitively).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FASTA_EXTENSIONS",
    "PreparedFiles",
    "OutputPaths",
    "input_stem",
    "prepared_paths",
    "default_output_dir",
]

FASTA_EXTENSIONS = (".fa", ".fasta", ".fna", ".fas", ".ffn")


@dataclass(frozen=True, slots=True)
class PreparedFiles:
    """The three FASTA files the original writes before computing features."""

    chunked: Path
    nucleotide: Path
    protein: Path


def input_stem(input_path: str | os.PathLike[str]) -> str:
    """The input file name without ``.gz`` and without its last FASTA extension."""
    name = Path(input_path).name
    if name.lower().endswith(".gz"):
        name = name[: -len(".gz")]
    lowered = name.lower()
    for extension in FASTA_EXTENSIONS:
        if lowered.endswith(extension) and len(name) > len(extension):
            return name[: -len(extension)]
    return name


def default_output_dir(input_path: str | os.PathLike[str]) -> Path:
    """``<input name>_virnucpro`` next to the input: the default of every entry point.

    Next to the input, not in the current directory, because a deployment's working directory is
    arbitrary (a worker's temporary folder) while the input's folder is where its owner looks.
    """
    path = Path(input_path)
    return path.parent / f"{input_stem(path)}_virnucpro"


def prepared_paths(
    directory: str | os.PathLike[str], input_path: str | os.PathLike[str], chunk_length: int
) -> PreparedFiles:
    """The prepared-file paths for ``input_path`` at ``chunk_length``, inside ``directory``."""
    folder = Path(directory)
    stem = input_stem(input_path)
    return PreparedFiles(
        chunked=folder / f"{stem}_chunked{chunk_length}.fa",
        nucleotide=folder / f"{stem}_identified_nucleotide.fa",
        protein=folder / f"{stem}_identified_protein.faa",
    )


@dataclass(frozen=True, slots=True)
class OutputPaths:
    """All output paths of one run, derived from its output directory.

    A run writes its final outputs into a staging folder of the work directory
    (:meth:`staged`) and publishes them together at the end (:meth:`published` gives the real
    places), so a failed run never leaves a partial set that looks complete.
    """

    output_dir: Path
    staging: bool = False

    @classmethod
    def for_dir(cls, output_dir: str | os.PathLike[str]) -> OutputPaths:
        return cls(output_dir=Path(output_dir))

    def staged(self) -> OutputPaths:
        """The same paths with the final outputs in :attr:`staging_dir`."""
        return OutputPaths(self.output_dir, staging=True)

    def published(self) -> OutputPaths:
        """The same paths with the final outputs in the output directory."""
        return OutputPaths(self.output_dir, staging=False)

    @property
    def _final_dir(self) -> Path:
        return self.staging_dir if self.staging else self.output_dir

    @property
    def staging_dir(self) -> Path:
        """Where a run writes its final outputs before publishing them all at once."""
        return self.output_dir / ".virnucpro_work" / "staging"

    @property
    def outputs_manifest(self) -> Path:
        """What the last finished run published here, with SHA-256s: the only files a later run
        may remove (a user's file of the same name is never touched)."""
        return self.output_dir / ".virnucpro_outputs.json"

    # Final outputs ---------------------------------------------------------------------------
    @property
    def prediction_results(self) -> Path:
        return self._final_dir / "prediction_results.txt"

    @property
    def highest_score(self) -> Path:
        return self._final_dir / "prediction_results_highestscore.csv"

    @property
    def sequences(self) -> Path:
        return self._final_dir / "prediction_sequences.tsv"

    @property
    def regions(self) -> Path:
        return self._final_dir / "prediction_regions.tsv"

    @property
    def virus_fasta(self) -> Path:
        return self._final_dir / "virus.fna"

    @property
    def provirus_fasta(self) -> Path:
        return self._final_dir / "provirus.fna"

    @property
    def run_info(self) -> Path:
        return self._final_dir / "run_info.json"

    @property
    def report(self) -> Path:
        return self._final_dir / "report.html"

    @property
    def final_outputs(self) -> tuple[Path, ...]:
        """Every final (non-intermediate) output file, in the order above."""
        return (
            self.prediction_results,
            self.highest_score,
            self.sequences,
            self.regions,
            self.virus_fasta,
            self.provirus_fasta,
            self.run_info,
            self.report,
        )

    @property
    def calibration(self) -> Path:
        """Where ``virnucpro calibrate`` writes its file by default; a predict run leaves it."""
        return self.output_dir / "calibration.json"

    @property
    def lock(self) -> Path:
        """Held (flock) by the run writing this directory; outside the work dir, which is rebuilt."""
        return self.output_dir / ".virnucpro.lock"

    # Intermediates ---------------------------------------------------------------------------
    @property
    def work_dir(self) -> Path:
        return self.output_dir / ".virnucpro_work"

    @property
    def features_dir(self) -> Path:
        return self.work_dir / "features"

    @property
    def dnabert_features_dir(self) -> Path:
        return self.features_dir / "dnabert"

    @property
    def esm_features_dir(self) -> Path:
        return self.features_dir / "esm"

    @property
    def shards_dir(self) -> Path:
        """Frame shards: the work units handed to workers."""
        return self.work_dir / "shards"

    @property
    def records(self) -> Path:
        """One line per input record: ID, length, number of chunks (for per-sequence calls)."""
        return self.work_dir / "records.tsv"

    @property
    def descriptions(self) -> Path:
        """``ID<TAB>description`` of every input record whose header has a description."""
        return self.work_dir / "descriptions.tsv"

    @property
    def manifest(self) -> Path:
        """What was prepared from which input (SHA-256, chunk length, shards): the resume key, and
        the size and SHA-256 of each prepared file."""
        return self.work_dir / "prepared.json"

    @property
    def scores_dir(self) -> Path:
        """Per-shard classifier scores."""
        return self.work_dir / "scores"

    def feature_file(self, stage: str, shard_name: str) -> Path:
        """One shard's embeddings of one feature stage (``stage``: ``dnabert`` or ``esm``)."""
        return self.features_dir / stage / f"{shard_name}.npz"

    def score_file(self, shard_name: str) -> Path:
        """One shard's classifier scores."""
        return self.scores_dir / f"{shard_name}.npz"

    @property
    def done_marker(self) -> Path:
        return self.work_dir / "DONE"

    # The original's prepared FASTA files -----------------------------------------------------
    def prepared(self, input_path: str | os.PathLike[str], chunk_length: int) -> PreparedFiles:
        """The three prepared-file paths for ``input_path``, in the output directory."""
        return prepared_paths(self.output_dir, input_path, chunk_length)
