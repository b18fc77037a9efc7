"""Distribution rules: who may send what to whom, with which settings; the send records."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencoupon.coupons.sessions import new_session, session_path
from opencoupon.db.session import upsert_insert
from opencoupon.distribution import repository as repo
from opencoupon.distribution.mail import DEFAULT_PORTS, SmtpConfig, address_ok, header_text
from opencoupon.distribution.schemas import (
    EmailIntegrationIn,
    SendEmail,
    SendSms,
    SendsQuery,
    SmsIntegrationIn,
)
from opencoupon.distribution.sms import DEFAULT_TWILIO_URL
from opencoupon.errors import ApiError, bad_value, missing
from opencoupon.kit import ids
from opencoupon.kit.dates import fmt
from opencoupon.kit.endpoint import ApiContext
from opencoupon.models import (
    Account,
    Campaign,
    CouponSession,
    DistributionSend,
    EmailIntegration,
    SmsIntegration,
)
from opencoupon.runtime import Runtime
from opencoupon.webhooks import ssrf
from opencoupon.worker.queue import enqueue

CAMPAIGN_NOT_FOUND = ApiError(502, "Campaign ID not found.")
# The vendor answers 502 for an unknown directory on send/email too (reference §3).
DIRECTORY_NOT_FOUND = ApiError(502, "Directory ID not found.")
SESSION_NOT_FOUND = ApiError(505, "Couponsession not found.")
SEND_NOT_FOUND = ApiError(404, "Send not found.", http_status=404)
NO_EMAIL = ApiError(
    104, "This account needs an email integration: configure one with PUT /v4/integrations/email."
)
NO_SMS = ApiError(103, "This account needs an SMS integration: configure one with PUT /v4/integrations/sms.")
INVALID_EMAIL = ApiError(305, "Email address is not valid.")

EMAIL_JOB = "distribution.email"
SMS_JOB = "distribution.sms"
SMS_MAX_LENGTH = 1600
LINK_PLACEHOLDER = "{link}"

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_PHONE_SEPARATORS = re.compile(r"[\s().-]")
_ALPHA_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_SID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^\[?[0-9A-Fa-f:.]+\]?$")


@dataclass
class Target:
    """What is being sent: a campaign (each recipient gets a coupon session) or a directory."""

    account_id: int
    public_id: str
    title: str
    campaign: Campaign | None = None
    directory_id: int | None = None
    directory_path: str = ""


# --- lookups -----------------------------------------------------------------------------------


def find_directory(ctx: ApiContext, raw: str) -> Target:
    """A `dir_…` target: its link is the directory's page; no coupon session is made. Unknown
    directories (and every one while directories are not part of the build) answer 502, as the
    vendor does on send/email."""
    directory_id = ids.parse_public_id(raw, "dir_", "campaign", DIRECTORY_NOT_FOUND)
    row = repo.directory(ctx.session, directory_id, ctx.scope)
    if row is None:
        raise DIRECTORY_NOT_FOUND
    return Target(
        account_id=row.account_id,
        public_id=f"dir_{row.id}",
        title=row.name,
        directory_id=row.id,
        directory_path=f"/d/{row.code}",
    )


def find_target(ctx: ApiContext, raw: str) -> Target:
    if raw.strip().startswith("dir_"):
        return find_directory(ctx, raw)
    campaign_id = ids.parse_public_id(raw, "cam_", "campaign", CAMPAIGN_NOT_FOUND)
    campaign = repo.campaign(ctx.session, campaign_id, ctx.scope(Campaign.account_id))
    if campaign is None:
        raise CAMPAIGN_NOT_FOUND
    return Target(
        account_id=campaign.account_id,
        public_id=f"cam_{campaign.id}",
        title=campaign.title or campaign.name,
        campaign=campaign,
    )


def normalize_email(raw: str) -> str:
    email = raw.strip()
    if not address_ok(email):
        raise INVALID_EMAIL
    return email


def normalize_phone(raw: str, name: str = "phone") -> str:
    phone = _PHONE_SEPARATORS.sub("", raw)
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    if not _E164.match(phone):
        raise ApiError(
            300,
            f"Invalid value in parameter: {name}. Use the international E.164 format: "
            "+, country code and number, e.g. +447911123456.",
        )
    return phone


def check_sender(raw: str) -> str:
    sender = raw.strip()
    if _ALPHA_SENDER.match(sender):
        return sender
    try:
        return normalize_phone(sender, "sender")
    except ApiError:
        raise ApiError(
            300,
            "Invalid value in parameter: sender. Use an E.164 number (e.g. +15005550006) or an "
            "alphanumeric sender ID of at most 11 letters, digits or spaces.",
        ) from None


# --- integrations ------------------------------------------------------------------------------


def _account(session: Session, account_id: int) -> Account:
    account = session.get(Account, account_id)
    assert account is not None
    return account


IntegrationRow = TypeVar("IntegrationRow", EmailIntegration, SmsIntegration)


def _own_or_master(
    session: Session, account_id: int, find: Callable[[Session, int], IntegrationRow | None]
) -> tuple[IntegrationRow, str] | None:
    """The account's own settings row, else its master's; with where it came from."""
    account = _account(session, account_id)
    for owner, source in ((account.id, "account"), (account.parent_id, "master")):
        if owner is None:
            continue
        row = find(session, owner)
        if row is not None:
            return row, source
    return None


def _delete_own(
    ctx: ApiContext,
    find: Callable[[Session, int], IntegrationRow | None],
    view: Callable[[ApiContext], dict[str, Any]],
) -> dict[str, Any]:
    """Remove the caller's own settings row (none is no error); answer what applies now."""
    row = find(ctx.session, ctx.account.id)
    if row is not None:
        ctx.session.delete(row)
        ctx.session.flush()
    return view(ctx)


def email_config(session: Session, runtime: Runtime, account_id: int) -> SmtpConfig | None:
    """The account's own SMTP settings, else its master's, else the server default (if any)."""
    found = _own_or_master(session, account_id, repo.email_integration)
    if found is not None:
        row, source = found
        password = runtime.keyring.decrypt(row.password_encrypted) if row.password_encrypted else ""
        return SmtpConfig(
            # Stored with brackets by older versions: connected to and verified bare.
            host=row.host.strip("[]"),
            port=row.port,
            tls_mode=row.tls_mode,
            username=row.username,
            # None: the server key changed since it was stored; sending reports it.
            password=password if password is not None else "\x00undecryptable",
            sender_email=row.sender_email,
            sender_name=row.sender_name,
            source=source,
        )
    s = runtime.settings
    if s.smtp_host and s.smtp_sender_email:
        return SmtpConfig(
            host=s.smtp_host.strip("[]"),
            port=s.smtp_port,
            tls_mode=s.smtp_tls if s.smtp_tls in DEFAULT_PORTS else "starttls",
            username=s.smtp_username,
            password=s.smtp_password,
            sender_email=s.smtp_sender_email,
            sender_name=s.smtp_sender_name,
            source="server",
        )
    return None


def sms_integration(session: Session, account_id: int) -> tuple[SmsIntegration, str] | None:
    """The account's own SMS settings, else its master's; with where they came from."""
    return _own_or_master(session, account_id, repo.sms_integration)


PRIVATE_HINT = " (OPENCOUPON_ALLOW_PRIVATE_WEBHOOKS=1 allows them)"


def _private_literal(host: str) -> bool:
    """`host` is an IP literal (in any form a resolver accepts) or name that is never public, by
    the same rules as webhook targets (webhooks.ssrf)."""
    if ssrf.is_local_name(host):
        return True
    literal = ssrf.literal_address(host)
    return literal is not None and not ssrf.address_allowed(literal)


def _check_host(runtime: Runtime, host: str, name: str) -> None:
    """Tenants may not point the server at private addresses (as for webhooks), unless allowed.
    Only literal addresses are refused here (no DNS lookup inside the transaction); names are
    resolved and checked again by the worker, which connects to the address it checked."""
    if not runtime.settings.allow_private_webhooks and _private_literal(host):
        raise ApiError(
            300,
            f"Invalid value in parameter: {name}. Private and loopback addresses are not allowed"
            + PRIVATE_HINT
            + ".",
        )


class PrivateTarget(Exception):
    """A tenant's SMTP host or SMS gateway is (or resolves to) a private address."""


def connect_addresses(runtime: Runtime, host: str, port: int) -> list[str]:
    """What the worker connects to for a tenant's `host`, in the resolver's order: it tries each
    in turn until one answers (a dual-stack provider's IPv6 address fails on an IPv4-only server,
    one of several A records may be down). Unless private targets are allowed, every address is
    checked public first and the connection goes only to those, not where a second lookup would
    point (DNS rebinding). Raises PrivateTarget, or OSError when the name does not resolve (a
    temporary failure)."""
    if runtime.settings.allow_private_webhooks:
        return ssrf.addresses_of(host, port)
    try:
        return ssrf.checked_addresses(host, port)
    except ssrf.UnsafeTarget:
        raise PrivateTarget(
            f"{host} is or resolves to a private or loopback address" + PRIVATE_HINT.replace("them", "it")
        ) from None


def smtp_addresses(runtime: Runtime, config: SmtpConfig) -> list[str]:
    """Where to connect for `config`, in order: the server's own SMTP settings are trusted as
    given (a local relay may be on loopback); a tenant's host is checked as connect_addresses
    does."""
    if config.source == "server":
        return ssrf.addresses_of(config.host, config.port)
    return connect_addresses(runtime, config.host, config.port)


def email_integration_view(ctx: ApiContext) -> dict[str, Any]:
    own = repo.email_integration(ctx.session, ctx.account.id)
    if own is not None:
        return {
            "configured": True,
            "source": "account",
            "host": own.host,
            "port": own.port,
            "tls": own.tls_mode,
            "username": own.username,
            "password_set": bool(own.password_encrypted),
            "sender_email": own.sender_email,
            "sender_name": own.sender_name,
            "updated_date_utc": fmt(own.updated_at),
        }
    config = email_config(ctx.session, ctx.runtime, ctx.account.id)
    if config is None:
        return {"configured": False, "source": ""}
    # Inherited settings are not the caller's to read in full.
    return {
        "configured": True,
        "source": config.source,
        "sender_email": config.sender_email,
        "sender_name": config.sender_name,
    }


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def host_ok(host: str) -> bool:
    """A DNS name (labels of letters, digits, '_' and inner hyphens, a trailing dot allowed) or an
    IP address (IPv6 in brackets or bare); not a partial bracket, an empty label, a zone index."""
    if host.startswith("[") or host.endswith("]") or ":" in host:
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if ":" not in inner or "%" in inner:
            return False
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return False
        return True
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def check_base_url(raw: str) -> tuple[str, str, int]:
    """An SMS provider's base URL: (scheme, host, port), or error 300 when malformed."""
    problem = bad_value("base_url", "Give an http(s) URL such as https://api.twilio.com.")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise problem from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise problem
    if port == 0:
        raise bad_value("base_url", "The port must be from 1 to 65535.")
    host = parts.hostname
    if not host_ok(f"[{host}]" if ":" in host else host):
        raise problem
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def _insert_missing(
    ctx: ApiContext, model: type[EmailIntegration] | type[SmsIntegration], **values: Any
) -> None:
    """The account's settings row with these values unless it exists (INSERT … ON CONFLICT DO
    NOTHING on the account): the caller then reads and updates it."""
    statement = upsert_insert(ctx.session, model).values(
        account_id=ctx.account.id, created_at=ctx.now, updated_at=ctx.now, **values
    )
    ctx.session.execute(statement.on_conflict_do_nothing(index_elements=["account_id"]))


def _secret_needed(name: str, changed: str) -> ApiError:
    """The stored password or token goes only where it went before: a PUT that points the settings
    elsewhere, or logs in as someone else, gives it again (else it could be read back by sending
    once through a server of the caller's choosing)."""
    return ApiError(
        200,
        f"Missing parameter: {name}. Give it again when {changed} change "
        "(the stored one is kept only for the same server and login).",
    )


def put_email_integration(ctx: ApiContext, req: EmailIntegrationIn) -> dict[str, Any]:
    host = req.host.strip()
    if not _HOST.match(host) or not host_ok(host):
        raise bad_value("host", "Give a host name or an IP address.")
    # Brackets are URL syntax, not part of the address: `[::1]` neither resolves nor matches a
    # certificate. The bare address is stored, connected to and verified.
    host = host.strip("[]")
    _check_host(ctx.runtime, host, "host")
    if not address_ok(req.sender_email):
        raise ApiError(305, "Email address is not valid: sender_email.")
    # Insert-if-missing, then update: parallel first PUTs are all answered (one row, the last
    # write wins), never a unique violation. What a first PUT leaves out is the default.
    _insert_missing(
        ctx,
        EmailIntegration,
        host=host,
        port=req.port or DEFAULT_PORTS[req.tls],
        tls_mode=req.tls,
        username="",
        password_encrypted="",
        sender_name="",
        sender_email=req.sender_email,
    )
    # Locked: the "give the password again" check and the write see the same row version (two
    # PUTs at once, one changing the host, one the password, must not combine).
    row = repo.email_integration(ctx.session, ctx.account.id, lock=True)
    assert row is not None
    # A field the PUT leaves out (or sends as null) keeps its stored value; "" clears a text.
    tls = req.tls if "tls" in req.model_fields_set else row.tls_mode
    # An omitted port is kept while the TLS mode is; with a new mode it is that mode's default.
    kept_port = row.port if tls == row.tls_mode else DEFAULT_PORTS[tls]
    port = req.port if req.port is not None else kept_port
    username = req.username if req.username is not None else row.username
    sender_name = header_text(req.sender_name) if req.sender_name is not None else row.sender_name
    endpoint = (host.lower(), port, tls, username)
    if (
        req.password is None
        and row.password_encrypted
        and endpoint != (row.host.strip("[]").lower(), row.port, row.tls_mode, row.username)
    ):
        raise _secret_needed("password", "host, port, tls or username")
    row.host = host
    row.tls_mode = tls
    row.port = port
    row.username = username
    if req.password is not None:
        row.password_encrypted = ctx.runtime.keyring.encrypt(req.password) if req.password else ""
    row.sender_email = req.sender_email
    row.sender_name = sender_name
    row.updated_at = ctx.now
    ctx.session.flush()
    return email_integration_view(ctx)


def delete_email_integration(ctx: ApiContext) -> dict[str, Any]:
    return _delete_own(ctx, repo.email_integration, email_integration_view)


def sms_integration_view(ctx: ApiContext) -> dict[str, Any]:
    found = sms_integration(ctx.session, ctx.account.id)
    if found is None:
        return {"configured": False, "source": ""}
    row, source = found
    if source != "account":
        return {"configured": True, "source": source, "provider": row.provider, "sender": row.sender}
    return {
        "configured": True,
        "source": source,
        "provider": row.provider,
        "base_url": row.base_url,
        "account_sid": row.account_sid,
        "auth_token_set": True,
        "sender": row.sender,
        "updated_date_utc": fmt(row.updated_at),
    }


def put_sms_integration(ctx: ApiContext, req: SmsIntegrationIn) -> dict[str, Any]:
    # A field the PUT leaves out (or sends as null) keeps its stored value: `base_url` (an empty
    # one is Twilio's), `sender` ("" clears it), the token.
    base_url = (req.base_url or DEFAULT_TWILIO_URL).rstrip("/") if req.base_url is not None else None
    if base_url is not None:
        scheme, hostname, _ = check_base_url(base_url)
        # The auth token goes in every request: never over plain HTTP to a real provider. Plain
        # HTTP is for a gateway on this machine or network, which only the development setting
        # allows.
        if scheme != "https" and not ctx.runtime.settings.allow_private_webhooks:
            raise bad_value("base_url", "Use https: the auth token is sent with every message.")
        _check_host(ctx.runtime, hostname, "base_url")
    if not _SID.match(req.account_sid):
        raise bad_value("account_sid", "Letters, digits, '-' and '_' only.")
    sender = check_sender(req.sender) if req.sender else req.sender  # None: kept, "": cleared
    if req.auth_token:
        _insert_missing(
            ctx,
            SmsIntegration,
            provider=req.provider,
            base_url=base_url or DEFAULT_TWILIO_URL,
            account_sid=req.account_sid,
            token_encrypted="",
            sender=sender or "",
        )
    row = repo.sms_integration(ctx.session, ctx.account.id, lock=True)  # as for email
    if row is None:
        # The first settings need the token.
        raise missing("auth_token")
    base_url = base_url or row.base_url
    if not req.auth_token and (base_url, req.account_sid) != (row.base_url, row.account_sid):
        raise _secret_needed("auth_token", "base_url or account_sid")
    row.provider = req.provider
    row.base_url = base_url
    row.account_sid = req.account_sid
    if req.auth_token:
        row.token_encrypted = ctx.runtime.keyring.encrypt(req.auth_token)
    if sender is not None:
        row.sender = sender
    row.updated_at = ctx.now
    ctx.session.flush()
    return sms_integration_view(ctx)


def delete_sms_integration(ctx: ApiContext) -> dict[str, Any]:
    return _delete_own(ctx, repo.sms_integration, sms_integration_view)


# --- sending -----------------------------------------------------------------------------------


def clean_name(raw: str) -> str:
    """One line (names go into email headers), at most what a session holds."""
    return " ".join(header_text(raw).split())[:100]


def email_subject(subject: str | None, title: str) -> str:
    """The subject of a coupon email (the API's and the bulk CLI's): given or the coupon's title,
    one line (mail.header_text), at most 300 characters."""
    return (header_text(subject or "") or header_text(title) or "Your coupon")[:300]


def dedup_key(channel: str, target_id: str, recipient_key: str) -> str:
    return f"{channel}:{target_id}:{recipient_key}"[:300]


def _reuse_session(session: Session, target: Target, code: str) -> CouponSession:
    if target.campaign is None:
        raise SESSION_NOT_FOUND
    found = repo.coupon_session_in_campaign(session, target.campaign.id, code)
    if found is None:
        raise SESSION_NOT_FOUND
    return found


def _fill_blank(row: CouponSession, now: dt.datetime, **values: str) -> None:
    """Details the sender knows complete a reused session; what it holds already is kept."""
    changed = False
    for name, value in values.items():
        if value and not getattr(row, name):
            setattr(row, name, value)
            changed = True
    if changed:
        row.updated_at = now


@dataclass
class Prepared:
    """A send record (and its coupon session), or the earlier send when nothing was sent."""

    send: DistributionSend
    coupon_session: CouponSession | None
    already_sent: bool = False


def record_send(
    session: Session,
    runtime: Runtime,
    target: Target,
    *,
    channel: str,
    recipient: str,
    recipient_key: str,
    firstname: str,
    lastname: str,
    unique: bool,
    session_code: str | None,
    session_source: str,
    origin: str,
    requested_by: int | None,
    now: dt.datetime,
    subject: str = "",
    sender: str = "",
    body_for: Callable[[str], str] | None = None,
) -> Prepared:
    """Create (or reuse) the coupon session, the send record and its job, in the caller's
    transaction. With `unique`, a recipient who already got this coupon gets nothing new."""
    if unique:
        earlier = repo.previous_send(
            session,
            channel,
            recipient_key,
            campaign_id=target.campaign.id if target.campaign else None,
            directory_id=target.directory_id,
        )
        if earlier is not None:
            return Prepared(earlier, _session_of(session, earlier), already_sent=True)
    key = dedup_key(channel, target.public_id, recipient_key) if unique else None
    firstname, lastname = clean_name(firstname), clean_name(lastname)
    contact = {"firstname": firstname, "lastname": lastname}
    contact["email" if channel == "email" else "phone"] = recipient
    # Only a unique send can lose a race on its key; others skip the savepoint's cost.
    guard: AbstractContextManager[Any] = session.begin_nested() if key else nullcontext()
    try:
        with guard:
            coupon_session: CouponSession | None = None
            if session_code:
                coupon_session = _reuse_session(session, target, session_code)
                _fill_blank(coupon_session, now, **contact)
            elif target.campaign is not None:
                coupon_session = new_session(
                    session,
                    target.campaign,
                    source=session_source,
                    now=now,
                    firstname=contact["firstname"],
                    lastname=contact["lastname"],
                    email=contact.get("email", ""),
                    phone=contact.get("phone", ""),
                )
            link = runtime.url(
                session_path(target.campaign, coupon_session)
                if target.campaign is not None and coupon_session is not None
                else target.directory_path
            )
            send = DistributionSend(
                account_id=target.account_id,
                requested_by=requested_by,
                channel=channel,
                origin=origin,
                campaign_id=target.campaign.id if target.campaign else None,
                directory_id=target.directory_id,
                session_id=coupon_session.id if coupon_session else None,
                recipient=recipient,
                recipient_key=recipient_key,
                # Each name is cut to 100 characters; together they must fit the column.
                recipient_name=f"{firstname} {lastname}".strip()[:200],
                firstname=firstname,
                subject=subject,
                body=body_for(link) if body_for is not None else "",
                sender=sender,
                status="queued",
                attempts=0,
                dedup_key=key,
                provider_message_id="",
                provider_response="",
                last_error="",
                created_at=now,
                updated_at=now,
            )
            session.add(send)
            session.flush()
    except IntegrityError:
        # A concurrent send of the same coupon to the same recipient won the unique key.
        if key is None:
            raise
        earlier = repo.previous_send(
            session,
            channel,
            recipient_key,
            campaign_id=target.campaign.id if target.campaign else None,
            directory_id=target.directory_id,
        )
        if earlier is None:
            raise
        return Prepared(earlier, _session_of(session, earlier), already_sent=True)
    job = EMAIL_JOB if channel == "email" else SMS_JOB
    enqueue(session, job, {"send_id": send.id}, max_attempts=runtime.settings.send_max_attempts + 2)
    return Prepared(send, coupon_session)


def _session_of(session: Session, send: DistributionSend) -> CouponSession | None:
    return session.get(CouponSession, send.session_id) if send.session_id is not None else None


def _answer(ctx: ApiContext, target: Target, prepared: Prepared, action: str) -> dict[str, Any]:
    cs = prepared.coupon_session
    if cs is not None and target.campaign is not None:
        url = ctx.url(session_path(target.campaign, cs))
    else:
        url = ctx.url(target.directory_path) if target.directory_path else ""
    send = prepared.send
    answer: dict[str, Any] = {
        "action": "already_sent" if prepared.already_sent else action,
        "campaign": target.public_id,
        "couponsession": cs.code if cs is not None else "",
        "sequenceid": str(cs.id) if cs is not None else "",
        "url": url,
        "send": {
            "ID": f"snd_{send.id}",
            "status": send.status,
            "created_date_utc": fmt(send.created_at),
        },
    }
    if prepared.already_sent:
        answer["message"] = "This recipient already received this coupon; nothing was sent."
    return answer


def _record_api_send(
    ctx: ApiContext,
    target: Target,
    req: SendEmail | SendSms,
    *,
    channel: str,
    recipient: str,
    recipient_key: str,
    subject: str = "",
    sender: str = "",
    body_for: Callable[[str], str] | None = None,
) -> Prepared:
    """record_send for a /v3/send call: names, uniqueness and session from the request, asked for
    by the caller; a new session's source is the channel."""
    return record_send(
        ctx.session,
        ctx.runtime,
        target,
        channel=channel,
        recipient=recipient,
        recipient_key=recipient_key,
        firstname=req.firstname or "",
        lastname=req.lastname or "",
        unique=req.check_unique,
        session_code=req.couponsession,
        session_source=channel,
        origin="api",
        requested_by=ctx.account.id,
        now=ctx.now,
        subject=subject,
        sender=sender,
        body_for=body_for,
    )


def send_email(ctx: ApiContext, req: SendEmail) -> dict[str, Any]:
    email = normalize_email(req.email)
    target = find_target(ctx, req.campaign)
    if email_config(ctx.session, ctx.runtime, target.account_id) is None:
        raise NO_EMAIL
    if req.couponsession and target.campaign is None:
        raise SESSION_NOT_FOUND
    subject = email_subject(req.subject, target.title)
    prepared = _record_api_send(
        ctx, target, req, channel="email", recipient=email, recipient_key=email.lower(), subject=subject
    )
    return _answer(ctx, target, prepared, "email_sent")


def sms_text(message: str | None, title: str, link: str) -> str:
    """`{link}` in the message is replaced by the link; without it the link is appended."""
    text = message if message else f"{title}: {LINK_PLACEHOLDER}"
    if LINK_PLACEHOLDER in text:
        return text.replace(LINK_PLACEHOLDER, link)
    return f"{text.rstrip()} {link}"


def send_sms(ctx: ApiContext, req: SendSms) -> dict[str, Any]:
    phone = normalize_phone(req.phone)
    target = find_target(ctx, req.campaign)
    found = sms_integration(ctx.session, target.account_id)
    if found is None:
        raise NO_SMS
    sender = check_sender(req.sender) if req.sender else found[0].sender
    if not sender:
        raise missing("sender")
    if req.couponsession and target.campaign is None:
        raise SESSION_NOT_FOUND
    # The longest link this server makes, so the length check holds before the session exists.
    longest = ctx.url(f"/p/{'x' * 12}/{'x' * ids.SESSION_CODE_LENGTH}")
    if len(sms_text(req.message, target.title, longest)) > SMS_MAX_LENGTH:
        raise bad_value("message", f"The text with the link must fit in {SMS_MAX_LENGTH} characters.")
    prepared = _record_api_send(
        ctx,
        target,
        req,
        channel="sms",
        recipient=phone,
        recipient_key=phone,
        sender=sender,
        body_for=lambda link: sms_text(req.message, target.title, link),
    )
    return _answer(ctx, target, prepared, "sms_sent")


# --- send records ------------------------------------------------------------------------------


def public_send(row: DistributionSend, campaign_code: str = "", session_code: str = "") -> dict[str, Any]:
    return {
        "id": f"snd_{row.id}",
        "channel": row.channel,
        "origin": row.origin,
        # The account whose credentials asked for it (empty for the bulk command).
        "requested_by": str(row.requested_by) if row.requested_by is not None else "",
        "status": row.status,
        "campaign": f"cam_{row.campaign_id}" if row.campaign_id is not None else "",
        "campaign_code": campaign_code,
        "directory": f"dir_{row.directory_id}" if row.directory_id is not None else "",
        "couponsession": session_code,
        "recipient": row.recipient,
        "recipient_name": row.recipient_name,
        "subject": row.subject,
        "message": row.body,
        "sender": row.sender,
        "attempts": row.attempts,
        "provider_message_id": row.provider_message_id,
        "provider_response": row.provider_response,
        "last_error": row.last_error,
        "created_date_utc": fmt(row.created_at),
        "sent_date_utc": fmt(row.sent_at),
        "failed_date_utc": fmt(row.failed_at),
        "next_attempt_date_utc": fmt(row.next_attempt_at),
    }


def _public_sends(session: Session, rows: Sequence[DistributionSend]) -> list[dict[str, Any]]:
    """Sends as the API shows them, with their campaign and session codes."""
    campaigns, sessions = repo.codes_for(session, rows)
    return [
        public_send(r, campaigns.get(r.campaign_id or 0, ""), sessions.get(r.session_id or 0, ""))
        for r in rows
    ]


def sends_for_session(session: Session, coupon_session_id: int) -> list[dict[str, Any]]:
    """Every send of one coupon session, oldest first: the `sends` list of session data."""
    return _public_sends(session, repo.sends_of_session(session, coupon_session_id))


def list_sends(ctx: ApiContext, req: SendsQuery) -> dict[str, Any]:
    filters: list[ColumnElement[bool]] = []
    if req.campaign:
        target = find_target(ctx, req.campaign)
        if target.campaign is not None:
            filters.append(DistributionSend.campaign_id == target.campaign.id)
        else:
            filters.append(DistributionSend.directory_id == target.directory_id)
    if req.couponsession:
        cs = repo.coupon_session_by_code(ctx.session, req.couponsession, ctx.scope(CouponSession.account_id))
        if cs is None:
            raise SESSION_NOT_FOUND
        filters.append(DistributionSend.session_id == cs.id)
    if req.channel:
        filters.append(DistributionSend.channel == req.channel)
    if req.status:
        filters.append(DistributionSend.status == req.status)
    total, rows = repo.sends(
        ctx.session, ctx.scope(DistributionSend.account_id), filters=filters, page=req.page
    )
    return {
        "total": total,
        "page": req.page,
        "per_page": repo.PAGE_SIZE,
        "sends": _public_sends(ctx.session, rows),
    }


def get_send(ctx: ApiContext, raw_id: str) -> dict[str, Any]:
    send_id = ids.parse_public_id(raw_id, "snd_", "id", SEND_NOT_FOUND)
    row = repo.send_in_scope(ctx.session, send_id, ctx.scope(DistributionSend.account_id))
    if row is None:
        raise SEND_NOT_FOUND
    campaigns, sessions = repo.codes_for(ctx.session, [row])
    return public_send(row, campaigns.get(row.campaign_id or 0, ""), sessions.get(row.session_id or 0, ""))
