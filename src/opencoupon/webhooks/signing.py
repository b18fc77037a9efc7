"""Standard Webhooks v1 signatures, the delivered body, and the retry schedule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets

from opencoupon.config import Settings
from opencoupon.kit.dates import fmt
from opencoupon.models import Event

SECRET_PREFIX = "whsec_"

# After the first attempt (Svix's schedule): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_RETRY_DELAYS = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
JITTER = 0.1


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes (the spec asks for 24 to 64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secrets_: list[str], msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The Standard Webhooks headers; one signature per secret (several while rotating)."""
    return {
        "content-type": "application/json",
        "user-agent": "OpenCoupon-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets_),
    }


def build_body(event: Event) -> str:
    """`{"id", "type", "date", "campaign", "session", "data"}` with `data` spliced in as the exact
    text stored with the event."""
    head = json.dumps(
        {
            "id": event.public_id,
            "type": event.type,
            "date": fmt(event.created_at),
            "campaign": event.campaign,
            "session": event.session,
        },
        separators=(",", ":"),
    )
    return head[:-1] + ',"data":' + (event.data or "{}") + "}"


def retry_delays(settings: Settings) -> tuple[float, ...]:
    text = settings.webhook_retry_delays.strip()
    if not text:
        return DEFAULT_RETRY_DELAYS
    return tuple(float(part) for part in text.split(",") if part.strip())


def next_delay(settings: Settings, round_attempts: int) -> float | None:
    """Seconds until the next attempt after `round_attempts` failed ones; None when exhausted."""
    delays = retry_delays(settings)
    if round_attempts > len(delays):
        return None
    return delays[round_attempts - 1] * random.uniform(1 - JITTER, 1 + JITTER)
