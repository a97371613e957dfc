"""The DNABERT tokenizer equals what the original's AutoTokenizer gives."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from virnucpro.errors import ModelLoadError
from virnucpro.models.reference.dnabert_tokenizer import DnaTokenizer, tokenizer_path

SEQUENCES = ["ACGTACGGTTAC" * 40, "GATTACA", "", "ACGNNNRYacgt", "N" * 10, "TTGACC" * 83 + "A"]


def test_equals_transformers_auto_tokenizer(
    demo_dnabert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(demo_dnabert_dir))
    ours = DnaTokenizer.from_model_dir(demo_dnabert_dir)
    expected = [reference(s, return_tensors="pt")["input_ids"][0].tolist() for s in SEQUENCES]
    assert ours.encode_batch(SEQUENCES) == expected
    assert [ours.encode(s) for s in SEQUENCES] == expected


def test_special_ids() -> None:
    tokenizer = DnaTokenizer.from_model_dir(Path(os.devnull))
    ids = (tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.mask_id)
    assert ids == (0, 1, 2, 3, 4)
    assert tokenizer.vocab_size == 4096
    assert tokenizer.encode("") == [1, 2]


def test_packaged_copy_is_used_when_the_directory_has_none(tmp_path: Path) -> None:
    path, packaged = tokenizer_path(tmp_path)
    assert packaged and path.name == "dnabert_tokenizer.json"
    assert DnaTokenizer.from_model_dir(tmp_path).source == path


def test_tokenizer_without_the_template_is_refused(demo_dnabert_dir: Path, tmp_path: Path) -> None:
    raw = json.loads((demo_dnabert_dir / "tokenizer.json").read_text())
    raw["post_processor"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match=r"does not add \[CLS\] ... \[SEP\]"):
        DnaTokenizer.from_model_dir(tmp_path)


def test_unreadable_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read this tokenizer file"):
        DnaTokenizer.from_model_dir(tmp_path)


def test_batch_encoding_equals_one_by_one_on_random_dna() -> None:
    # encode_batch takes tokenizers' fast batch path where it exists; the ids must not change.
    import random

    rng = random.Random(3)
    sequences = [
        "".join(rng.choice("ACGTACGTACGTNacgt") for _ in range(rng.randrange(0, 600)))
        for _ in range(300)
    ]
    tokenizer = DnaTokenizer.from_model_dir(Path(os.devnull))
    assert tokenizer.encode_batch(sequences) == [tokenizer.encode(s) for s in sequences]
