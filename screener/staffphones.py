"""The staff phones' side of the live agent: outside calls, last callers and feature codes.

Three ``UserEvent``s from ``[from-staff]`` and ``[route-staff]`` (docs/architecture.md,
"Staff phones"); each carries the staff channel's snapshot, whose ``Channel`` names the phone
(``PJSIP/staff1-0000002a`` is endpoint ``staff1``):

- ``StaffDialled`` (``Number``: the digits after the outside prefix): the number is learned as
  a ``called`` allow entry (:func:`screener.learning.learn_called`);
- ``StaffRang`` (``Call``: the caller's Uniqueid), raised on each staff channel ``route-staff``
  dials, answered or not: that call is the phone's last caller, kept in the database;
- ``StaffFeature`` (``Code``, ``Number``): a feature code; the change is decided by
  :mod:`screener.featurecodes` inside its own transaction, and the staff channel is Redirected
  to ``staff-feature-result,<result>,1``, where the phone hears the confirmation.

Every write goes through the service's :class:`~screener.writer.Writer`, so a database held by
another process delays a change but never loses one that was confirmed. What the phone hears is
true: a feature code's change is made only while the phone still waits for its answer
(:class:`~screener.featurecodes.Timed`, the dialplan's ``FEATURE_WAIT`` less a margin); once a
held lock has kept it past that, it changes nothing, and the "failed" the phone hears (from us,
or from the dialplan's own timeout) is so. Nothing here needs more than the
screener's AMI rights: it reads ``user`` events and sends ``Redirect`` (``call``).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Mapping

import structlog

from screener.ami import AMIClient, Event
from screener.config import Config
from screener.dialplan import StaffChoice
from screener.errors import AMIError
from screener.events import NumberCalled, StaffChanged, StaffChose
from screener.featurecodes import Code, Result, Rule, Timed, parse_code
from screener.journal import CalledRule
from screener.numbers import Caller, Category, normalize
from screener.policy import Entry
from screener.store import (
    FeatureResult,
    LearnCalled,
    SetLastCaller,
    SetStaffChoice,
    StaffChoiceResult,
    StaffFeature,
)
from screener.writer import Writer

log = structlog.get_logger("screener.staffphones")

# A PJSIP channel name: the endpoint, then "-" and Asterisk's hex counter.
_CHANNEL = re.compile(r"PJSIP/([A-Za-z0-9_.]{1,40})-[0-9a-fA-F]{1,16}")
_CALL_ID = re.compile(r"[0-9A-Za-z._-]{1,80}")
# The dialplan context each event is raised from: an event from anywhere else is not ours.
CONTEXTS = {
    "staffdialled": "staff-outside",
    "staffrang": "staff-rang",
    "stafffeature": "staff-feature",
    "screenstaffchoice": "screen-staff-choice",
}
RESULT_CONTEXT = "staff-feature-result"
# How long the phone waits for the answer (the dialplan's FEATURE_WAIT, which it sends in the
# event's Wait header; this stands in for an event without one), and how much of that is kept
# for the Redirect to reach the phone: a change is made only while the phone still waits.
FEATURE_WAIT = 5.0
FEATURE_MARGIN = 0.5
# Longest digit string taken as a number (E.164 has at most 15 digits, plus a trunk prefix).
MAX_DIGITS = 20


def endpoint_of(event: Event) -> str | None:
    """The staff endpoint whose channel raised ``event``, or None if it is not one we trust.

    None when ``Channel``, ``Uniqueid`` or ``Context`` is repeated (only caller data could
    repeat them), when the channel is not a PJSIP one, or when the event was raised outside the
    context that raises it.
    """
    if {"channel", "uniqueid", "context"} & event.duplicated:
        return None
    kind = (event.get("UserEvent") or "").lower()
    if (event.get("Context") or "") != CONTEXTS.get(kind):
        return None
    match = _CHANNEL.fullmatch(event.get("Channel") or "")
    return match.group(1) if match else None


def digits_of(event: Event, header: str = "Number") -> str | None:
    """The digits a header carries (the dialplan filters them already), or None."""
    if header.lower() in event.duplicated:
        return None
    text = (event.get(header) or "").strip()
    return text if text.isdigit() and len(text) <= MAX_DIGITS else None


def _asterisk_time(event: Event) -> float | None:
    try:
        return float(event.get("Timestamp") or "")
    except ValueError:
        return None


def _wait_of(event: Event) -> float:
    """The phone's wait for an answer as the dialplan sends it (a forged or odd one: ours)."""
    if "wait" in event.duplicated:
        return FEATURE_WAIT
    try:
        wait = float(event.get("Wait") or "")
    except ValueError:
        return FEATURE_WAIT
    return wait if 1.0 <= wait <= 60.0 else FEATURE_WAIT


class StaffPhones:
    """Handlers for the staff phones' events; the service maps them by UserEvent name."""

    def __init__(
        self,
        config: Config,
        writer: Writer,
        ami: AMIClient,
        publish: Callable[[NumberCalled | StaffChanged | StaffChose], None],
        recent: Mapping[str, Caller],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.writer = writer
        self.ami = ami
        self.publish = publish
        self.recent = recent
        self.clock = clock

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def on_dialled(self, event: Event) -> None:
        """A staff phone called out: learn the number as ``called``."""
        endpoint = endpoint_of(event)
        digits = digits_of(event)
        if endpoint is None or digits is None:
            log.warning("outside call event ignored", channel=(event.get("Channel") or "")[:60])
            return
        caller = normalize(digits, self.config.region)
        learned: Entry | None = None
        if caller.e164 is not None:
            now = self._now()
            # learning.called_rule as data, so that the journal can keep it.
            rule = CalledRule(caller, endpoint, self.config.policy, now)
            result = await self.writer.submit(LearnCalled(caller.e164, now, rule))
            learned = result if isinstance(result, Entry) else None
        self.publish(NumberCalled(endpoint, caller.e164, learned is not None))
        log.info(
            "staff called out",
            endpoint=endpoint,
            number=caller.display,
            category=caller.category.value,
            learned=learned.describe() if learned else None,
        )

    async def on_rang(self, event: Event) -> None:
        """``route-staff`` rang a staff phone for a call: the phone's last caller is that call."""
        endpoint = endpoint_of(event)
        call_id = (event.get("Call") or "").strip()
        if endpoint is None or "call" in event.duplicated or not _CALL_ID.fullmatch(call_id):
            log.warning("staff ringing event ignored", channel=(event.get("Channel") or "")[:60])
            return
        caller = self.recent.get(call_id)
        # Queued, not awaited: the write is in order behind the call's own record, which the
        # store reads when the service no longer remembers the caller (a restart).
        self.writer.queue(
            SetLastCaller(
                endpoint,
                call_id,
                self._now(),
                caller.e164 if caller else None,
                caller.raw if caller else None,
                caller.category.value if caller else None,
            )
        )
        log.info("staff phone rang", endpoint=endpoint, call_id=call_id)

    async def on_feature(self, event: Event) -> None:
        """A feature code: change the list (one transaction), then tell the phone how it went."""
        endpoint = endpoint_of(event)
        code = parse_code(event.get("Code")) if "code" not in event.duplicated else None
        channel = event.get("Uniqueid") or ""
        if endpoint is None or code is None or not channel:
            log.warning("feature code event ignored", channel=(event.get("Channel") or "")[:60])
            return
        number = None
        if code in (Code.BLOCK, Code.UNBLOCK):
            digits = digits_of(event)
            keyed = normalize(digits, self.config.region) if digits else None
            if keyed is not None and keyed.category is not Category.INVALID:
                number = keyed.e164
        now = self._now()
        # Made only while the phone still waits for the answer (less a margin for the Redirect
        # to reach it): a change made later would contradict the "failed" the phone heard. The
        # wait is counted from the event's arrival on our own clock, not from Asterisk's
        # Timestamp: on another host a clock a few seconds off would make every code fail (or
        # change the list after the phone said "failed"); the event's way here is milliseconds,
        # well inside the margin.
        not_after = self.clock() + _wait_of(event)
        pressed = _asterisk_time(event)  # only for the key-to-change figure logged below
        rule = Timed(Rule(code, endpoint, now, number), not_after - FEATURE_MARGIN)
        done = await self.writer.submit(StaffFeature(endpoint, code.value, now, rule))
        changed_at = self.clock()
        if isinstance(done, FeatureResult):
            plan = done.plan
            result = Result(plan.result)
            changed = plan.apply
            kind = str(plan.after.kind) if plan.after is not None else None
            target = plan.number
        else:  # the writer gave up on it (logged there)
            result, changed, kind, target = Result.FAILED, False, None, number
        key_ms = (changed_at - pressed) * 1000.0 if pressed is not None else None
        try:
            await self.ami.send(
                {
                    "Action": "Redirect",
                    "Channel": channel,
                    "Context": RESULT_CONTEXT,
                    "Exten": result.value,
                    "Priority": "1",
                }
            )
        except (AMIError, ValueError) as exc:
            # The phone hears the dialplan's "failed" when its wait ends; the change stands.
            log.warning("could not tell the staff phone", endpoint=endpoint, error=str(exc))
        self.publish(
            StaffChanged(endpoint, code.value, result.value, target, changed, kind, key_ms)
        )
        log.info(
            "staff feature",
            endpoint=endpoint,
            code=code.value,
            result=result.value,
            number=target,
            changed=changed,
            changed_at=changed_at,
            key_to_change_ms=round(key_ms, 3) if key_ms is not None else None,
        )

    async def on_choice(self, event: Event) -> None:
        """A staff phone chose what happens to a caller (announce screening's keys, or *0 during
        the call): store the choice on the call, and list the number when it said so."""
        chosen = StaffChoice.from_event(event)
        # The one staff event that can list another call's caller: trusted as strictly as the
        # others (its context, a PJSIP channel, nothing repeated), and only when the phone it
        # names is the one whose channel raised it.
        if chosen is None or endpoint_of(event) != chosen.staff:
            log.warning(
                "staff choice ignored: missing, repeated or unknown headers",
                choice=(event.get("Choice") or "")[:20],
                channel=(event.get("Channel") or "")[:60],
            )
            return
        now = self._now()
        caller = self.recent.get(chosen.call_id)
        result = await self.writer.submit(
            SetStaffChoice(
                chosen.call_id,
                chosen.choice,
                chosen.staff,
                now,
                chosen.kind,
                caller.e164 if caller else None,
            )
        )
        done = result if isinstance(result, StaffChoiceResult) else StaffChoiceResult(False)
        entry = done.entry
        self.publish(
            StaffChose(
                chosen.call_id,
                chosen.choice,
                chosen.staff,
                str(entry.kind) if entry else None,
                done.found,
            )
        )
        if chosen.kind is not None and entry is None:
            # A withheld (or invalid) caller has no number to put on a list.
            log.warning(
                "staff choice: the caller has no number to list",
                call_id=chosen.call_id,
                choice=chosen.choice,
                staff=chosen.staff,
            )
        log.info(
            "staff choice",
            call_id=chosen.call_id,
            choice=chosen.choice,
            staff=chosen.staff,
            recorded=done.found,
            entry=entry.describe() if entry else None,
        )


__all__ = ["CONTEXTS", "RESULT_CONTEXT", "StaffPhones", "digits_of", "endpoint_of"]
