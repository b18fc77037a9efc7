"""Queries on webhook endpoints, messages, attempts and events."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from opencoupon.models import Event, WebhookAttempt, WebhookEndpoint, WebhookMessage


def endpoint(session: Session, scope: ColumnElement[bool], endpoint_id: int) -> WebhookEndpoint | None:
    return session.scalar(select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id, scope))


def endpoints(session: Session, scope: ColumnElement[bool]) -> Sequence[WebhookEndpoint]:
    return session.scalars(select(WebhookEndpoint).where(scope).order_by(WebhookEndpoint.id)).all()


def endpoints_of(session: Session, account_ids: Sequence[int]) -> Sequence[WebhookEndpoint]:
    return session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.account_id.in_(account_ids))
        .order_by(WebhookEndpoint.id)
    ).all()


def field_endpoint(session: Session, account_id: int) -> WebhookEndpoint | None:
    return session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.account_id == account_id, WebhookEndpoint.source == "account_field"
        )
    )


def event_by_public_id(session: Session, scope: ColumnElement[bool], public_id: str) -> Event | None:
    return session.scalar(select(Event).where(Event.public_id == public_id, scope))


def events_after(
    session: Session, account_id: int, since: dt.datetime, after: int, through: int, limit: int
) -> Sequence[Event]:
    """The account's next `limit` events since a time, by ID after `after` up to `through`."""
    return session.scalars(
        select(Event)
        .where(
            Event.account_id == account_id,
            Event.created_at >= since,
            Event.id > after,
            Event.id <= through,
        )
        .order_by(Event.id)
        .limit(limit)
    ).all()


def count_events_since(
    session: Session, account_id: int, since: dt.datetime, through: int, types: Sequence[str] | None
) -> int:
    query = select(func.count()).where(
        Event.account_id == account_id, Event.created_at >= since, Event.id <= through
    )
    if types is not None:
        query = query.where(Event.type.in_(types))
    return int(session.scalar(query) or 0)


def messages_for(session: Session, endpoint_id: int, event_ids: Sequence[int]) -> dict[int, WebhookMessage]:
    if not event_ids:
        return {}
    rows = session.scalars(
        select(WebhookMessage).where(
            WebhookMessage.endpoint_id == endpoint_id, WebhookMessage.event_id.in_(event_ids)
        )
    ).all()
    return {row.event_id: row for row in rows}


def attempts(
    session: Session, endpoint_id: int, *, event_id: int | None, before: int | None, limit: int
) -> Sequence[Any]:
    query = (
        select(WebhookAttempt, Event.public_id, Event.type)
        .join(Event, Event.id == WebhookAttempt.event_id)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
    )
    if event_id is not None:
        query = query.where(WebhookAttempt.event_id == event_id)
    if before is not None:
        query = query.where(WebhookAttempt.id < before)
    return session.execute(query.order_by(WebhookAttempt.id.desc()).limit(limit)).all()
