"""Metrics and health: names and labels as the issue lists them, fed by events; /metrics and
/healthz served over real HTTP by start_observers on a real SQLite file."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from screener import events
from screener.config import Config, NotifyConfig, WebhookConfig
from screener.metrics import Health, Metrics
from screener.observers import start_observers
from screener.policy import SOURCE_LEARNED, Entry, ListKind
from screener.store import Store
from tests.notifyservers import Hooks, wait_for, webhook_receiver

# The issue's list: metric family -> its labels (families without the _total suffix).
EXPECTED = {
    "screener_calls": {"route", "category", "fallback"},
    "screener_decision_seconds": set(),
    "screener_redirect_seconds": set(),
    "screener_challenge_outcomes": {"outcome"},
    "screener_voicemails": {"status"},
    "screener_ami_connected": set(),
    "screener_ami_reconnects": set(),
    "screener_db_write_errors": set(),
    "screener_list_entries": {"kind", "source"},
    "screener_notifications": {"channel", "result"},
}
TYPES = {
    "screener_decision_seconds": "histogram",
    "screener_redirect_seconds": "histogram",
    "screener_ami_connected": "gauge",
    "screener_list_entries": "gauge",
}


@dataclasses.dataclass
class FakeAmi:
    """The two things observers read of the AMI client."""

    connected: bool = True
    reconnects: int = 0


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Sample values of one sample name (e.g. screener_calls_total) by their sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                found[tuple(sorted(s.labels.items()))] = s.value
    return found


def feed(metrics: Metrics) -> None:
    for event in (
        events.CallScreened("c1", "+81312345678", "fixed_line", "staff", "allow", (), 1.2),
        events.CallScreened("c2", "+81120121852", "toll_free", "challenge", "category", (), 0.9),
        events.Fallback("c3", "staff", "no decision within the hold time"),
        events.ChallengeOutcome("c2", "fail", "+81120121852", True),
        events.VoicemailLeft("c2", "SUCCESS", True),
        events.VoicemailLeft("c4", "WHATEVER", True),
        events.EntryLearned("+81120121852", "block", "", None, True, 3),
        events.DBWriteFailed("disk I/O error", 3),
    ):
        metrics.on_event(event)
    metrics.count_notification("webhook", "delivered")


@pytest.mark.parametrize("with_ami_client", [True, False], ids=["ami-client", "ami-events"])
def test_metric_names_and_labels_match_the_issue(with_ami_client: bool) -> None:
    """Every metric of the issue's list is exposed with exactly its labels and the right type,
    and the process metrics are there too."""
    metrics = Metrics(FakeAmi() if with_ami_client else None)
    feed(metrics)
    metrics.on_event(events.AMIConnected("127.0.0.1:5038"))
    metrics.set_list_counts({("block", "manual"): 2})
    found = families(metrics.render().decode())
    for name, labels in EXPECTED.items():
        assert name in found, name
        kind = TYPES.get(name, "counter")
        assert found[name].type == kind, name
        for sample in found[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
    assert "process_resident_memory_bytes" in found
    assert "python_info" in found


def test_events_are_counted_under_their_labels() -> None:
    """Calls by route/category/fallback, outcomes, voicemail (unknown status as other), errors."""
    metrics = Metrics(FakeAmi())
    feed(metrics)
    text = metrics.render().decode()
    assert samples(text, "screener_calls_total") == {
        (("category", "fixed_line"), ("fallback", "false"), ("route", "staff")): 1.0,
        (("category", "toll_free"), ("fallback", "false"), ("route", "challenge")): 1.0,
        (("category", "unknown"), ("fallback", "true"), ("route", "staff")): 1.0,
    }
    assert samples(text, "screener_challenge_outcomes_total") == {(("outcome", "fail"),): 1.0}
    assert samples(text, "screener_voicemails_total") == {
        (("status", "SUCCESS"),): 1.0,
        (("status", "other"),): 1.0,
    }
    assert samples(text, "screener_db_write_errors_total") == {(): 3.0}
    assert samples(text, "screener_decision_seconds_count") == {(): 2.0}
    assert samples(text, "screener_decision_seconds_sum") == {(): pytest.approx(0.0021)}
    assert samples(text, "screener_redirect_seconds_count") == {(): 0.0}  # no redirect_ms yet
    assert samples(text, "screener_notifications_total") == {
        (("channel", "webhook"), ("result", "delivered")): 1.0
    }


def test_ami_state_is_read_from_the_client_at_scrape_time() -> None:
    """screener_ami_connected follows the client's state; reconnects its counter."""
    ami = FakeAmi(connected=True, reconnects=2)
    metrics = Metrics(ami)
    assert samples(metrics.render().decode(), "screener_ami_connected") == {(): 1.0}
    ami.connected, ami.reconnects = False, 3
    text = metrics.render().decode()
    assert samples(text, "screener_ami_connected") == {(): 0.0}
    assert samples(text, "screener_ami_reconnects_total") == {(): 3.0}


def test_ami_state_from_events_without_a_client() -> None:
    """Without a client, AMIConnected/AMIDisconnected events drive the same two metrics."""
    metrics = Metrics()
    metrics.on_event(events.AMIConnected("127.0.0.1:5038"))
    metrics.on_event(events.AMIDisconnected("127.0.0.1:5038"))
    metrics.on_event(events.AMIConnected("127.0.0.1:5038"))
    text = metrics.render().decode()
    assert samples(text, "screener_ami_connected") == {(): 1.0}
    assert samples(text, "screener_ami_reconnects_total") == {(): 1.0}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "screener.db"
    async with Store.open(path) as store:
        now = dt.datetime.now(dt.UTC)
        for n in range(3):
            await store.add(Entry(ListKind.BLOCK, f"+8131234567{n}"))
        await store.add(Entry(ListKind.ALLOW, "+81312340000"))
        await store.learn(Entry(ListKind.BLOCK, "+81120121852", source=SOURCE_LEARNED), now)
    yield path


async def test_list_entries_counted_by_kind_and_source(db: Path) -> None:
    """screener_list_entries comes from the store's count; a pair that vanished reads 0."""
    metrics = Metrics(FakeAmi())
    async with Store.open(db) as store:
        metrics.set_list_counts(await store.count_entries_by())
        text = metrics.render().decode()
        assert samples(text, "screener_list_entries") == {
            (("kind", "allow"), ("source", "manual")): 1.0,
            (("kind", "block"), ("source", "learned")): 1.0,
            (("kind", "block"), ("source", "manual")): 3.0,
        }
        await store.forget_learned()
        metrics.set_list_counts(await store.count_entries_by())
    text = metrics.render().decode()
    assert samples(text, "screener_list_entries")[(("kind", "block"), ("source", "learned"))] == 0


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return reply.status, await reply.text()


async def test_observers_serve_metrics_and_healthz(db: Path) -> None:
    """/metrics shows the events published on the hub; /healthz is 200 while AMI is logged in
    and 503 naming AMI when it is not."""
    ami, hub = FakeAmi(), events.Hub()
    config = Config(db_path=db, metrics_listen="127.0.0.1:0")
    async with start_observers(config, hub, ami=ami) as obs:
        assert obs.address is not None
        base = f"http://{obs.address}"
        hub.publish(
            events.CallScreened("c1", "+81120121852", "toll_free", "voicemail", "block", (), 1.0)
        )
        await wait_for(lambda: obs.health.checked_at is not None)
        await wait_for(lambda: b"screener_list_entries{" in obs.metrics.render())
        status, text = await get(base + "/metrics")
        assert status == 200
        assert samples(text, "screener_calls_total") == {
            (("category", "toll_free"), ("fallback", "false"), ("route", "voicemail")): 1.0
        }
        assert samples(text, "screener_list_entries")[(("kind", "block"), ("source", "manual"))]
        status, text = await get(base + "/healthz")
        assert (status, text) == (
            200,
            '{"status": "ok", "ami": "logged in", "database": "writable"}',
        )
        ami.connected = False
        status, text = await get(base + "/healthz")
        assert status == 503 and "ami: not logged in" in text
        status, text = await get(base + "/metrics")
        assert samples(text, "screener_ami_connected") == {(): 0.0}
    # Unsubscribed and stopped when the block ends.
    hub.publish(events.CallScreened("c2", "+81901234567", "mobile", "staff", "default", (), 1.0))
    assert samples(obs.metrics.render().decode(), "screener_calls_total") == {
        (("category", "toll_free"), ("fallback", "false"), ("route", "voicemail")): 1.0
    }


async def test_health_names_a_database_that_refuses_writes(db: Path) -> None:
    """A database another process holds locked makes /healthz's body name the database."""
    health = Health(ami=FakeAmi())
    async with Store.open(db, busy_timeout=0.1) as store:
        await health.probe(store)
        assert health.report()[0]
        other = sqlite3.connect(db, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            await health.probe(store)
        finally:
            other.execute("ROLLBACK")
            other.close()
        ok, body = health.report()
        assert not ok and body["database"] == "failing"
        assert any(p.startswith("database:") and "locked" in p for p in body["problems"])
        await health.probe(store)
        assert health.report()[0]


async def test_a_busy_port_never_stops_the_observers(db: Path) -> None:
    """A metrics port already in use is logged; the rest runs (screening must go on)."""
    hub = events.Hub()
    async with start_observers(Config(db_path=db, metrics_listen="127.0.0.1:0"), hub) as first:
        assert first.address is not None
        clash = Config(db_path=db, metrics_listen=first.address)
        async with start_observers(clash, hub) as second:
            assert second.address is None


async def test_ami_down_too_long_is_notified_degraded_then_recovered(
    db: Path, tmp_path: Path
) -> None:
    """AMI down past degraded_after writes a degraded outbox row, delivered by the webhook; its
    return writes recovered; a voicemail row written meanwhile is delivered too."""
    ami, hub, hooks = FakeAmi(), events.Hub(), Hooks("s")
    async with webhook_receiver(hooks) as url:
        notify = NotifyConfig(
            webhook=WebhookConfig(url=url, secret="s"), poll_interval=0.05, degraded_after=0.2
        )
        config = Config(db_path=db, metrics_listen="", notify=notify)
        async with start_observers(config, hub, ami=ami, watch_interval=0.05) as obs:
            ami.connected = False
            await wait_for(lambda: [p["topic"] for p in hooks.posts] == ["degraded"], 10)
            ami.connected = True
            await wait_for(
                lambda: [p["topic"] for p in hooks.posts] == ["degraded", "recovered"], 10
            )
            async with Store.open(db) as store:
                await store.add_outbox(
                    "voicemail", "voicemail:v1", {"call_id": "v1"}, dt.datetime.now(dt.UTC)
                )
            hub.publish(events.VoicemailLeft("v1", "SUCCESS", True))  # wakes the sender
            await wait_for(lambda: len(hooks.posts) == 3, 10)
            # The receiver holds the post before the sender has its answer and has recorded
            # the delivery; the counter follows that record.
            delivered = {(("channel", "webhook"), ("result", "delivered")): 3.0}
            await wait_for(
                lambda: (
                    samples(obs.metrics.render().decode(), "screener_notifications_total")
                    == delivered
                ),
                10,
            )
            text = obs.metrics.render().decode()
    assert hooks.posts[0]["data"]["component"] == "ami"
    assert hooks.posts[1]["key"] == hooks.posts[0]["key"].replace("degraded", "recovered")
    assert hooks.posts[2]["key"] == "voicemail:v1"
    assert samples(text, "screener_notifications_total") == delivered


async def test_db_write_error_event_is_notified(db: Path) -> None:
    """A DBWriteFailed counts as database trouble: degraded (after degraded_after), then
    recovered once the next probe finds the database writable."""
    hub = events.Hub()
    notify = NotifyConfig(degraded_after=0)
    config = Config(db_path=db, metrics_listen="", notify=notify)
    async with start_observers(config, hub, ami=FakeAmi(), health_interval=0.05) as obs:
        hub.publish(events.DBWriteFailed("disk I/O error", 1))
        await obs.watcher.check()
        await obs.health.probe(obs.sender.store)
        await obs.watcher.check()
        await asyncio.sleep(0)
    async with Store.open(db) as store:
        rows = await store.due_deliveries(
            "x", since=dt.datetime(2000, 1, 1, tzinfo=dt.UTC), now=dt.datetime.now(dt.UTC)
        )
    assert [(r.topic, r.payload.get("detail")) for r in rows] == [
        ("degraded", "disk I/O error"),
        ("recovered", None),
    ]


def test_grafana_dashboard_uses_only_metrics_that_exist() -> None:
    """docs/grafana-dashboard.json queries only series /metrics exposes, and has the panels the
    issue asks for (calls by route, fallback rate, decision latency percentiles, AMI)."""
    path = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    metrics = Metrics(FakeAmi())
    feed(metrics)
    metrics.set_list_counts({("block", "manual"): 1})
    exposed = {
        s.name for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples
    }
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b((?:screener|process)_[a-z_]+)\{", e)}
    assert used and used <= exposed, used - exposed
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Calls by route", "Fallback rate", "Decision latency", "AMI connected"} <= titles
    latency = next(p for p in dashboard["panels"] if p["title"] == "Decision latency")
    assert [t["legendFormat"] for t in latency["targets"]] == ["p50", "p95", "p99"]
