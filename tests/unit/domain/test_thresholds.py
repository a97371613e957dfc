"""The chunk score and the call thresholds: the default is the original rule, presets nest."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virnucpro.domain.thresholds import (
    DEFAULT_THRESHOLDS,
    PRESETS,
    CallThresholds,
    Preset,
    chunk_score,
    resolve_thresholds,
)
from virnucpro.errors import ConfigError

probability = st.floats(0, 1)
float32_probability = st.floats(0, 1, width=32)


def test_chunk_score_of_one_frame_is_its_p_virus() -> None:
    assert chunk_score(0.8, 0.2) == pytest.approx(0.8)
    assert chunk_score(0.5, 0.5) == 0.5
    assert chunk_score(1.0, 0.0) == 1.0 and chunk_score(0.0, 1.0) == 0.0


def test_chunk_score_of_several_frames_is_the_midpoint_of_their_p_virus() -> None:
    # frames with P(virus) 0.94 and 0.45: max P(virus) 0.94, max P(others) 0.55
    assert chunk_score(0.94, 0.55) == pytest.approx((0.94 + 0.45) / 2)


@given(probability, probability)
def test_half_chunk_score_is_exactly_the_original_rule(virus: float, others: float) -> None:
    assert (chunk_score(virus, others) >= 0.5) == (virus >= others)
    assert 0.0 <= chunk_score(virus, others) <= 1.0


def test_chunk_score_is_exact_for_a_tiny_negative_margin() -> None:
    virus = 0.5
    others = math.nextafter(0.5, 1.0)  # others ahead by 2**-53: 0.5 - 2**-54 rounds to 0.5
    assert chunk_score(virus, others) < 0.5
    assert CallThresholds(min_score=0.5).chunk_is_virus(virus, others) is False


@given(float32_probability, float32_probability)
def test_default_chunk_rule_is_the_original(virus: float, others: float) -> None:
    assert DEFAULT_THRESHOLDS.chunk_is_virus(virus, others) == (virus >= others)
    assert CallThresholds(min_score=0.5).chunk_is_virus(virus, others) == (virus >= others)


def test_default_sequence_rule_is_the_majority_with_ties_virus() -> None:
    assert DEFAULT_THRESHOLDS.sequence_is_virus(0.5)
    assert not DEFAULT_THRESHOLDS.sequence_is_virus(0.49)
    assert DEFAULT_THRESHOLDS.is_original and resolve_thresholds("default").is_original
    assert not CallThresholds(min_score=0.5).is_original


def test_min_score_is_a_chunk_score_threshold() -> None:
    thresholds = CallThresholds(min_score=0.7)
    assert thresholds.chunk_is_virus(0.9, 0.5)  # score 0.7: a tie counts
    assert not thresholds.chunk_is_virus(0.9, 0.55)  # score 0.675
    assert thresholds.chunk_threshold == 0.7 and DEFAULT_THRESHOLDS.chunk_threshold == 0.5


@given(float32_probability, float32_probability, st.floats(0, 1))
def test_presets_are_nested(virus: float, others: float, fraction: float) -> None:
    relaxed, default, conservative = (PRESETS[p] for p in Preset)
    assert conservative.chunk_is_virus(virus, others) <= default.chunk_is_virus(virus, others)
    assert default.chunk_is_virus(virus, others) <= relaxed.chunk_is_virus(virus, others)
    assert conservative.sequence_is_virus(fraction) <= default.sequence_is_virus(fraction)
    assert default.sequence_is_virus(fraction) <= relaxed.sequence_is_virus(fraction)


def test_preset_numbers() -> None:
    assert resolve_thresholds("relaxed") == CallThresholds(0.4, 0.25)
    assert resolve_thresholds(Preset.DEFAULT) == CallThresholds(None, 0.5)
    assert resolve_thresholds("conservative") == CallThresholds(0.7, 0.75)


def test_explicit_options_override_the_preset() -> None:
    assert resolve_thresholds("conservative", min_score=0.9) == CallThresholds(0.9, 0.75)
    assert resolve_thresholds("relaxed", min_virus_fraction=0.5) == CallThresholds(0.4, 0.5)
    assert resolve_thresholds(min_score=0.6, min_virus_fraction=1.0) == CallThresholds(0.6, 1.0)


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"preset 'strict'.*relaxed, default, conservative"):
        resolve_thresholds("strict")


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_min_score_out_of_range(value: float) -> None:
    with pytest.raises(ConfigError, match=r"--min-score\) must be a chunk score between 0 and 1"):
        resolve_thresholds(min_score=value)


@pytest.mark.parametrize("value", [0.0, -1.0, 1.01])
def test_min_virus_fraction_out_of_range(value: float) -> None:
    with pytest.raises(ConfigError, match=r"--min-virus-fraction\) must be above 0 and at most 1"):
        CallThresholds(min_virus_fraction=value)


def test_describe_states_the_rule() -> None:
    assert DEFAULT_THRESHOLDS.describe() == (
        "a chunk counts as virus when max P(virus) >= max P(others) (the original rule); a "
        "sequence is virus when at least 0.5 of its scored chunks do"
    )
    assert "chunk score >= 0.7" in PRESETS[Preset.CONSERVATIVE].describe()

