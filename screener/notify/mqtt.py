"""The MQTT channel (aiomqtt): ``<prefix>/<topic>`` per event, and a retained health state.

Each event is published (QoS 1 by default, not retained) to ``<prefix>/voicemail``,
``<prefix>/auto_block``, ``<prefix>/degraded``, ``<prefix>/recovered`` or ``<prefix>/test``.
Degraded and recovered events also set the retained ``<prefix>/health`` topic (``ok`` or
``degraded``, with the JSON of the event), which Home Assistant can use as a binary sensor.
"""

from __future__ import annotations

import json
import ssl

import aiomqtt

from screener.config import MqttConfig
from screener.errors import NotifyError
from screener.notify.message import Notice, json_body


def health_state(notice: Notice) -> bytes | None:
    """The retained health document for a degraded/recovered notice; None for other topics."""
    if notice.topic not in ("degraded", "recovered"):
        return None
    state = "degraded" if notice.topic == "degraded" else "ok"
    doc = {"state": state, "since": notice.created_at.isoformat(), "event": notice.as_json()}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


class MqttChannel:
    """Publishes each notice to the broker, connecting for each delivery."""

    name = "mqtt"

    def __init__(self, config: MqttConfig) -> None:
        self.config = config

    def _client(self) -> aiomqtt.Client:
        c = self.config
        tls = None
        if c.tls:
            tls = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
        return aiomqtt.Client(
            c.host,
            port=c.port,
            username=c.username,
            password=c.password,
            tls_context=tls,
            timeout=c.timeout,
            identifier=None,
        )

    async def deliver(self, notice: Notice) -> None:
        """Publish (and wait for the broker's acknowledgement at QoS 1 or 2)."""
        c = self.config
        try:
            async with self._client() as client:
                await client.publish(
                    f"{c.prefix}/{notice.topic}", json_body(notice), qos=c.qos, timeout=c.timeout
                )
                state = health_state(notice)
                if state is not None:
                    await client.publish(
                        f"{c.prefix}/health", state, qos=c.qos, retain=True, timeout=c.timeout
                    )
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise NotifyError(f"MQTT {c.host}:{c.port} failed: {exc}") from exc

    async def aclose(self) -> None:
        """Nothing is kept open between deliveries."""
