"""The dialplan's events after a call's route: what the call log learns of it.

``ScreenChallenge`` (the DTMF challenge's outcome, and what it teaches:
:mod:`screener.learning`, inside the outcome's own transaction), ``ScreenVoicemail`` (the caller
reached voicemail, and the message's file), ``ScreenRecording`` (the call's recording started or
finished), ``ScreenFallback`` (the dialplan's fallback took the call) and ``ScreenLate`` (a
Redirect came after the fallback began). Each is written to the call's record through the
service's :class:`~screener.writer.Writer`, in order after the record itself, and published on
the hub. A header carried twice (caller data forging AMI headers) is not trusted where acting on
it would matter: a challenge outcome or a recording event with one is ignored, a voicemail's
status or file and a fallback's route fall back to a safe value.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from screener import learning
from screener.ami import Event
from screener.config import Config
from screener.dialplan import Request
from screener.events import ChallengeOutcome, EntryLearned, Fallback, VoicemailLeft
from screener.journal import OutcomeRule
from screener.notify.voicemail import locate as locate_voicemail
from screener.numbers import Caller, normalize
from screener.policy import Outcome, Route
from screener.recordings import recording_path
from screener.store import (
    CallRecord,
    Learning,
    OutcomeResult,
    RecordFallback,
    RecordLate,
    SetOutcome,
    SetRecording,
    SetVoicemail,
)
from screener.writer import Writer

log = structlog.get_logger("screener.outcomes")


class Counters(Protocol):
    """The counters these handlers keep up to date (the service's Stats has them)."""

    outcomes: int
    learned: int
    voicemails: int
    fallbacks: int


class Outcomes:
    """The handlers of the events that follow a call's route (see the module's docstring)."""

    def __init__(
        self,
        config: Config,
        writer: Writer,
        publish: Callable[[ChallengeOutcome | EntryLearned | Fallback | VoicemailLeft], None],
        stats: Counters,
        recent: Mapping[str, Caller],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.writer = writer
        self.publish = publish
        self.stats = stats
        # The callers of recent calls, as the service screened them (it keeps the mapping).
        self.recent = recent
        self.clock = clock

    async def on_challenge(self, event: Event) -> None:
        """Store a challenge outcome on the call and learn from it (in one transaction)."""
        call_id = event.get("Uniqueid") or ""
        if {"uniqueid", "outcome"} & event.duplicated:
            # A forged outcome would earn a caller a learned allow entry: never act on one.
            log.warning("challenge outcome with repeated headers ignored", call_id=call_id)
            return
        raw = (event.get("Outcome") or "").strip().lower()
        try:
            outcome = Outcome(raw)
        except ValueError:
            log.warning("unknown challenge outcome ignored", call_id=call_id, outcome=raw[:40])
            return
        self.stats.outcomes += 1
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        policy = self.config.policy
        # The caller as screened; if forgotten (a restart), the store reads the call log's
        # verdict inside the outcome's transaction, after the call's own record.
        caller = self.recent.get(call_id)
        teach = Learning(
            e164=caller.e164 if caller else None,
            since=now - dt.timedelta(days=policy.fail_window_days),
            # learning.rule as data, so that the journal can keep it (screener/journal.py).
            rule=OutcomeRule(caller, outcome, policy, now),
        )
        result = await self.writer.submit(SetOutcome(call_id, outcome.value, now, teach))
        done = result if isinstance(result, OutcomeResult) else OutcomeResult(False)
        learned = done.learned
        if learned is not None:
            self.stats.learned += 1
            self.publish(
                EntryLearned(
                    number=learned.number,
                    kind=learned.kind.value,
                    label=learned.label,
                    expires_at=learned.expires_at.timestamp() if learned.expires_at else None,
                    auto_block=learning.is_auto_block(learned),
                    failures=done.failures,
                )
            )
        shown = caller.display if caller else None
        self.publish(ChallengeOutcome(call_id, outcome.value, shown, done.found))
        log.info(
            "challenge outcome",
            call_id=call_id,
            outcome=outcome.value,
            caller=shown,
            recorded=done.found,
            learned=learned.describe() if learned else None,
        )

    async def on_voicemail(self, event: Event) -> None:
        """Note on the call's record that the caller reached voicemail (and whether it left one)."""
        call_id = event.get("Uniqueid") or ""
        # VMSTATUS values are upper-case words; anything else (or a header forged ahead of the
        # real one) is not recorded as if Asterisk had said it.
        status = (event.get("Status") or "").strip()
        if "status" in event.duplicated or not re.fullmatch(r"[A-Z]{1,20}", status):
            status = "UNKNOWN"
        self.stats.voicemails += 1
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        # The message's WAV, for the mail: only a file inside the configured voicemail spool.
        # (A stat of the spool, off the event loop: it may be a network mount.)
        audio = None
        if "file" not in event.duplicated:
            spool = self.config.notify.voicemail_dir
            audio = await asyncio.to_thread(locate_voicemail, event.get("File"), spool)
        found = await self.writer.submit(
            SetVoicemail(call_id, status, now, str(audio) if audio else None)
        )
        self.publish(VoicemailLeft(call_id, status, found is True))
        log.info("voicemail", call_id=call_id, status=status, audio=audio is not None)

    async def on_recording(self, event: Event) -> None:
        """The dialplan started (or finished) recording the call: note the file on its record."""
        call_id = event.get("Uniqueid") or ""
        if not call_id or {"uniqueid", "status", "seconds"} & event.duplicated:
            log.warning("recording event with repeated headers ignored", call_id=call_id)
            return
        status = (event.get("Status") or "").strip().lower()
        seconds_text = (event.get("Seconds") or "").strip()
        seconds = float(seconds_text) if status == "done" and seconds_text.isdigit() else None
        path = str(recording_path(self.config.recording_folder, call_id))
        # Applied in order after the call's own record (queued when it was screened).
        await self.writer.submit(SetRecording(call_id, path, seconds))
        if status == "done":
            # Asterisk wrote it with its own umask; the call is over, so it is ours to close up.
            await asyncio.to_thread(_make_private, path)
        log.info("recording", call_id=call_id, status=status[:20], path=path, seconds=seconds)

    async def on_fallback(self, event: Event) -> None:
        """The dialplan gave up waiting: make sure the call log says so."""
        self.stats.fallbacks += 1
        await self._record_fallback(event, "no decision within the hold time: dialplan fallback")

    async def on_late(self, event: Event) -> None:
        """A Redirect reached a call no longer holding; the dialplan put the call back."""
        call_id = event.get("Uniqueid") or ""
        state = (event.get("State") or "").strip().lower()[:20]
        if state == "routed":
            # A repeated Redirect of a call a decision already routed: the dialplan restarts that
            # route, so the call log's route and fallback flag are still right.
            log.warning("late redirect of a routed call: route kept", call_id=call_id)
            return
        # ScreenLate carries no Route. ScreenFallback, raised before it, recorded the route the
        # fallback took; the write keeps it (it is applied after that one, in order).
        await self._record_fallback(
            event, "decision arrived after the fallback began: ignored", late=True
        )

    async def _record_fallback(self, event: Event, why: str, *, late: bool = False) -> None:
        request = Request.from_event(event)
        if request is None:
            return
        said = (event.get("Route") or "").strip().lower()
        known = {r.value for r in Route}
        # The route the dialplan reports, if it is one; a forged or unknown one is not kept.
        route = said if said in known and "route" not in event.duplicated else "staff"
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        caller = normalize(request.number, self.config.region)
        record = CallRecord(
            call_id=request.call_id,
            received_at=now,
            raw_number=request.number,
            raw_name=request.name,
            e164=caller.e164,
            category=caller.category.value,
            did=request.did,
            route=route,
            rule="fallback",
            reasons=(why,),
            latency_ms=0.0,
            fallback=True,
        )
        await self.writer.submit(RecordLate(record) if late else RecordFallback(record))
        self.publish(Fallback(request.call_id, route, why, caller.category.value))
        log.warning(
            "call took the dialplan fallback", call_id=request.call_id, route=route, why=why
        )


def _make_private(path: str) -> None:
    with contextlib.suppress(OSError):  # not ours (another user's file), or not there
        os.chmod(path, 0o600)
