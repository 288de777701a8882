"""What the screener learns from a challenge outcome. Pure: no I/O; the clock comes in as ``now``.

- A caller who passes is *verified*: a learned allow entry for ``policy.verified_days``.
- The ``policy.fail_threshold``-th failed or timed-out challenge within
  ``policy.fail_window_days`` is an *auto-block*: a learned block entry for
  ``policy.autoblock_days``.
- A manual entry that is still active is never replaced: the office's own word wins.

The store applies these rules inside the transaction that records the outcome (see
``Store.apply``), so that the failures they count are exactly those in the call log, even when
the database was locked for a while and several outcomes are committed together.

It also learns from the other direction (:func:`learn_called`): a number a staff phone dials out
becomes an allow entry with source ``called`` for ``policy.called_days``, since the people we
call are the people who call back. The office's own entries (manual, imported, a staff phone's
feature code) win over it; what the screener learned itself (``learned``, an older ``called``)
is replaced.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from screener.numbers import Caller, Category
from screener.policy import SOURCE_CALLED, SOURCE_LEARNED, Entry, ListKind, Outcome, Policy
from screener.store import CalledRule, CallRecord, LearnRule


def learn(
    caller: Caller,
    outcome: Outcome,
    existing: Entry | None,
    recent_failures: int,
    policy: Policy,
    now: dt.datetime,
) -> Entry | None:
    """The learned list entry a challenge outcome earns, or None.

    ``existing`` is the exact entry the store holds for the number, if any; ``recent_failures``
    counts earlier failed or timed-out challenges inside the policy's window (not this one).
    A manual entry is never replaced: the office's own word wins over what the screener saw.
    """
    if caller.e164 is None:
        return None  # nothing to key a learned entry on (withheld, invalid)
    if existing is not None and not existing.is_learned and existing.is_active(now):
        return None
    if outcome is Outcome.PASS:
        return Entry(
            kind=ListKind.ALLOW,
            number=caller.e164,
            label="passed the challenge",
            source=SOURCE_LEARNED,
            created_at=now,
            expires_at=now + dt.timedelta(days=policy.verified_days),
        )
    if outcome in (Outcome.FAIL, Outcome.TIMEOUT) and policy.fail_threshold > 0:
        failures = recent_failures + 1
        if failures >= policy.fail_threshold:
            return Entry(
                kind=ListKind.BLOCK,
                number=caller.e164,
                label=f"failed the challenge {failures} times",
                source=SOURCE_LEARNED,
                created_at=now,
                expires_at=now + dt.timedelta(days=policy.autoblock_days),
            )
    return None


def is_auto_block(entry: Entry) -> bool:
    """Whether a learned entry blocks (the failure threshold was met) rather than verifies."""
    return entry.kind is ListKind.BLOCK


def caller_from_record(record: CallRecord) -> Caller:
    """The caller as the call log recorded the verdict, not a fresh normalization.

    A caller screened as invalid (tainted, forged headers) must stay invalid, and learn nothing.
    """
    try:
        category = Category(record.category)
    except ValueError:
        category = Category.INVALID
    return Caller(record.raw_number, record.e164, category, "from the call log")


def rule(caller: Caller | None, outcome: Outcome, policy: Policy, now: dt.datetime) -> LearnRule:
    """The :data:`~screener.store.LearnRule` for one outcome: :func:`learn`, given what the
    transaction reads (the call's record when ``caller`` is not known, the stored entry, the
    earlier failures)."""

    def apply(record: CallRecord | None, existing: Entry | None, failures: int) -> Entry | None:
        who = caller if caller is not None else (caller_from_record(record) if record else None)
        if who is None:
            return None
        return learn(who, outcome, existing, failures, policy, now)

    return apply


# Categories a number called out must have to be learned: one with a real number behind it.
_UNCALLABLE = frozenset({Category.WITHHELD, Category.INVALID})


def learn_called(
    caller: Caller, endpoint: str, existing: Entry | None, policy: Policy, now: dt.datetime
) -> Entry | None:
    """The ``called`` allow entry for a number staff phone ``endpoint`` dialled out, or None.

    None when nothing is to be learned (no number, ``called_days`` is 0) or when the office's
    own word holds the number: an active entry of any source but ``learned`` and ``called``
    (manual, imported, a feature code). A learned entry, even a block, is replaced (staff
    chose to call that number); an earlier ``called`` one is refreshed, keeping its hits.
    """
    if caller.e164 is None or caller.category in _UNCALLABLE or policy.called_days <= 0:
        return None
    machine = existing is not None and existing.source in (SOURCE_LEARNED, SOURCE_CALLED)
    if existing is not None and not machine and existing.is_active(now):
        return None
    again = existing is not None and existing.source == SOURCE_CALLED
    return Entry(
        kind=ListKind.ALLOW,
        number=caller.e164,
        label=f"staff called this number on {_local_day(now, policy)} ({endpoint})",
        source=SOURCE_CALLED,
        created_at=now,
        expires_at=now + dt.timedelta(days=policy.called_days),
        hits=existing.hits if again and existing is not None else 0,
        last_seen=existing.last_seen if again and existing is not None else None,
    )


def _local_day(now: dt.datetime, policy: Policy) -> str:
    return now.astimezone(ZoneInfo(policy.hours.timezone)).date().isoformat()


def called_rule(caller: Caller, endpoint: str, policy: Policy, now: dt.datetime) -> CalledRule:
    """The :data:`~screener.store.CalledRule` for one outgoing call (:func:`learn_called`)."""
    return lambda existing: learn_called(caller, endpoint, existing, policy, now)
