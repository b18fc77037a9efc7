"""Distribution calls: /v3/send/email, /v3/send/sms, the integrations and the send records."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from opencoupon.distribution import service
from opencoupon.distribution.schemas import (
    EmailIntegrationIn,
    SendEmail,
    SendSms,
    SendsQuery,
    SmsIntegrationIn,
)
from opencoupon.kit.endpoint import ApiContext, v3_endpoint, v4_endpoint
from opencoupon.kit.params import NoParams

router = APIRouter(tags=["Distribution"])


@v3_endpoint(router, ["/v3/send/email"], SendEmail, summary="Send a coupon by email")
def send_email(ctx: ApiContext, req: SendEmail) -> dict[str, Any]:
    """Queue an email with the coupon (or directory) link and QR code. Without `couponsession` a new
    session is created for the recipient. With `check_unique`, an address that already received
    this coupon gets nothing and the answer's `action` is `already_sent`. Delivery happens in the
    background: follow it with GET /v4/sends/{id}."""
    return service.send_email(ctx, req)


@v3_endpoint(router, ["/v3/send/sms"], SendSms, summary="Send a coupon by SMS")
def send_sms(ctx: ApiContext, req: SendSms) -> dict[str, Any]:
    """Queue an SMS to an E.164 `phone`. `{link}` in `message` is replaced by the coupon link;
    without it the link is appended. `sender` defaults to the integration's sender."""
    return service.send_sms(ctx, req)


@v4_endpoint(router, "GET", "/v4/integrations/email", NoParams, summary="Email (SMTP) settings")
def get_email_integration(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """The SMTP settings used for this account's emails (the password is never shown)."""
    return service.email_integration_view(ctx)


@v4_endpoint(router, "PUT", "/v4/integrations/email", EmailIntegrationIn, summary="Set email (SMTP) settings")
def put_email_integration(ctx: ApiContext, req: EmailIntegrationIn) -> dict[str, Any]:
    """Set this account's SMTP server. `tls`: none, starttls (default) or tls; `port` defaults to
    25, 587 or 465 accordingly. A field left out keeps its stored value; an empty string clears
    `username`, `password` or `sender_name`. The password is kept only for the same host, port,
    tls and username: a PUT changing one of them must give it again (error 200)."""
    return service.put_email_integration(ctx, req)


@v4_endpoint(router, "DELETE", "/v4/integrations/email", NoParams, summary="Remove email settings")
def delete_email_integration(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """Remove this account's SMTP settings; the answer shows what applies now (master or server)."""
    return service.delete_email_integration(ctx)


@v4_endpoint(router, "GET", "/v4/integrations/sms", NoParams, summary="SMS settings")
def get_sms_integration(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """The SMS provider settings used for this account (the token is never shown)."""
    return service.sms_integration_view(ctx)


@v4_endpoint(router, "PUT", "/v4/integrations/sms", SmsIntegrationIn, summary="Set SMS settings")
def put_sms_integration(ctx: ApiContext, req: SmsIntegrationIn) -> dict[str, Any]:
    """Set this account's Twilio-compatible SMS provider: `account_sid`, `auth_token`, default
    `sender`, and `base_url` (default https://api.twilio.com). A field left out keeps its stored
    value; an empty `sender` clears it. The token is kept only for the same base_url and
    account_sid: a PUT changing either must give it again (error 200)."""
    return service.put_sms_integration(ctx, req)


@v4_endpoint(router, "DELETE", "/v4/integrations/sms", NoParams, summary="Remove SMS settings")
def delete_sms_integration(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """Remove this account's SMS settings."""
    return service.delete_sms_integration(ctx)


@v4_endpoint(router, "GET", "/v4/sends", SendsQuery, summary="List email and SMS sends")
def list_sends(ctx: ApiContext, req: SendsQuery) -> dict[str, Any]:
    """Sends, newest first, 100 a page; filter by `couponsession`, `campaign`, `channel`, `status`.
    Each shows its status (queued, sending, retrying, sent, failed), attempts and the provider's answer."""
    return service.list_sends(ctx, req)


@v4_endpoint(router, "GET", "/v4/sends/{id}", NoParams, summary="One send")
def get_send(ctx: ApiContext, req: NoParams) -> dict[str, Any]:
    """One send (`snd_…`) with its status and the provider's answer."""
    return service.get_send(ctx, ctx.path_params["id"])
