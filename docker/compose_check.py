"""The call checks of scripts/compose-test, against the stack docker-compose.yml started.

    compose_check.py before-restart|after-restart -- docker compose -p ... -f ...

Calls enter the containerised Asterisk's ``[from-trunk]`` through Local channels, placed by the
test-only AMI user (``SCREENER_AMI_HOST``/``_PORT``/``_USER``/``_SECRET``) that only the test's
override file adds. The screener in its container decides; this script follows each call by
its ``ScreenRouted`` event and the dialplan steps, and reads the screener's own call log with
``screener calls --json`` inside the container (the command after ``--``).

- before-restart: allow-list a customer; a toll-free caller is challenged (``[route-challenge]``
  reads the digits), the customer rings staff (``[route-staff]`` dials the staff phones).
- before-restart, the shared list (docker/compose.shared.yml): the allow entry made at this
  site reaches the bundled PostgreSQL's central list, and ``screener sync status`` shows the
  site joined with nothing waiting in its outbox and no error.
- after-restart: the allow entry is still in the database on the volume, and the customer's
  next call rings staff again: the restarted screener reads the same list.

Exit status 0 when every check held; otherwise one line per failed check on stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

from screener.ami import AMISettings
from tests.probe import Call, Probe, probe_client

CUSTOMER = "0312345678"  # an office's fixed-line customer, allow-listed by the test
TOLL_FREE = "0120121852"  # an unknown 0120 call-centre number


class CheckFailed(Exception):
    """One check that did not hold."""


def compose_exec(compose: list[str], service: str, what: str, *argv: str, timeout: float) -> str:
    """Run ``argv`` in ``service``'s container; its stdout (``what`` names it in a failure)."""
    done = subprocess.run(  # noqa: S603 (the compose command line scripts/compose-test built)
        [*compose, "exec", "-T", service, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise CheckFailed(f"{what}: exit {done.returncode}: {done.stderr}")
    return done.stdout


def screener_cli(compose: list[str], *args: str) -> str:
    """Run a screener admin command in the screener's container; its stdout."""
    what = f"screener {' '.join(args)}"
    return compose_exec(compose, "screener", what, "screener", *args, timeout=60)


def call_log(compose: list[str], call_ids: list[str], within: float = 15) -> dict[str, Any]:
    """The call log rows of these calls, once all are there."""
    deadline = time.monotonic() + within
    while True:
        rows = {r["call_id"]: r for r in json.loads(screener_cli(compose, "calls", "--json"))}
        if all(c in rows for c in call_ids):
            return rows
        if time.monotonic() > deadline:
            missing = [c for c in call_ids if c not in rows]
            raise CheckFailed(f"calls missing from the screener's call log: {missing}")
        time.sleep(0.5)


def central_kind(compose: list[str], e164: str) -> str:
    """The kind of ``e164``'s entry in the shared list's central table ('' if none), read with
    psql in the postgres container (the password from its secret file, never a flag)."""
    if not re.fullmatch(r"\+[0-9]{6,15}", e164):
        raise ValueError(f"not an E.164 number: {e164!r}")
    sql = f"SELECT kind FROM entries WHERE number = '{e164}' AND NOT prefix AND NOT deleted"  # noqa: S608 (digits only, checked above)
    psql = (
        'PGPASSWORD="$(cat /run/secrets/shared_password)" psql -h 127.0.0.1'
        ' -p "${SCREENER_PG_PORT:-25432}" -U screener -d screener -tAc "$0"'
    )
    what = "psql in the postgres container"
    return compose_exec(compose, "postgres", what, "sh", "-c", psql, sql, timeout=30).strip()


def shared(compose: list[str], e164: str, within: float = 15) -> None:
    """This site's allow entry is in the central list, and the site's sync is caught up."""
    deadline = time.monotonic() + within
    while True:
        kind = central_kind(compose, e164)
        status = json.loads(screener_cli(compose, "sync", "status", "--json"))
        if kind == "allow" and status["joined"] and status["outbox"] == 0:
            break
        if time.monotonic() > deadline:
            raise CheckFailed(f"the allow entry did not reach PostgreSQL ({kind!r}): {status}")
        time.sleep(0.5)
    if status["site"] != "compose-test" or status["last_error"] is not None:
        raise CheckFailed(f"sync status: {status}")
    print(f"compose-check: the allow entry reached the shared list (site {status['site']!r})")


async def routed_to(probe: Probe, call: Call, route: str, context: str, app: str) -> None:
    """The screener (not the fallback) sent the call to ``route``, whose dialplan ran ``app``."""
    got = await probe.routed(call, within=15)
    if got != (route, False):
        raise CheckFailed(f"{call.number}: routed {got}, want ({route!r}, not the fallback)")
    await probe.pbx.wait_for(
        lambda e: (
            e.name.lower() == "newexten"
            and e.get("Uniqueid") == call.call_id
            and e.get("Context") == context
            and e.get("Application") == app
        ),
        15,
    )


async def calls(compose: list[str], phase: str) -> None:
    settings = AMISettings(
        host=os.environ["SCREENER_AMI_HOST"],
        port=int(os.environ["SCREENER_AMI_PORT"]),
        username=os.environ["SCREENER_AMI_USER"],
        secret=os.environ["SCREENER_AMI_SECRET"],
        events="call,user,dialplan",
    )
    if phase == "before-restart":
        screener_cli(compose, "list", "add", CUSTOMER, "--allow", "--label", "Customer")
        await asyncio.to_thread(shared, compose, "+81312345678")
    else:
        entries = json.loads(screener_cli(compose, "list", "show", "--json"))
        if not any(e.get("number") == "+81312345678" and e.get("kind") == "allow" for e in entries):
            raise CheckFailed(f"the allow entry did not survive the restart: {entries}")
        print("compose-check: the allow list survived the restart on its volume")
    async with probe_client(settings) as ami, Probe(ami) as probe:
        placed: list[tuple[Call, str, str]] = []
        try:
            if phase == "before-restart":
                challenged = await probe.call_local(TOLL_FREE, hold=20)
                await routed_to(probe, challenged, "challenge", "route-challenge", "Read")
                placed.append((challenged, "challenge", "toll_free"))
                print(f"compose-check: toll-free {TOLL_FREE} is challenged")
            customer = await probe.call_local(CUSTOMER, hold=20)
            await routed_to(probe, customer, "staff", "route-staff", "Dial")
            placed.append((customer, "staff", "fixed_line"))
            print(f"compose-check: allow-listed {CUSTOMER} rings staff ({phase})")
        except TimeoutError:
            raise CheckFailed(f"no expected AMI event within the wait ({phase})") from None
        finally:
            await probe.hangup_all()
    rows = await asyncio.to_thread(call_log, compose, [c.call_id for c, _, _ in placed])
    for call, route, category in placed:
        row = rows[call.call_id]
        if (row["route"], row["category"], row["fallback"]) != (route, category, False):
            raise CheckFailed(f"call log row of {call.number}: {row}")
    print(f"compose-check: the screener's call log has the {len(placed)} call(s) as routed")


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("before-restart", "after-restart") or argv[1] != "--":
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        asyncio.run(calls(argv[2:], argv[0]))
    except CheckFailed as exc:
        print(f"compose-check: FAIL: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
