"""What the screener learns from a challenge outcome. Pure: no I/O; the clock comes in as ``now``.

- A caller who passes is *verified*: a learned allow entry for ``policy.verified_days``.
- The ``policy.fail_threshold``-th failed or timed-out challenge within
  ``policy.fail_window_days`` is an *auto-block*: a learned block entry for
  ``policy.autoblock_days``.
- A manual entry that is still active is never replaced: the office's own word wins.

The store applies these rules inside the transaction that records the outcome (see
``Store.apply``), so that the failures they count are exactly those in the call log, even when
the database was locked for a while and several outcomes are committed together.
"""

from __future__ import annotations

import datetime as dt

from screener.numbers import Caller, Category
from screener.policy import SOURCE_LEARNED, Entry, ListKind, Outcome, Policy
from screener.store import CallRecord, LearnRule


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
