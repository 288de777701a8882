"""The audit trail (admins only): who changed what, and when."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from screener.web.core import AdminReader, ConsoleDep, render

pages = APIRouter(include_in_schema=False)


@pages.get("/audit")
def audit_page(request: Request, con: ConsoleDep, auth: AdminReader) -> Response:
    return render(request, "audit.html", auth, {"rows": con.store.audit_log(200)})
