"""Notifications: word of every voicemail, auto-block and outage, by email, webhook and MQTT.

Never on the call path. The service writes each event to the ``outbox`` table in the same
transaction as the record it describes; :class:`~screener.notify.sender.Sender` reads the rows
each configured channel has yet to deliver, sends them with retries and exponential backoff,
and records every attempt in ``outbox_delivery``. A restart or a mail server outage loses
nothing: the rows wait and are delivered late. Each message carries the row's idempotency key.

    message   pure: outbox row → subject, body, JSON, signature
    mail      SMTP (aiosmtplib): STARTTLS or TLS, login, the voicemail WAV attached
    webhook   JSON POST, HMAC-SHA256 signature in X-Screener-Signature
    mqtt      aiomqtt: <prefix>/<topic> per event, retained <prefix>/health
    sender    the delivery loop, one task per channel
    watcher   degraded / recovered events (AMI down too long, database not writable)
"""
