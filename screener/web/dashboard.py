"""The dashboard: today and the last 7 days by route, 30 days by day, the top numbers."""

from __future__ import annotations

import datetime as dt
import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from screener import agentstatus
from screener.web.core import Console, ConsoleDep, Reader, render
from screener.web.models import DashboardOut, DayOut

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", tags=["dashboard"])
ROUTES = ("staff", "challenge", "voicemail", "reject")


def agent(con: Console) -> tuple[agentstatus.State, dt.datetime | None]:
    """What the agent last reported about its AMI connection, judged now, and when it did."""
    report = agentstatus.read(con.store.path)
    state = agentstatus.judge(report, time.time())
    return state, dt.datetime.fromtimestamp(report.at, dt.UTC) if report else None


@pages.get("/")
def dashboard_page(request: Request, con: ConsoleDep, auth: Reader) -> Response:
    board = con.store.dashboard(dt.datetime.now(dt.UTC), con.tz)
    week_total = sum(board.week.values())
    away = week_total - board.week.get("staff", 0)
    peak = max((sum(c.values()) for _, c in board.days), default=0) or 1
    state, reported = agent(con)
    return render(
        request,
        "dashboard.html",
        auth,
        {
            "b": board,
            "routes": ROUTES,
            "away": f"{100 * away / week_total:.0f}%" if week_total else "–",
            "pass_rate": f"{100 * board.passed / board.challenged:.0f}%"
            if board.challenged
            else "–",
            "peak": peak,
            "agent": state.value,
            "agent_at": reported,
        },
    )


@api.get("/dashboard", response_model=DashboardOut)
def api_dashboard(con: ConsoleDep, auth: Reader) -> DashboardOut:
    """The dashboard's figures."""
    b = con.store.dashboard(dt.datetime.now(dt.UTC), con.tz)
    state, reported = agent(con)
    return DashboardOut(
        today=b.today,
        week=b.week,
        days=[DayOut(date=dt.date.fromisoformat(d), calls=c) for d, c in b.days],
        challenged=b.challenged,
        passed=b.passed,
        last_call=b.last_call,
        agent=state.value,
        agent_reported_at=reported,
    )
