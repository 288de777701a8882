"""What a feature code keyed on a staff phone does to the lists. Pure: no I/O; ``now`` comes in.

The codes follow FreePBX's, so an administrator already knows them (the dialplan names them in
globals; ``asterisk-conf/extensions.conf`` turns the dialled string into one of :class:`Code`):

====  ==============  ============================================================
*30   ``block``       *30 + number: block that number
*31   ``unblock``     *31 + number: remove the exact entry for it (block or allow)
*32   ``blocklast``   block the last outside caller that rang this phone
*33   ``allowlast``   allow that caller (a new customer who was challenged)
*34   ``undo``        take back this phone's last change (again: the one before)
====  ==============  ============================================================

Entries a code stores have source ``staff:<endpoint>`` and no expiry: a staff member's
deliberate key press is the office's word, like a manual entry, and replaces whatever entry the
number had (the change is recorded with the entry before it, so ``*34`` can restore it).
A withheld last caller has no number to list: the phone is told so (``withheld``), since
withheld callers are already challenged or asked to call again with their number shown.

The store runs :class:`Rule` inside the code's own transaction (``StaffFeature``): first
:meth:`Rule.target` (which number, from the last caller or the last change), then
:meth:`Rule.plan` with the entry stored for it.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from screener.policy import SOURCE_STAFF, Entry, ListKind
from screener.store import FeaturePlan, LastCaller, StaffChange


class Code(enum.StrEnum):
    """A feature code, as the dialplan's ``StaffFeature`` event names it."""

    BLOCK = "block"  # *30 + number
    UNBLOCK = "unblock"  # *31 + number
    BLOCK_LAST = "blocklast"  # *32
    ALLOW_LAST = "allowlast"  # *33
    UNDO = "undo"  # *34


class Result(enum.StrEnum):
    """What the staff phone is told; each has a prompt (``PROMPT_<lang>_staff<result>``)."""

    BLOCKED = "blocked"
    ALLOWED = "allowed"
    REMOVED = "removed"
    UNDONE = "undone"
    NOT_LISTED = "notlisted"  # *31 for a number with no exact entry
    NO_CALLER = "nocaller"  # *32/*33 before any outside call rang this phone
    WITHHELD = "withheld"  # *32/*33 when the last caller withheld its number
    INVALID = "invalid"  # *30/*31 with no usable number
    NOTHING = "nothing"  # *34 with nothing left to take back
    CHANGED = "changed"  # *34 when the entry was changed since (by someone else)
    # The change could not be made in time (the database): never from Rule.plan(); Timed's
    # when the phone stopped waiting first, and then nothing was changed.
    FAILED = "failed"


# The default dialled codes (FreePBX's), for the documentation and the tests; the dialplan's
# FEATURE_* globals are where an office changes them.
DEFAULT_DIALLED = {
    Code.BLOCK: "*30",
    Code.UNBLOCK: "*31",
    Code.BLOCK_LAST: "*32",
    Code.ALLOW_LAST: "*33",
    Code.UNDO: "*34",
}


def source_of(endpoint: str) -> str:
    """The ``source`` a staff endpoint's entries carry: ``staff:staff1``."""
    return f"{SOURCE_STAFF}{endpoint}"


def _same(a: Entry | None, b: Entry | None) -> bool:
    """Whether the stored entry is still the one a change left (hits do not count)."""
    if a is None or b is None:
        return a is b
    return (a.kind, a.number, a.label, a.source, a.created_at, a.expires_at, a.note) == (
        b.kind,
        b.number,
        b.label,
        b.source,
        b.created_at,
        b.expires_at,
        b.note,
    )


@dataclass(frozen=True, slots=True)
class Rule:
    """One feature code from one endpoint; ``number`` is the E.164 keyed after *30/*31 (None
    when the digits were no usable number)."""

    code: Code
    endpoint: str
    now: dt.datetime
    number: str | None = None

    def target(self, last: LastCaller | None, undo: StaffChange | None) -> str | None:
        """The number whose exact entry this code reads."""
        if self.code in (Code.BLOCK, Code.UNBLOCK):
            return self.number
        if self.code in (Code.BLOCK_LAST, Code.ALLOW_LAST):
            return last.e164 if last is not None else None
        return undo.number if undo is not None else None

    def _entry(self, kind: ListKind, number: str, existing: Entry | None) -> Entry:
        dialled = DEFAULT_DIALLED[self.code]
        verb = "blocked" if kind is ListKind.BLOCK else "allowed"
        return Entry(
            kind=kind,
            number=number,
            label=f"{verb} from {self.endpoint} ({dialled})",
            source=source_of(self.endpoint),
            created_at=self.now,
            # Its hits stay with the number: the counts say how often it called.
            hits=existing.hits if existing is not None else 0,
            last_seen=existing.last_seen if existing is not None else None,
        )

    def plan(
        self, last: LastCaller | None, undo: StaffChange | None, existing: Entry | None
    ) -> FeaturePlan:
        """What the code does, given the phone's last caller, its last change, the entry."""
        code = self.code
        if code in (Code.BLOCK, Code.UNBLOCK):
            number = self.number
            if number is None:
                return FeaturePlan(Result.INVALID)
            if code is Code.UNBLOCK:
                if existing is None:
                    return FeaturePlan(Result.NOT_LISTED, number)
                return FeaturePlan(Result.REMOVED, number, True, existing, None)
            after = self._entry(ListKind.BLOCK, number, existing)
            return FeaturePlan(Result.BLOCKED, number, True, existing, after)
        if code in (Code.BLOCK_LAST, Code.ALLOW_LAST):
            if last is None:
                return FeaturePlan(Result.NO_CALLER)
            if last.e164 is None:
                return FeaturePlan(Result.WITHHELD)
            kind = ListKind.BLOCK if code is Code.BLOCK_LAST else ListKind.ALLOW
            result = Result.BLOCKED if kind is ListKind.BLOCK else Result.ALLOWED
            after = self._entry(kind, last.e164, existing)
            return FeaturePlan(result, last.e164, True, existing, after)
        # UNDO
        if undo is None:
            return FeaturePlan(Result.NOTHING)
        if not _same(existing, undo.after):
            # Someone changed the entry since (the console, the CLI, another phone): putting the
            # old one back would silently undo their change. The step is used up all the same,
            # so that the next *34 goes on to the change before it.
            return FeaturePlan(Result.CHANGED, undo.number, undo_of=undo.id)
        return FeaturePlan(Result.UNDONE, undo.number, True, existing, undo.before, undo.id)


@dataclass(frozen=True, slots=True)
class Timed:
    """A :class:`Rule` that changes nothing once the phone has stopped waiting for its answer.

    The dialplan gives the screener ``FEATURE_WAIT`` seconds, then plays "failed" itself. A
    write lock held elsewhere (a long import) can keep the change from being made in that
    time; made later, the phone would have said "failed" about a change that happened. So the
    rule reads the clock inside its transaction (the one clock read of this module, on
    purpose): past ``not_after`` (seconds since the epoch) it plans :attr:`Result.FAILED` and
    changes nothing, and what the phone heard is true. ``clock`` is for tests.
    """

    rule: Rule
    not_after: float | None = None
    clock: Callable[[], float] = time.time

    def target(self, last: LastCaller | None, undo: StaffChange | None) -> str | None:
        """The wrapped rule's number (read even when too late: the read changes nothing)."""
        return self.rule.target(last, undo)

    def plan(
        self, last: LastCaller | None, undo: StaffChange | None, existing: Entry | None
    ) -> FeaturePlan:
        """The wrapped rule's plan, or FAILED (no change) once the phone stopped waiting."""
        if self.not_after is not None and self.clock() > self.not_after:
            return FeaturePlan(Result.FAILED, self.rule.target(last, undo))
        return self.rule.plan(last, undo, existing)


def parse_code(text: str | None) -> Code | None:
    """The code a ``StaffFeature`` event names, or None for anything else."""
    try:
        return Code((text or "").strip().lower())
    except ValueError:
        return None


__all__ = ["DEFAULT_DIALLED", "Code", "Result", "Rule", "Timed", "parse_code", "source_of"]
