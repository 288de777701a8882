"""Login rate limiting: a pure sliding window of failures per key, the clock passed in.

The console counts failed logins per client address and per user name; once a key has
``limit`` failures within ``window`` seconds, further attempts for it are refused until the
oldest failure ages out. A success clears the user's failures (not the address's: one good
password must not reset a guessing run from the same address against other names).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_KEYS = 10_000  # a flood of made-up names must not grow memory without bound


@dataclass
class FailureWindow:
    """Failures per key within the last ``window`` seconds."""

    limit: int
    window: float
    _seen: dict[str, deque[float]] = field(default_factory=dict)

    def _prune(self, key: str, now: float) -> deque[float]:
        times = self._seen.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._seen[key]
        return times

    def blocked(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 if it may now."""
        times = self._prune(key, now)
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - now)

    def fail(self, key: str, now: float) -> None:
        if key not in self._seen and len(self._seen) >= MAX_KEYS:
            # Drop the key whose latest failure is oldest.
            oldest = min(self._seen, key=lambda k: self._seen[k][-1])
            del self._seen[oldest]
        self._seen.setdefault(key, deque()).append(now)

    def clear(self, key: str) -> None:
        self._seen.pop(key, None)


@dataclass
class LoginLimiter:
    """The two windows the login form checks: per address and per user name."""

    per_address: FailureWindow = field(default_factory=lambda: FailureWindow(20, 300.0))
    per_user: FailureWindow = field(default_factory=lambda: FailureWindow(5, 300.0))

    def wait(self, address: str, user: str, now: float) -> float:
        """Seconds to wait before this address may try this user; 0 if it may now."""
        return max(self.per_address.blocked(address, now), self.per_user.blocked(user, now))

    def failed(self, address: str, user: str, now: float) -> None:
        self.per_address.fail(address, now)
        self.per_user.fail(user, now)

    def succeeded(self, user: str) -> None:
        self.per_user.clear(user)
