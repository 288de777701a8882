"""The webhook channel: a signed JSON POST per event (aiohttp)."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from screener.config import WebhookConfig
from screener.errors import NotifyError
from screener.notify.message import KEY_HEADER, SIGNATURE_HEADER, Notice, json_body, sign


class WebhookChannel:
    """POSTs each notice's JSON to ``url``; any 2xx answer is a delivery."""

    name = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        # The URL may carry a token: messages name its host only.
        parts = urlsplit(config.url)
        host = parts.netloc.rpartition("@")[2]  # never a user:password either
        self._where = f"{parts.scheme}://{host}"

    async def deliver(self, notice: Notice) -> None:
        """POST the notice; NotifyError on a network error or a non-2xx answer."""
        body = json_body(notice)
        headers = {"Content-Type": "application/json; charset=utf-8", KEY_HEADER: notice.key}
        if self.config.secret:
            headers[SIGNATURE_HEADER] = sign(self.config.secret, body)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout)
            )
        try:
            async with self._session.post(self.config.url, data=body, headers=headers) as reply:
                if not 200 <= reply.status < 300:
                    raise NotifyError(f"webhook {self._where} answered {reply.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = (str(exc) or type(exc).__name__).replace(self.config.url, self._where)
            raise NotifyError(f"webhook {self._where} failed: {reason}") from exc

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
