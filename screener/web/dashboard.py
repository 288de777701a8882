"""The dashboard: today and the last 7 days by route, 30 days by day, the top numbers."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from starlette.responses import Response

from screener.web.core import ConsoleDep, Reader, render
from screener.web.models import DashboardOut, DayOut

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", tags=["dashboard"])
ROUTES = ("staff", "challenge", "voicemail", "reject")


@pages.get("/")
def dashboard_page(request: Request, con: ConsoleDep, auth: Reader) -> Response:
    board = con.store.dashboard(dt.datetime.now(dt.UTC), con.tz)
    week_total = sum(board.week.values())
    away = week_total - board.week.get("staff", 0)
    peak = max((sum(c.values()) for _, c in board.days), default=0) or 1
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
        },
    )


@api.get("/dashboard", response_model=DashboardOut)
def api_dashboard(con: ConsoleDep, auth: Reader) -> DashboardOut:
    """The dashboard's figures."""
    b = con.store.dashboard(dt.datetime.now(dt.UTC), con.tz)
    return DashboardOut(
        today=b.today,
        week=b.week,
        days=[DayOut(date=dt.date.fromisoformat(d), calls=c) for d, c in b.days],
        challenged=b.challenged,
        passed=b.passed,
        last_call=b.last_call,
    )
