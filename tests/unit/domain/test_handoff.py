"""virus.fna and provirus.fna from the input FASTA, the calls and the regions."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from virnucpro.domain.fasta import read_fasta
from virnucpro.domain.handoff import HandoffCounts, provirus_id, write_handoff_fasta
from virnucpro.domain.regions import Region, RegionKind
from virnucpro.errors import InputError

PHAGE = "ACGT" * 40  # 160 bp
HOST = "".join("ACGT"[(i * 7) % 4] + "acgt"[(i * 3) % 4] for i in range(150))  # 300 bp, mixed case


def _input(tmp_path: Path, compress: bool = False) -> Path:
    text = (
        f">phage_1 Escherichia phage T4, partial\n{PHAGE[:70]}\n{PHAGE[70:]}\n"
        f">host_1\n{HOST}\n"
        ">other  some   spaces\nACGTACGTAC\n"
    )
    path = tmp_path / ("input.fa.gz" if compress else "input.fa")
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    return path


def _region(record_id: str, start: int, end: int, kind: RegionKind = RegionKind.PROVIRUS) -> Region:
    return Region(record_id, start, end, 1, 0.8, 0.9, kind)


@pytest.mark.parametrize("compress", [False, True])
def test_virus_and_provirus_files(tmp_path: Path, compress: bool) -> None:
    counts = write_handoff_fasta(
        _input(tmp_path, compress),
        virus_ids=["phage_1"],
        regions=[
            _region("phage_1", 1, 160, RegionKind.WHOLE),
            _region("host_1", 11, 80),
            _region("host_1", 201, 300),
        ],
        virus_path=tmp_path / "virus.fna",
        provirus_path=tmp_path / "provirus.fna",
    )
    assert counts == HandoffCounts(n_virus=1, n_provirus=2)
    assert (tmp_path / "virus.fna").read_text() == (
        f">phage_1 Escherichia phage T4, partial\n{PHAGE[:60]}\n{PHAGE[60:120]}\n{PHAGE[120:]}\n"
    )
    assert (tmp_path / "provirus.fna").read_text() == (
        f">host_1|provirus_11_80\n{HOST[10:70]}\n{HOST[70:80]}\n"
        f">host_1|provirus_201_300\n{HOST[200:260]}\n{HOST[260:300]}\n"
    )


def test_provirus_records_read_back_as_the_region_bases(tmp_path: Path) -> None:
    write_handoff_fasta(
        _input(tmp_path),
        virus_ids=[],
        regions=[_region("host_1", 1, 300), _region("other", 3, 10)],
        virus_path=tmp_path / "virus.fna",
        provirus_path=tmp_path / "provirus.fna",
    )
    records = list(read_fasta(tmp_path / "provirus.fna"))
    assert [(r.id, r.description, r.sequence) for r in records] == [
        ("host_1|provirus_1_300", "", HOST),
        ("other|provirus_3_10", "some   spaces", "GTACGTAC"),
    ]
    assert (tmp_path / "virus.fna").read_text() == ""


def test_a_path_of_none_skips_that_file(tmp_path: Path) -> None:
    counts = write_handoff_fasta(
        _input(tmp_path),
        virus_ids=["phage_1"],
        regions=[_region("host_1", 11, 80)],
        virus_path=tmp_path / "virus.fna",
        provirus_path=None,
    )
    assert counts == HandoffCounts(1, 0)
    assert not (tmp_path / "provirus.fna").exists()


def test_provirus_id_is_genomads_convention() -> None:
    assert provirus_id("NC_000913.3", 2042582, 2068994) == "NC_000913.3|provirus_2042582_2068994"


def test_a_record_missing_from_the_input_is_an_error_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    with pytest.raises(
        InputError, match=r"input\.fa: has no record 'gone_1', which the run called; the input "
        r"changed since the run"
    ):
        write_handoff_fasta(
            _input(tmp_path),
            virus_ids=["phage_1", "gone_1"],
            regions=[],
            virus_path=tmp_path / "virus.fna",
            provirus_path=tmp_path / "provirus.fna",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.fa"]


def test_a_region_past_the_record_end_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"record 'host_1' has 300 bp, but the run found a region "
                       r"at 201-301"):
        write_handoff_fasta(
            _input(tmp_path),
            virus_ids=[],
            regions=[_region("host_1", 201, 301)],
            virus_path=None,
            provirus_path=tmp_path / "provirus.fna",
        )
    assert not (tmp_path / "provirus.fna").exists()


@pytest.mark.parametrize("compress", [False, True])
def test_the_recorded_checksum_reads_the_input_by_blocks_and_writes_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compress: bool
) -> None:
    import virnucpro.domain.fasta_reread as fasta_reread
    from virnucpro.domain.checksums import sha256_file

    source = _input(tmp_path, compress)
    written = {}
    for name, sha in (("general", None), ("blocks", sha256_file(source))):
        if sha is not None:  # the unchanged file never reaches the general reader
            monkeypatch.setattr(fasta_reread, "read_fasta", None)
        out = tmp_path / name
        out.mkdir()
        write_handoff_fasta(
            source, virus_ids=["phage_1", "other"], regions=[_region("host_1", 11, 80)],
            virus_path=out / "virus.fna", provirus_path=out / "provirus.fna", input_sha256=sha,
        )
        written[name] = [(out / f).read_bytes() for f in ("virus.fna", "provirus.fna")]
    assert written["blocks"] == written["general"]
    assert written["blocks"][1].startswith(b">host_1|provirus_11_80\n")


def test_an_input_changed_since_its_checksum_was_recorded_is_read_with_every_check(
    tmp_path: Path,
) -> None:
    from virnucpro.domain.checksums import sha256_file

    source = _input(tmp_path)
    recorded = sha256_file(source)
    source.write_text(">phage_1\nACGT\n")
    with pytest.raises(InputError, match=r"has no record 'host_1', which the run called"):
        write_handoff_fasta(
            source, virus_ids=["phage_1", "host_1"], regions=[],
            virus_path=tmp_path / "virus.fna", provirus_path=None, input_sha256=recorded,
        )
