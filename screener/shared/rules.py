"""The conflict rule of the shared list, and how a batch of changes folds into the central state.

Pure: no I/O, no clock. The central store applies every site's changes one at a time, in the
order they arrive, under one lock, each accepted change taking the next sequence number; every
site then applies the central rows in sequence order. So the rule only ever compares the
central row as it stands with the change that arrives:

- a live manual entry (one a person made: CLI, console, import) is replaced only by another
  person's change: manual beats learned and called (what the screener writes by itself);
- among equals the change that arrives later, so the one with the later central sequence, wins;
- a removed entry (a tombstone) is no entry: any change replaces it.

A removal carries the source of the entry it removed: forgetting a learned entry is a learned
change, and cannot remove a manual block that another site made meanwhile.

A change that loses still gives its key a new sequence number (the central row, unchanged, is
sent out again), so that the site that made it, which holds its own losing version, is put
right by its next pull: every site converges on the central row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from screener.policy import SOURCE_LEARNED

Op = Literal["upsert", "delete"]
Key = tuple[str, bool]  # (number, prefix)


@dataclass(frozen=True)
class Row:
    """An entry as the shared list holds it (``deleted``: a tombstone)."""

    kind: str
    number: str
    prefix: bool
    label: str
    source: str
    created_at: float
    expires_at: float | None
    note: str
    deleted: bool = False

    @property
    def key(self) -> Key:
        """The entry's identity: one entry per (number, prefix), as in the local store."""
        return (self.number, self.prefix)


@dataclass(frozen=True)
class Change:
    """One local change from a site's outbox: ``key`` is its idempotency key."""

    key: str
    op: Op
    row: Row  # for a removal: the entry as it was, so its source and key


# What the screener writes by itself: what a challenge taught (verified callers, auto-blocks)
# and what calls made. Every other source is a person's: the CLI ("manual"), the console
# ("web:<user>"), an import ("import:<name>").
MACHINE_SOURCES = frozenset({SOURCE_LEARNED, "called"})


def rank(source: str) -> int:
    """A person's change (manual, console, import) outranks the screener's own (learned)."""
    return 1 if source in MACHINE_SOURCES else 2


def accepts(current: Row | None, change: Change) -> bool:
    """Whether ``change`` replaces the central row ``current`` (None: never seen)."""
    if current is None or current.deleted:
        return True
    return rank(change.row.source) >= rank(current.source)


def result_of(change: Change) -> Row:
    """The central row an accepted change leaves behind."""
    if change.op == "delete":
        r = change.row
        return Row(r.kind, r.number, r.prefix, r.label, r.source, r.created_at, None, "", True)
    return change.row


def fold(current: Mapping[Key, Row], changes: Iterable[Change]) -> dict[Key, Row]:
    """Apply ``changes`` in order over ``current``; every key they touch, with its final row.

    A key whose changes all lost keeps its current row, and is in the result all the same: it
    takes a new sequence number like any other (see the module docstring).
    """
    state = dict(current)
    touched: dict[Key, Row] = {}
    for change in changes:
        key = change.row.key
        now = state.get(key)
        if accepts(now, change):
            state[key] = result_of(change)
        if key in state:
            touched[key] = state[key]
    return touched


def lay(current: Row | None, pending: Iterable[Change]) -> Row | None:
    """What a site shows for one key: the central row with its unpushed changes laid over it.

    ``pending`` are the site's changes to that key not yet pushed, oldest first. They will be
    applied over the central row when they are pushed (:func:`fold`), so until then the site
    shows the outcome that push will have: an unpushed change counts as newer than every row
    pulled before it, unless it loses by rank (a learned change under a person's entry).
    """
    state = current
    for change in pending:
        if accepts(state, change):
            state = result_of(change)
    return state
