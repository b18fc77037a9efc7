"""The password-configuration email of a subaccount created without a password (the vendor's
behaviour): a one-time link to the dashboard's set-password page, sent through the subaccount's
email settings as a coupon email would be (its master's, else the server's).

Queued in the transaction that creates the subaccount (the outbox); the link's token is made only
when the email is sent, so no usable secret waits in the jobs table."""

from __future__ import annotations

import datetime as dt
import logging
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from sqlalchemy import func, select

from opencoupon.accounts import service as accounts
from opencoupon.accounts.sso import RESET_PURPOSE
from opencoupon.distribution import service as distribution
from opencoupon.distribution.mail import SmtpFailure, deliver, header_text
from opencoupon.distribution.tasks import tenant_slot
from opencoupon.errors import ApiError
from opencoupon.kit.clock import utcnow
from opencoupon.models import Account
from opencoupon.runtime import Runtime
from opencoupon.worker.registry import Retry, task

log = logging.getLogger("opencoupon.subaccounts")

PASSWORD_SETUP = "subaccount.password_setup"
# How long the emailed link works: long enough for an invitation that waits in an inbox.
LINK_TTL = dt.timedelta(days=3)
RETRY_AFTER = dt.timedelta(minutes=5)
SMTP_TIMEOUT = 20.0


def _message(sender_name: str, sender_email: str, to_email: str, link: str, master: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "Set the password of your coupon account"
    # An Address, not a formataddr() string the email package would parse again (a non-ASCII
    # name holding ", Evil <evil@…>" became a second address).
    message["From"] = Address(display_name=header_text(sender_name), addr_spec=sender_email)
    message["To"] = to_email
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender_email.rsplit("@", 1)[-1])
    message.set_content(
        f"An account was made for you by {master}.\n\n"
        f"Set its password here (the link works once, for {LINK_TTL.days} days):\n{link}\n\n"
        f"Then sign in with {to_email}.\n"
    )
    return message


@task(PASSWORD_SETUP)
def send_password_setup(runtime: Runtime, payload: dict[str, Any]) -> None:
    account_id = int(payload["account_id"])
    with runtime.db.read() as session:
        tenant = session.scalar(
            select(func.coalesce(Account.parent_id, Account.id)).where(Account.id == account_id)
        )
    if tenant is None:
        return
    # A share of the worker's threads, as for the tenant's coupon emails (Retry when all are
    # taken, before a link is made).
    with tenant_slot(tenant):
        _send(runtime, account_id)


def _send(runtime: Runtime, account_id: int) -> None:
    with runtime.db.transaction() as session:
        sub = session.get(Account, account_id)
        if sub is None or sub.password_hash:
            return  # gone, or a password was set meanwhile: nothing to configure
        try:
            # Blocked or expired (or its master is) since the create: a link made now would outlive
            # the block (a block ends the open links, an unblock does not bring them back).
            accounts.ensure_usable(session, sub, utcnow())
        except ApiError as refused:
            log.warning("sub_%s gets no password email: %s", sub.id, refused.description)
            return
        config = distribution.email_config(session, runtime, sub.id)
        if config is None:
            log.warning("no email settings: sub_%s gets no password email (use subaccount/reset/url)", sub.id)
            return
        master = session.get(Account, sub.parent_id) if sub.parent_id else None
        raw = accounts.issue_token(session, runtime.keyring, sub, purpose=RESET_PURPOSE, ttl=LINK_TTL)
        message = _message(
            config.sender_name,
            config.sender_email,
            sub.email,
            runtime.url(f"/dashboard/reset/{raw}"),
            (master.company_name or master.email) if master else config.sender_name,
        )
        email, created = sub.email, sub.created_at
    try:
        addresses = distribution.smtp_addresses(runtime, config)
        deliver(config, message, email, timeout=SMTP_TIMEOUT, connect_addresses=addresses)
    except (distribution.PrivateTarget, UnicodeError) as exc:  # refused, or a host no DNS can encode
        log.warning("password email for %s not sent: %s", email, exc)
    except OSError as exc:  # the name did not resolve: maybe later
        _retry_while_useful(created, email, f"SMTP host not resolved: {exc}")
    except SmtpFailure as exc:
        if not exc.transient:
            log.warning("password email for %s refused: %s", email, exc)
            return
        _retry_while_useful(created, email, str(exc))


def _retry_while_useful(created: dt.datetime, email: str, error: str) -> None:
    """Try again in a while (Retry), for as long as a link would have been valid had the first try
    worked; then give up (the master can still hand out subaccount/reset/url)."""
    if utcnow() - created >= LINK_TTL:
        log.warning("password email for %s not sent in %d days, given up: %s", email, LINK_TTL.days, error)
        return
    raise Retry(RETRY_AFTER, error)
