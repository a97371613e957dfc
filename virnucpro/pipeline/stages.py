"""The prediction stages, each a plain function over paths: prepare, classify, report.

(The feature stages run on workers: :func:`virnucpro.pipeline.steps.feature_step`.) The order of
a run is :func:`virnucpro.pipeline.prediction.run_prediction`'s; the Prefect flow runs the same
steps as tasks. Stages pass paths and small typed records, never models or tensors. Every stage is
restartable: finished work on disk is checked and reused.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from virnucpro.config import RunConfig
from virnucpro.domain.atomic import atomic_write_text
from virnucpro.domain.calibration import calibrate_calls
from virnucpro.domain.calls import (
    SequenceCall,
    SequenceCallLabel,
    call_chunk_frames,
    call_track,
    sorted_chunk_calls,
)
from virnucpro.domain.checksums import FileDigest, sha256_file
from virnucpro.domain.fasta import check_input_file, read_fasta
from virnucpro.domain.outputs import OutputPaths
from virnucpro.domain.prepare import iter_frames
from virnucpro.domain.handoff import write_handoff_fasta
from virnucpro.domain.records import Frame, FrameScore, SequenceRecord
from virnucpro.domain.regions import Region, RegionKind, find_regions
from virnucpro.domain.tables import (
    write_highest_score,
    write_prediction_results,
    write_regions,
    write_sequence_calls,
)
from virnucpro.errors import ModelLoadError, OutputError
from virnucpro.pipeline.shards import (
    Shard,
    check_work_dir,
    features_complete,
    iter_shard_ids,
    load_features,
    save_features,
    write_shard,
)
from virnucpro.pipeline.calling import CallSettings
from virnucpro.pipeline.prepared_manifest import (
    ManifestError,
    PreparedManifest,
    PrepareKey,
    changed_files,
    read_manifest,
)
from virnucpro.pipeline.stage import FEATURE_STAGES, FeatureStage
from virnucpro.pipeline.tracks import iter_tracks, read_records, write_descriptions
from virnucpro.pipeline.work_keys import claim_folder, read_key, score_key

__all__ = [
    "PreparedSample",
    "ClassifyReport",
    "ReportResult",
    "prepare_stage",
    "classify_stage",
    "report_stage",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PreparedSample:
    """The prepared input: frame shards on disk plus counts. Small and picklable."""

    input_path: Path
    input_sha256: str
    chunk_length: int
    output_dir: Path
    n_records: int
    n_chunks: int
    n_frames: int
    shards: tuple[Shard, ...]
    seconds: float
    reused: bool = False
    files: tuple[tuple[str, FileDigest], ...] = ()  # each prepared file's digest, as prepared.json holds them

    @property
    def paths(self) -> OutputPaths:
        """The run's paths, final outputs staged (published together when the run finished)."""
        return OutputPaths.for_dir(self.output_dir).staged()


@dataclass(frozen=True, slots=True)
class ClassifyReport:
    """The classify step: ``shards_skipped`` had their scores on disk already (scored beside the
    ESM-2 stage, or by the interrupted run this one resumes)."""

    n_frames: int
    input_dim: int
    seconds: float
    shards_skipped: int


@dataclass(frozen=True, slots=True)
class ReportResult:
    """What the report stage wrote: counts per table and file.

    ``sequence_calls`` counts sequences by call, ``regions`` viral regions by kind (``whole``,
    ``provirus``); ``n_virus_fasta`` / ``n_provirus_fasta`` are the records of ``virus.fna`` /
    ``provirus.fna``; ``n_calibrated`` the sequences with a calibrated score (0 without
    ``--calibration``).
    """

    n_frames: int
    n_chunks_called: int
    n_virus_chunks: int
    sequence_calls: dict[str, int]
    seconds: float
    regions: dict[str, int] = field(default_factory=dict)
    n_virus_fasta: int = 0
    n_provirus_fasta: int = 0
    n_calibrated: int = 0


# -- prepare ---------------------------------------------------------------------------------
def prepare_stage(config: RunConfig) -> PreparedSample:
    """Read, chunk and translate the input; write frame shards and the record list.

    Reuses an earlier preparation of the same input (same SHA-256, chunk length and shard size)
    whose every file is still the one prepared (size and SHA-256 as ``prepared.json`` records
    them: :mod:`~virnucpro.pipeline.prepared_manifest`), so that a resumed run keeps its shard
    boundaries and finished feature files; otherwise it logs which file and why, and prepares
    again.
    """
    started = time.perf_counter()
    input_path = Path(config.input_fasta)
    check_input_file(input_path)
    paths = OutputPaths.for_dir(config.output_dir)
    _check_output_dir(paths)
    check_work_dir(paths.work_dir)
    input_sha = sha256_file(input_path)
    key = PrepareKey(input_sha, config.chunk_length, config.shard_frames)
    earlier = _earlier_preparation(paths, key) if config.resume else None
    if earlier is not None:
        problem = earlier if isinstance(earlier, str) else earlier.problem(paths)
        if problem is None and isinstance(earlier, PreparedManifest):
            logger.info("reusing the preparation of %s (%d frames)", input_path, earlier.n_frames)
            return PreparedSample(
                input_path, input_sha, config.chunk_length, Path(config.output_dir),
                earlier.n_records, earlier.n_chunks, earlier.n_frames, earlier.shards,
                time.perf_counter() - started, reused=True, files=earlier.files,
            )
        logger.warning("%s; preparing %s again (finished feature files are kept)", problem, input_path)
    elif paths.work_dir.exists():  # a different input or settings, or no record: nothing is reusable
        logger.info("removing the earlier work in %s (%s)", paths.work_dir,
                    "no preparation of this input with these settings" if config.resume else "--no-resume")
        shutil.rmtree(paths.work_dir)
    paths.shards_dir.mkdir(parents=True, exist_ok=True)
    n_records = n_chunks = n_frames = 0
    shards: list[Shard] = []
    batch: list[Frame] = []
    record_lines: list[str] = []
    descriptions: list[tuple[str, str]] = []

    def flush() -> None:
        shard_id = len(shards)
        shards.append(write_shard(paths.shards_dir / f"shard_{shard_id:06d}.tsv", shard_id, batch))
        batch.clear()

    for record in iter_frames(_noting_descriptions(read_fasta(input_path), descriptions),
                              config.chunk_length):
        n_records += 1
        n_chunks += len(record.chunks)
        record_lines.append(f"{record.record_id}\t{record.length}\t{len(record.chunks)}\n")
        for frame in record.frames:
            batch.append(frame)
            n_frames += 1
            if len(batch) >= config.shard_frames:
                flush()
    if batch:
        flush()
    atomic_write_text(paths.records, "".join(record_lines))
    write_descriptions(paths.descriptions, descriptions)
    manifest = PreparedManifest.of_written(paths, key, input_path, n_records, n_chunks, n_frames, shards)
    # last: a preparation cut short leaves no manifest (a fresh one), or the earlier one of the same
    # key, whose digests are those of the same files (the preparation is deterministic)
    manifest.write(paths.manifest)
    logger.info("prepared %d records → %d chunks → %d kept frames in %d shards",
                n_records, n_chunks, n_frames, len(shards))
    return PreparedSample(
        input_path, input_sha, config.chunk_length, Path(config.output_dir),
        n_records, n_chunks, n_frames, tuple(shards), time.perf_counter() - started, files=manifest.files,
    )


def _earlier_preparation(paths: OutputPaths, key: PrepareKey) -> PreparedManifest | str | None:
    """The work directory's preparation under ``key``; why its manifest is malformed; or None
    when there is none to reuse (no manifest, one that cannot say what was prepared, another key)."""
    try:
        data = read_manifest(paths.manifest)
    except ManifestError as exc:
        logger.warning("%s is not a preparation record (%s); nothing in %s is reused",
                       paths.manifest, exc, paths.work_dir)
        return None
    if data is None or not key.matches(data):
        return None
    try:
        return PreparedManifest.from_dict(data, paths)
    except ManifestError as exc:
        return f"{paths.manifest} is malformed ({exc})"


def _noting_descriptions(
    records: Iterable[SequenceRecord], sink: list[tuple[str, str]]
) -> Iterator[SequenceRecord]:
    """``records`` unchanged; the ``(ID, description)`` of each one with a description is
    appended to ``sink`` on the way."""
    for record in records:
        if record.description:
            sink.append((record.id, record.description))
        yield record


def _check_output_dir(paths: OutputPaths) -> None:
    if paths.output_dir.exists() and not paths.output_dir.is_dir():
        raise OutputError(f"{paths.output_dir} exists and is not a directory; choose another --output-dir")
    try:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {paths.output_dir}: {exc}") from exc


# -- classify --------------------------------------------------------------------------------
class ShardScorer:
    """Scores shards with the classifier: both feature files of a shard, joined by frame ID,
    classified on the CPU in fp32, written as the shard's score file. The one place this is done:
    beside the ESM-2 stage for each shard as its features are complete, and by the classify step
    for any shard still without scores.

    The scores folder is claimed for the classifier and the feature folders' keys (``features``,
    by stage; default: as the folders record them now), so scores made by another classifier or
    from other features are never reused.
    """

    def __init__(self, prepared: "PreparedSample", classifier_path: Path,
                 features: dict[str, dict | None] | None = None) -> None:
        from virnucpro.models.reference.classifier import load_classifier

        self.paths = prepared.paths
        self.classifier_path = classifier_path
        if features is None:
            features = {stage.value: read_key(self.paths.features_dir / stage.value) for stage in FEATURE_STAGES}
        claim_folder(self.paths.scores_dir, score_key(classifier_path, features), "scores")
        self.model = load_classifier(classifier_path)
        self.input_dim = int(self.model.input_dim)

    def done(self, shard: Shard) -> bool:
        """The shard's score file is complete (checked against its frame IDs)."""
        return features_complete(self.paths.score_file(shard.name), list(iter_shard_ids(shard.path)))

    def score(self, shard: Shard) -> None:
        """Write the shard's scores (both feature files must be complete)."""
        import torch

        from virnucpro.models.reference.classifier import classify

        ids = list(iter_shard_ids(shard.path))
        dnabert = load_features(self.paths.feature_file(FeatureStage.DNABERT.value, shard.name), ids)
        esm = load_features(self.paths.feature_file(FeatureStage.ESM.value, shard.name), ids)
        merged = np.concatenate([dnabert, esm], axis=1)
        if merged.shape[1] != self.input_dim:
            raise ModelLoadError(
                f"{self.classifier_path}: the classifier expects {self.input_dim} features, but "
                f"DNABERT-S gives {dnabert.shape[1]} and ESM-2 {esm.shape[1]} ({merged.shape[1]}); "
                "use the classifier trained with these two models"
            )
        save_features(self.paths.score_file(shard.name), ids, classify(self.model, torch.from_numpy(merged)))


def classify_stage(prepared: PreparedSample, classifier_path: Path) -> ClassifyReport:
    """Score every shard whose scores are not on disk yet (:class:`ShardScorer`): after a run's
    ESM-2 stage, which scores each shard beside it, usually none."""
    started = time.perf_counter()
    scorer = ShardScorer(prepared, classifier_path)
    skipped = 0
    for shard in prepared.shards:
        if scorer.done(shard):
            skipped += 1
            continue
        scorer.score(shard)
    return ClassifyReport(prepared.n_frames, scorer.input_dim, time.perf_counter() - started, skipped)


def _iter_frame_scores(prepared: PreparedSample) -> Iterator[FrameScore]:
    """Every frame's score, in input order. Of each shard only the frame IDs are read (not the
    frames' DNA and protein)."""
    for shard in prepared.shards:
        ids = list(iter_shard_ids(shard.path))
        probs = load_features(prepared.paths.score_file(shard.name), ids)
        for frame_id, (others, virus) in zip(ids, probs.tolist()):
            yield FrameScore(frame_id, others, virus)


# -- report ----------------------------------------------------------------------------------
def report_stage(prepared: PreparedSample, calling: CallSettings) -> ReportResult:
    """Write every table and the hand-off FASTA files, each atomically, in input order.

    The original's two tables come from the frame scores alone (the original rule, whatever the
    thresholds); the per-sequence calls, the viral regions, ``virus.fna``, ``provirus.fna`` and the
    calibrated columns follow ``calling``.
    """
    started = time.perf_counter()
    paths = prepared.paths
    _check_unchanged(prepared)
    paths.staging_dir.mkdir(parents=True, exist_ok=True)
    all_scores = list(_iter_frame_scores(prepared))
    n_written = write_prediction_results(paths.prediction_results, all_scores)
    if n_written != prepared.n_frames:
        raise OutputError(
            f"{paths.prediction_results}: wrote {n_written} rows for {prepared.n_frames} frames; "
            "delete the output directory and re-run"
        )
    called = call_chunk_frames(all_scores)  # once, for both the chunk table and the tracks
    chunk_calls = sorted_chunk_calls(called)
    write_highest_score(paths.highest_score, chunk_calls)
    calls: list[SequenceCall] = []
    regions: list[Region] = []
    for track in iter_tracks(read_records(paths), called, prepared.chunk_length):
        call = call_track(track, calling.thresholds)
        calls.append(call)
        regions.extend(find_regions(track, call, calling.thresholds, calling.regions))
    if calling.calibration is not None:
        calls = calibrate_calls(calls, calling.calibration)
    write_sequence_calls(paths.sequences, calls)
    write_regions(paths.regions, regions)
    handoff = write_handoff_fasta(
        prepared.input_path,
        virus_ids=[c.record_id for c in calls if c.call is SequenceCallLabel.VIRUS],
        regions=regions,
        virus_path=paths.virus_fasta,
        provirus_path=paths.provirus_fasta,
        input_sha256=prepared.input_sha256,
    )
    counts = {label.value: 0 for label in SequenceCallLabel}
    for call in calls:
        counts[call.call.value] += 1
    by_kind = {kind.value: 0 for kind in RegionKind}
    for region in regions:
        by_kind[region.kind.value] += 1
    return ReportResult(
        n_frames=n_written,
        n_chunks_called=len(chunk_calls),
        n_virus_chunks=sum(c.is_virus for c in chunk_calls),
        sequence_calls=counts,
        seconds=time.perf_counter() - started,
        regions=by_kind,
        n_virus_fasta=handoff.n_virus,
        n_provirus_fasta=handoff.n_provirus,
        n_calibrated=sum(c.calibrated_virus_score is not None for c in calls),
    )


def _check_unchanged(prepared: PreparedSample) -> None:
    """:class:`OutputError` if a prepared file the report reads (records, descriptions, shards)
    is no longer of the size and SHA-256 this run's prepare step recorded or checked: it changed
    while the feature stages ran, and the tables would come from other records or descriptions.

    A changed shard may have been read by a worker after the change, and identical frames are
    computed once across shards (:mod:`~virnucpro.pipeline.dedupe`), so any feature or score file
    can hold rows computed from it: they are all removed, and the re-run prepares again and
    computes them from the right shards.
    """
    changed = changed_files(prepared.paths, prepared.shards, prepared.files) if prepared.files else []
    if not changed:
        return
    paths = prepared.paths
    if any(path.parent == paths.shards_dir for path, _ in changed):
        logger.warning("a frame shard changed during the run; removing every feature and score file "
                       "in %s (any of them can hold rows computed from it)", paths.work_dir)
        for folder in (paths.features_dir, paths.scores_dir):
            if folder.is_dir():
                shutil.rmtree(folder)
    raise OutputError(
        f"{changed[0][1]}: it changed during this run (after the prepare step), so no output was "
        "written; re-run (the preparation is redone)"
    )
