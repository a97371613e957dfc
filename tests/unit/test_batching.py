"""Batch packing: every index once, the budget kept, equal-length runs in uniform batches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virnucpro.pipeline.batching import is_uniform, pack_batches, padded_tokens


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), max_size=120),
    budget=st.integers(1, 400),
    fraction=st.one_of(st.none(), st.floats(0.05, 1.0)),
    max_size=st.one_of(st.none(), st.integers(1, 20)),
    padding=st.one_of(st.none(), st.floats(0.0, 0.5)),
)
def test_every_index_once_and_budget_kept(lengths, budget, fraction, max_size, padding) -> None:  # type: ignore[no-untyped-def]
    batches = pack_batches(lengths, budget, max_batch_size=max_size, uniform_fraction=fraction,
                           max_padding=padding)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in batches:
        assert batch
        assert len(batch) == 1 or padded_tokens(lengths, batch) <= budget
        if max_size is not None:
            assert len(batch) <= max_size


def test_uniform_runs_get_their_own_batches() -> None:
    # a realistic shard: mostly 168 tokens (166 aa), a few longer and a tail of shorter ones
    lengths = [170] * 3 + [168] * 500 + [167] * 40 + [150, 120, 101, 90] * 5
    budget = 168 * 100
    plain = pack_batches(lengths, budget)
    uniform = pack_batches(lengths, budget, uniform_fraction=0.25)
    assert sum(is_uniform(lengths, b) for b in uniform) > sum(is_uniform(lengths, b) for b in plain)
    runs_168 = [b for b in uniform if {lengths[i] for i in b} == {168}]
    assert sum(len(b) for b in runs_168) == 500  # every 168 is in a 168-only batch
    assert all(len(b) == 100 for b in runs_168)
    # the first batch is still the longest sequences (out-of-memory shows up at once)
    assert max(lengths[i] for i in uniform[0]) == 170


def test_a_run_smaller_than_a_batch_is_still_its_own_batch() -> None:
    # the bug this guards against: 589 sequences of 168 tokens in a 131072-token budget
    lengths = [168] * 589 + [160, 150, 101] * 30
    batches = pack_batches(lengths, 131072, uniform_fraction=0.25)
    assert batches[0] == list(range(589))


def test_max_padding_splits_spread_lengths() -> None:
    lengths = list(range(130, 90, -1)) * 20  # DNABERT-like spread of token counts
    budget = 131072
    one = pack_batches(lengths, budget)
    assert len(one) == 1
    split = pack_batches(lengths, budget, max_padding=0.05)
    assert len(split) > 1

    def waste(batches: list[list[int]]) -> float:
        return 1 - sum(lengths) / sum(padded_tokens(lengths, b) for b in batches)

    assert waste(one) > 0.14 and waste(split) < 0.07
    for batch in split[:-1]:  # each closed batch holds at least a quarter of the budget
        assert padded_tokens(lengths, batch) >= budget / 4


def test_small_runs_are_packed_as_before() -> None:
    lengths = [10, 9, 8, 7, 6, 5]
    assert pack_batches(lengths, 30, uniform_fraction=0.9) == pack_batches(lengths, 30)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        pack_batches([1, 2], 0)
    with pytest.raises(ValueError):
        pack_batches([1, 2], 10, uniform_fraction=0.0)
    with pytest.raises(ValueError):
        pack_batches([1, 2], 10, max_padding=1.0)
    assert pack_batches([], 10, uniform_fraction=0.5) == []
