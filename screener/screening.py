"""One screening, start to finish, without a call: normalize, look up, decide.

The glue between the pure core (``numbers``, ``policy``) and the store, shared by the service
(for live calls) and ``screener check`` (to explain a decision for any number).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from screener.config import did_key
from screener.numbers import Caller, Category, normalize
from screener.policy import Decision, Entry, Policy, decide
from screener.store import Store


@dataclass(frozen=True, slots=True)
class Screening:
    """What was decided for a caller, with everything needed to explain it."""

    caller: Caller
    did: str | None
    matches: tuple[Entry, ...]
    decision: Decision

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``screener check --json``."""
        entry = self.decision.entry
        return {
            "input": self.caller.raw,
            "e164": self.caller.e164,
            "category": self.caller.category.value,
            "detail": self.caller.detail,
            "did": self.did,
            "route": self.decision.route.value,
            "rule": self.decision.rule,
            "reasons": list(self.decision.reasons),
            "entry": None
            if entry is None
            else {
                "kind": entry.kind.value,
                "number": entry.number,
                "prefix": entry.prefix,
                "label": entry.label,
                "source": entry.source,
                "expires_at": entry.expires_at.isoformat() if entry.expires_at else None,
            },
            "announcement": self.decision.announcement,
        }


async def screen(
    store: Store,
    raw: str,
    policy: Policy,
    region: str,
    now: dt.datetime,
    did: str | None = None,
    *,
    forged: Collection[str] = (),
    tainted: bool = False,
) -> Screening:
    """Normalize ``raw``, fetch its list matches in one query, and decide.

    ``tainted``: the dialplan stripped control characters from the number (screen-sanitize).
    ``forged`` names AMI headers that arrived twice in the request: caller data (a CR/LF in
    the caller ID) tried to inject headers. Nothing in the snapshot can then be trusted except
    the channel itself, so the caller counts as invalid (no list entry, no DID policy applies).
    """
    caller = normalize(raw, region)
    if tainted:
        # The dialplan had to strip control characters from the number: what is left is not
        # the caller's number, and whoever sent it was trying something.
        caller = Caller(raw, None, Category.INVALID, "caller number carried control characters")
        did = None
    if forged:
        headers = ", ".join(sorted(forged))
        caller = Caller(raw, None, Category.INVALID, f"caller data forged AMI headers: {headers}")
        did = None
    matches = tuple(await store.lookup(caller.e164)) if caller.e164 else ()
    key = did_key(did, region) if did else None
    return Screening(caller, key, matches, decide(caller, matches, policy, now, key))
