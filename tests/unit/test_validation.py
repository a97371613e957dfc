"""compare_embeddings: the agreement numbers of ``virnucpro validate-precision``."""

from __future__ import annotations

import numpy as np
import pytest

from virnucpro.validation import compare_embeddings


def test_compare_embeddings() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    b = np.array([[1.0, 0.0], [0.0, -2.0]], dtype=np.float32)
    agreement = compare_embeddings("x", a, b)
    assert agreement.cosine_min == pytest.approx(-1.0) and agreement.max_abs_diff == pytest.approx(4.0)
