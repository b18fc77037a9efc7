"""Worker jobs: deliver one email or SMS, record what the provider answered, retry temporary
failures with growing waits, and report the send failed once attempts run out."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from opencoupon.coupons.sessions import session_path
from opencoupon.distribution import repository as repo
from opencoupon.distribution import service
from opencoupon.distribution.mail import (
    CouponContent,
    SmtpConfig,
    SmtpFailure,
    compose,
    deliver,
    parse_branding,
)
from opencoupon.distribution.sms import SmsError, SmsProvider, make_provider
from opencoupon.errors import ApiError
from opencoupon.kit.clock import utcnow
from opencoupon.models import Account, Campaign, CouponSession, DistributionSend
from opencoupon.runtime import Runtime
from opencoupon.webhooks.outbound import storable
from opencoupon.worker.registry import Retry, on_dead, task

log = logging.getLogger("opencoupon.distribution")

# What a send says when its recipient's data was erased before it went out (privacy.service).
ERASED_NOT_SENT = "Not sent: the recipient's data was erased."

# A send marked `sending` more recently than this is taken to be in another worker's hands
# (its job lease ran out while the provider was slow): wait rather than send it twice.
IN_FLIGHT = dt.timedelta(minutes=5)

# At most this many sends of one tenant (a master account with its subaccounts) run at once in a
# worker process. Each attempt ends at its deadline, but meanwhile a tenant's slow mail server or
# SMS gateway holds only these threads of the runner's pool, not those other tenants' sends,
# webhooks and push notifications need. A send over the share is put back for one to three
# seconds (Retry: no attempt is used up; `opencoupon worker --once` waits for it before it ends).
SENDS_PER_TENANT = 4
_running: Counter[int] = Counter()
_running_lock = threading.Lock()


@contextmanager
def tenant_slot(tenant_id: int) -> Iterator[None]:
    """One of the tenant's SENDS_PER_TENANT places, for the time of one attempt; Retry when all
    are taken."""
    with _running_lock:
        if _running[tenant_id] >= SENDS_PER_TENANT:
            raise Retry(
                dt.timedelta(seconds=random.uniform(1.0, 3.0)),
                "the account's other sends are running",
                busy=True,
            )
        _running[tenant_id] += 1
    try:
        yield
    finally:
        with _running_lock:
            _running[tenant_id] -= 1
            if not _running[tenant_id]:
                del _running[tenant_id]


def _tenant(runtime: Runtime, send_id: int) -> int | None:
    """The master account of the send's owner (the owner when it is a master); None: no such send."""
    with runtime.db.read() as session:
        row = session.execute(
            select(DistributionSend.account_id, Account.parent_id)
            .join(Account, Account.id == DistributionSend.account_id)
            .where(DistributionSend.id == send_id)
        ).first()
    return None if row is None else int(row.parent_id or row.account_id)


class Permanent(Exception):
    """A failure that another attempt would not fix."""


@dataclass
class EmailWork:
    config: SmtpConfig
    message: EmailMessage
    recipient: str
    connect_addresses: list[str]


@dataclass
class SmsWork:
    provider: SmsProvider
    to: str
    sender: str
    body: str


@dataclass
class Delivered:
    """What the provider answered for a message it accepted."""

    response: str
    message_id: str


def _begin(runtime: Runtime, send_id: int) -> DistributionSend | None:
    """Mark the send `sending` (one attempt more); None when there is nothing to do."""
    now = utcnow()
    with runtime.db.transaction() as session:
        send = repo.send_for_update(session, send_id)
        if send is None or send.status in ("sent", "failed"):
            return None
        if send.recipient_key == "":
            # Erased while its earlier attempt was with the provider (whose worker then stopped):
            # there is nobody to send it to.
            send.status = "failed"
            send.failed_at = send.updated_at = now
            send.next_attempt_at = None
            send.last_error = ERASED_NOT_SENT
            return None
        if send.status == "sending" and send.updated_at > now - IN_FLIGHT:
            raise Retry(IN_FLIGHT, "another attempt is in progress")
        send.status = "sending"
        send.attempts += 1
        send.next_attempt_at = None
        send.updated_at = now
        session.flush()
        session.expunge(send)
        return send


def _finish(runtime: Runtime, send_id: int, **values: Any) -> bool:
    """Record the attempt's outcome. False when the recipient's data was erased while the
    provider had the message (privacy.service empties recipient_key, never empty otherwise): then
    only the outcome and its date are recorded, never the provider's answer or error (they may
    echo the number, address and text), and a send that would be retried ends failed."""
    # Text from providers (an SMS sid, an error message, an SMTP reply) may hold what the database
    # cannot store (PostgreSQL: NUL): the update would fail after the message went out, and the
    # job be retried, sending it again.
    values = {key: storable(value) if isinstance(value, str) else value for key, value in values.items()}
    now = utcnow()
    with runtime.db.transaction() as session:
        recorded = session.execute(
            update(DistributionSend)
            .where(DistributionSend.id == send_id, DistributionSend.recipient_key != "")
            .values(updated_at=now, **values)
        )
        if getattr(recorded, "rowcount", 0):
            return True
        if values["status"] == "sent":
            outcome: dict[str, Any] = {"status": "sent", "sent_at": values["sent_at"], "last_error": ""}
            outcome["provider_message_id"] = values["provider_message_id"]
        else:
            outcome = {
                "status": "failed",
                "failed_at": now,
                "next_attempt_at": None,
                "dedup_key": None,
                "last_error": ERASED_NOT_SENT,
            }
        session.execute(
            update(DistributionSend).where(DistributionSend.id == send_id).values(updated_at=now, **outcome)
        )
    return False


def _retry_delay(runtime: Runtime, attempts: int) -> dt.timedelta:
    base = runtime.settings.send_retry_base_seconds
    seconds = min(3600.0, base * 2 ** max(0, attempts - 1))
    return dt.timedelta(seconds=seconds * random.uniform(0.9, 1.1))


def _failed(runtime: Runtime, send: DistributionSend, error: str, response: str, *, transient: bool) -> None:
    """Retry a temporary failure while attempts remain (raises Retry); otherwise report it."""
    if transient and send.attempts < runtime.settings.send_max_attempts:
        delay = _retry_delay(runtime, send.attempts)
        if _finish(
            runtime,
            send.id,
            status="retrying",
            last_error=error[:2000],
            provider_response=response[:2000],
            next_attempt_at=utcnow() + delay,
        ):
            raise Retry(delay, error[:500])
        return  # erased meanwhile: stopped, not retried
    # The send's ID, never the recipient nor the provider's words (which often quote the address
    # or number): a log cannot be erased. Why it failed is the send's last_error.
    log.warning("%s send snd_%s failed for good (its last_error says why)", send.channel, send.id)
    now = utcnow()
    # Clearing the unique key lets a later check_unique or bulk run try this recipient again.
    _finish(
        runtime,
        send.id,
        status="failed",
        last_error=error[:2000],
        provider_response=response[:2000],
        failed_at=now,
        next_attempt_at=None,
        dedup_key=None,
    )


def _email_work(runtime: Runtime, send: DistributionSend) -> EmailWork:
    with runtime.db.read() as session:
        config = service.email_config(session, runtime, send.account_id)
        if config is None:
            raise Permanent("no email integration (the account's settings were removed)")
        if "\x00" in config.password:
            raise Permanent("the stored SMTP password cannot be decrypted: save the email integration again")
        account = session.get(Account, send.account_id)
        assert account is not None
        branding = parse_branding(account.branding, account.company_name)
        campaign = session.get(Campaign, send.campaign_id) if send.campaign_id is not None else None
        coupon_session = session.get(CouponSession, send.session_id) if send.session_id is not None else None
        if campaign is not None and campaign.deleted_at is not None:
            raise Permanent("the coupon was deleted before it could be sent")
        if coupon_session is not None and coupon_session.removed_at is not None:
            raise Permanent("the coupon session was removed before it could be sent")
        if campaign is not None and coupon_session is not None:
            content = CouponContent(
                title=campaign.title or campaign.name,
                subtitle=campaign.subtitle,
                description=campaign.description,
                image_url=campaign.image_url
                if campaign.image_url.startswith(("https://", "http://"))
                else "",
                link=runtime.url(session_path(campaign, coupon_session)),
            )
        elif send.directory_id is not None:
            content = _directory_content(runtime, session, send.directory_id)
        else:
            raise Permanent("the coupon or its session no longer exists")
        # The name given with this send; a reused session's name only when the sender gave none
        # and the session was made for this same address.
        greeting = send.firstname
        if not greeting and coupon_session is not None and coupon_session.email.lower() == send.recipient_key:
            greeting = coupon_session.firstname
    # Outside the transaction: resolving a tenant's host may wait on DNS.
    addresses = _connect_addresses(
        lambda: service.smtp_addresses(runtime, config), config.host, "SMTP host", SmtpFailure
    )
    message = compose(
        config,
        to_email=send.recipient,
        to_name=send.recipient_name,
        subject=send.subject,
        greeting_name=greeting,
        content=content,
        branding=branding,
        send_ref=f"snd_{send.id}",
    )
    return EmailWork(config, message, send.recipient, addresses)


def _directory_content(runtime: Runtime, session: Session, directory_id: int) -> CouponContent:
    row = repo.directory(session, directory_id)
    if row is None:
        raise Permanent("the directory no longer exists")
    return CouponContent(
        title=row.name,
        subtitle="",
        description=row.description,
        image_url="",
        link=runtime.url(f"/d/{row.code}"),
    )


@task(service.EMAIL_JOB)
def send_email(runtime: Runtime, payload: dict[str, Any]) -> None:
    def attempt(send: DistributionSend) -> Delivered:
        work = _email_work(runtime, send)
        answer = deliver(
            work.config,
            work.message,
            work.recipient,
            timeout=runtime.settings.smtp_timeout_seconds,
            connect_addresses=work.connect_addresses,
        )
        return Delivered(answer, str(work.message["Message-ID"]))

    _deliver(runtime, int(payload["send_id"]), attempt)


def _sms_work(runtime: Runtime, send: DistributionSend) -> SmsWork:
    with runtime.db.read() as session:
        found = service.sms_integration(session, send.account_id)
        if found is None:
            raise Permanent("no SMS integration (the account's settings were removed)")
        row = found[0]
        token = runtime.keyring.decrypt(row.token_encrypted)
        if token is None:
            raise Permanent("the stored SMS token cannot be decrypted: save the SMS integration again")
        provider_name, base_url, account_sid = row.provider, row.base_url, row.account_sid
    try:
        _, host, port = service.check_base_url(base_url)
    except ApiError:
        raise Permanent(
            "the SMS integration's base_url is not valid: save the SMS integration again"
        ) from None
    addresses = _connect_addresses(
        lambda: service.connect_addresses(runtime, host, port), host, "SMS provider", SmsError
    )
    provider = make_provider(
        provider_name,
        base_url,
        account_sid,
        token,
        timeout=runtime.settings.sms_timeout_seconds,
        connect_addresses=addresses,
    )
    return SmsWork(provider, send.recipient, send.sender, send.body)


def _connect_addresses(
    resolve: Callable[[], list[str]], host: str, what: str, failure: type[SmtpFailure] | type[SmsError]
) -> list[str]:
    """`resolve()` (service.connect_addresses or smtp_addresses): a private target fails for good, a
    name that does not resolve now is tried again later."""
    try:
        return resolve()
    except service.PrivateTarget as exc:
        raise Permanent(f"{what} not allowed: {exc}") from None
    except (OSError, UnicodeError) as exc:
        raise failure(f"{what} {host} does not resolve: {exc}", transient=True) from None


@on_dead(service.EMAIL_JOB)
@on_dead(service.SMS_JOB)
def send_died(runtime: Runtime, payload: dict[str, Any]) -> None:
    """A send whose job failed, or whose worker stopped, on every attempt: failed, not `sending`
    for ever (which also kept its recipient's duplicate-check key). The provider may have taken it
    meanwhile."""
    now = utcnow()
    with runtime.db.transaction() as session:
        session.execute(
            update(DistributionSend)
            .where(
                DistributionSend.id == int(payload["send_id"]),
                DistributionSend.status.not_in(("sent", "failed")),
            )
            .values(
                status="failed",
                last_error=(
                    "its delivery job failed or its worker stopped on every attempt; "
                    "it may or may not have gone out"
                ),
                failed_at=now,
                next_attempt_at=None,
                dedup_key=None,
                updated_at=now,
            )
        )


@task(service.SMS_JOB)
def send_sms(runtime: Runtime, payload: dict[str, Any]) -> None:
    def attempt(send: DistributionSend) -> Delivered:
        work = _sms_work(runtime, send)
        result = work.provider.send(work.to, work.sender, work.body)
        return Delivered(result.response, result.message_id)

    _deliver(runtime, int(payload["send_id"]), attempt)


def _deliver(runtime: Runtime, send_id: int, attempt: Callable[[DistributionSend], Delivered]) -> None:
    """One attempt at a send: the provider's answer recorded, or the failure (retried with growing
    waits when another attempt may succeed)."""
    tenant = _tenant(runtime, send_id)
    if tenant is None:
        return
    with tenant_slot(tenant):
        _attempt(runtime, send_id, attempt)


def _attempt(runtime: Runtime, send_id: int, attempt: Callable[[DistributionSend], Delivered]) -> None:
    send = _begin(runtime, send_id)
    if send is None:
        return
    try:
        delivered = attempt(send)
    except Permanent as exc:
        _failed(runtime, send, str(exc), "", transient=False)
        return
    except (SmtpFailure, SmsError) as exc:
        _failed(runtime, send, str(exc), exc.response, transient=exc.transient)
        return
    except Exception as exc:
        # A fault of ours (or data the message cannot carry): report it rather than leave the
        # send `sending` for ever.
        log.exception("%s send snd_%s could not be prepared", send.channel, send.id)
        # The tenant reads last_error: the exception's kind only, its text stays in the log.
        _failed(runtime, send, f"could not send: internal error ({type(exc).__name__})", "", transient=False)
        return
    _finish(
        runtime,
        send.id,
        status="sent",
        sent_at=utcnow(),
        provider_response=delivered.response[:2000],
        provider_message_id=delivered.message_id[:200],
        last_error="",
    )
