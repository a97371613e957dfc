"""A dispatched night never re-dispatches lost work to the slot that just lost it, until that
slot's queue is polled past the staleness window (a dead worker's queue still looks polled)."""

from __future__ import annotations

import logging

import pytest

from virnucpro.orchestration import dispatch
from virnucpro.orchestration.dispatch import DispatchSettings, Slot, _Night


def _night(stale_s: float = 60.0) -> _Night:
    settings = DispatchSettings(lost_after_s=45.0, slot_stale_s=stale_s)  # no client call needed
    return _Night(client=None, night_id="n", params={}, settings=settings,  # type: ignore[arg-type]
                  run_logger=logging.getLogger("test"))


def test_a_slot_that_lost_a_batch_is_not_trusted_within_the_staleness_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(dispatch.time, "monotonic", lambda: clock[0])
    night = _night(stale_s=60.0)
    a, b = Slot("gpu-a"), Slot("gpu-b")
    assert night.trusted([a, b]) == [a, b]
    night.lost_on["gpu-a"] = clock[0]
    clock[0] += 30
    assert night.trusted([a, b]) == [b]
    assert night.trusted([a]) == []  # the lost work waits instead of going to a host that is gone
    clock[0] += 31  # past the window: a queue still polled now has a live worker again
    assert night.trusted([a, b]) == [a, b]


def test_lost_samples_wait_when_only_the_suspect_slot_looks_live(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from virnucpro.orchestration.batch import Sample

    monkeypatch.setattr(dispatch.time, "monotonic", lambda: 500.0)
    night = _night()
    night.lost_on["gpu-a"] = 490.0
    sample = Sample(path=Path("/x/s.fa"), output_dir=Path("/o/s"), sha256="0" * 64)
    night.dispatches[str(sample.path)] = 1
    sent: list = []
    monkeypatch.setattr(night, "spread", lambda samples, slots: sent.append((samples, slots)))
    night.redispatch([sample], [Slot("gpu-a")])
    assert sent == [] and night.waiting == [sample]
    night.redispatch([], [Slot("gpu-a"), Slot("gpu-b")])
    assert sent == [([sample], [Slot("gpu-b")])] and night.waiting == []
