"""The automation files a site deploys are valid Prefect automations and match what they say."""

from __future__ import annotations

import uuid
from pathlib import Path

import yaml
from prefect.events.schemas.automations import AutomationCore

AUTOMATIONS = Path(__file__).resolve().parents[3] / "deployments" / "automations"


def _load(name: str, block_id: str | None = None) -> list[AutomationCore]:
    text = (AUTOMATIONS / name).read_text()
    if block_id is not None:
        text = text.replace("{{ block_document_id }}", block_id)
    return [AutomationCore.model_validate(a) for a in yaml.safe_load(text)["automations"]]


def test_lost_runs_are_crashed_and_predict_reruns_once() -> None:
    lost, rerun = _load("runs.yaml")
    assert lost.trigger.posture == "Proactive" and lost.trigger.after == {"prefect.flow-run.heartbeat"}
    assert lost.trigger.within.total_seconds() == 120  # 4 heartbeats of the pool templates (30 s)
    assert lost.actions[0].type == "change-flow-run-state" and lost.actions[0].state.value == "CRASHED"
    assert rerun.trigger.expect == {"prefect.flow-run.Crashed"}
    assert rerun.trigger.match.root["prefect.run-count"] == "1"
    assert rerun.trigger.match_related.root["prefect.resource.name"] == "predict"
    assert rerun.actions[0].state.value == "SCHEDULED"


def test_failed_night_notifies_the_chosen_block() -> None:
    block = str(uuid.uuid4())
    (notify,) = _load("nightly-failed-notify.yaml", block)
    assert notify.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert notify.trigger.match_related.root["prefect.resource.name"] == "virnucpro-nightly"
    assert notify.actions[0].type == "send-notification" and str(notify.actions[0].block_document_id) == block
