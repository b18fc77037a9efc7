"""Settings from the environment (OPENCOUPON_*)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # No setting means anything as inf or nan (OPENCOUPON_WEBHOOK_TIMEOUT_SECONDS=nan waited
    # forever, OPENCOUPON_BULK_SEND_RATE=nan sent one email every 100 s): refused when read.
    model_config = SettingsConfigDict(env_prefix="OPENCOUPON_", extra="ignore", allow_inf_nan=False)

    database_url: str = "sqlite:///./var/opencoupon.db"
    base_url: str = "http://127.0.0.1:8000"
    # Used for HMAC of API secrets and tokens, encryption of secrets the API must show again,
    # and signed cookies. `opencoupon serve` generates and keeps one under ./var when unset.
    secret_key: str = ""
    allow_private_webhooks: bool = False
    max_body_bytes: int = 1024 * 1024
    # Per API client, per second; generous by default.
    rate_limit_per_second: float = 500.0
    rate_limit_burst: int = 1000
    idempotency_ttl_hours: int = 24
    run_worker_in_process: bool = True
    var_dir: Path = Field(default=Path("./var"))
    # Base URL of the `url_whitelabel` that SSO answers carry (a white-label dashboard host).
    whitelabel_base_url: str = ""
    sso_token_ttl_seconds: int = 60
    reset_token_ttl_seconds: int = 3600
    # Distribution: the server-wide SMTP server, used by accounts without their own (none when
    # smtp_host is empty). smtp_tls: none / starttls / tls.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_tls: str = "starttls"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_sender_email: str = ""
    smtp_sender_name: str = "OpenCoupon"
    smtp_timeout_seconds: float = Field(default=20.0, gt=0)
    sms_timeout_seconds: float = Field(default=15.0, gt=0)
    # Attempts per email/SMS before it is reported failed; waits grow from the base (x2 each time).
    send_max_attempts: int = 6
    send_retry_base_seconds: float = 30.0
    # Recipients a second that `opencoupon send email` queues.
    bulk_send_rate: float = Field(default=10.0, gt=0)

    # New coupon sessions one client address may open per campaign and hour on the consumer
    # page (`GET /p/{code}`): a returning browser is not counted; 0 turns the limit off.
    opens_per_address_per_hour: int = 300
    # Loyalty card joins one client address may make per card and hour (`POST /l/{code}/join`).
    joins_per_address_per_hour: int = 300

    # Dashboard sessions (signed cookie) and sign-in attempts per email.
    session_max_age_hours: int = 12
    login_attempts_per_minute: float = 10.0

    # Webhooks and push (docs/webhooks.md). Retry delays in seconds, comma separated; tests and
    # benchmarks shorten them. Empty: the production schedule (5 s ... 10 h).
    webhook_retry_delays: str = ""
    webhook_timeout_seconds: float = Field(default=15.0, gt=0)
    webhook_concurrency: int = 64
    # Connections of that pool one webhook endpoint may use at a time in a process; its other
    # deliveries wait (holding none), so one slow receiver never holds up every account's.
    webhook_endpoint_concurrency: int = 8
    # Connections of that pool one account (a master with its subaccounts) may use at a time in a
    # process, all its endpoints together: many endpoints on one slow host never hold the pool.
    webhook_account_concurrency: int = 16
    # Push deliveries (docs/webhooks.md): a push service answering 429, 5xx or not in time is
    # tried again after these delays in seconds (comma separated; empty: 15 s, 1 min, 5 min,
    # 30 min), or after its Retry-After, within the message's 24 h TTL.
    push_retry_delays: str = ""
    # Push deliveries have their own connections (push.outbound): anyone can subscribe a browser
    # with an endpoint that never answers, and webhooks must not wait behind it. Push services
    # answer well within the timeout; one origin gets at most push_origin_concurrency of them
    # at a time within a fan-out's chunk.
    push_timeout_seconds: float = Field(default=5.0, gt=0)
    push_concurrency: int = 64
    push_origin_concurrency: int = 32
    # A job whose worker died is claimed again once its lease runs out.
    worker_lease_seconds: float = Field(default=60.0, gt=0)
    # `sub` claim of VAPID tokens: push services contact this address about problems.
    vapid_subject: str = "mailto:admin@opencoupon.invalid"

    @field_validator("vapid_subject")
    @classmethod
    def _vapid_subject_signable(cls, value: str) -> str:
        # py_vapid refuses to sign a token with any other subject, so every push would fail.
        from py_vapid import _check_sub

        if not _check_sub(value):
            raise ValueError(
                "must be a mailto: address or an https:// URL, e.g. mailto:admin@shop.example.com"
            )
        return value

    @property
    def public_base_url(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def resolve_secret_key(settings: Settings) -> str:
    """The configured key, or one generated once and kept under var_dir."""
    if settings.secret_key:
        return settings.secret_key
    import secrets

    path = settings.var_dir / "secret_key"
    if not path.exists():
        # Processes starting together on a fresh var dir must end up with one key: each writes
        # its own candidate to a private temporary file (0600 from the start) and links it to the
        # final name, which fails if another got there first; all then read the final file,
        # which is never seen partly written.
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        candidate = settings.var_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(8)}"
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(candidate, path)
            except FileExistsError:
                pass
        finally:
            candidate.unlink(missing_ok=True)
    return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    settings = Settings()
    settings.secret_key = resolve_secret_key(settings)
    return settings
