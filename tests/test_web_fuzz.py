"""Property-based fuzzing of the console's JSON API from its own OpenAPI document (schemathesis):
with a logged-in token, no request makes a 5xx and every response matches the schema."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from screener.web.app import create_app

from .webutil import call, console, make_db

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_api_never_fails_and_matches_its_schema(tmp_path: Path) -> None:
    """For every operation: no 5xx; status codes, content types and bodies as documented."""
    path = tmp_path / "screener.db"
    asyncio.run(make_db(path, [call(n, name="<i>fuzz</i>") for n in range(30)]))
    with console(path) as (con, tokens):
        schema = schemathesis.openapi.from_asgi("/api/openapi.json", create_app(con))
        headers = {"Authorization": f"Bearer {tokens['admin']}"}
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 7
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                database=None,
            )
            def fuzz(case: schemathesis.Case) -> None:
                # A schema-valid number can still be no phone number: that is a documented 400.
                case.call_and_validate(
                    headers=headers, excluded_checks=[schemathesis.checks.positive_data_acceptance]
                )

            fuzz()
