"""The skew between Asterisk's clock and ours: the smallest gap seen over the last requests.

Delays in transit or in our queue only ever add to the gap between a request's arrival on our
clock and its Timestamp on Asterisk's, so the gap's minimum over a window is the clocks' skew.
:class:`WindowMin` keeps that minimum over the last ``size`` gaps in constant time per gap (a
monotonic queue), since the service asks for it up to three times per call.
"""

from __future__ import annotations

from collections import deque


class WindowMin:
    """The minimum of the last ``size`` values added (``default`` before the first)."""

    __slots__ = ("_count", "_queue", "_size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a window holds at least one value")
        self._size = size
        self._count = 0
        # (index, value), values increasing: the head is the window's minimum; a value that a
        # later smaller one makes irrelevant is dropped from the tail.
        self._queue: deque[tuple[int, float]] = deque()

    def add(self, value: float) -> None:
        """Add ``value``; the oldest leaves once ``size`` values are held."""
        queue = self._queue
        while queue and queue[-1][1] >= value:
            queue.pop()
        queue.append((self._count, value))
        self._count += 1
        if queue[0][0] <= self._count - 1 - self._size:
            queue.popleft()

    def min(self, default: float = 0.0) -> float:
        """The smallest of the last ``size`` values, or ``default`` if none was added."""
        return self._queue[0][1] if self._queue else default


__all__ = ["WindowMin"]
