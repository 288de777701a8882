"""Shared fixtures. The Asterisk sandbox fixtures live in tests/e2e_support.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever a CLI test configured before."""
    yield
    structlog.reset_defaults()
