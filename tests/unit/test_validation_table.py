"""validate-precision's table: model rows for embeddings, a pipeline row for scores and labels."""

from __future__ import annotations

from virnucpro.validation import ModelAgreement, PrecisionAgreement, ValidationResult, format_table


def _result() -> ValidationResult:
    row = PrecisionAgreement(
        precision="bf16",
        models=(ModelAgreement("DNABERT-S", 0.99941, 0.99987, 3.1e-2),
                ModelAgreement("ESM-2", 0.99998, 0.999995, 1.0e-2)),
        max_abs_score_diff=2.0e-3, frame_label_agreement=1.0, chunk_label_agreement=1 - 4 / 206,
        frames_differing=0, chunks_differing=4, seconds=1.0,
    )
    return ValidationResult("s.fa", "cpu", 257, 206, 500, (row,), 3.0, ["sample: the first 2000 frames"])


def test_label_agreement_is_on_the_pipeline_row_not_a_model_row() -> None:
    lines = format_table(_result()).splitlines()
    dnabert = next(line for line in lines if line.startswith("bf16      DNABERT-S"))
    esm = next(line for line in lines if line.startswith("bf16      ESM-2"))
    pipeline = next(line for line in lines if line.startswith("bf16      pipeline"))
    assert "%" not in dnabert and "%" not in esm
    assert dnabert.split()[2:] == ["0.999410", "0.999870", "3.10e-02"]
    assert pipeline.split()[2:] == ["2.00e-03", "100.00%", "(0/257", "differ)", "98.06%", "(4/206", "differ)"]


def test_the_notes_explain_the_chunk_rule() -> None:
    text = " ".join(format_table(_result()).split())
    assert "highest P(virus) over the chunk's frames >= their highest P(others)" in text
    assert "it can flip while every frame keeps its label" in text
    assert text.endswith("sample: the first 2000 frames")
