"""Idempotency-Key: the first answer is kept per client for 24 h and replayed to retries.

Kept answers are encrypted: some carry what is shown only once (a webhook's signing secret, a
subaccount's API secret, an SSO or password-reset token), and none may sit in the database in clear.
Large ones are compressed first (encrypted bytes do not compress): the answer of a 100,000-link
call, 16 MB of JSON, is kept in about 3 MB instead of 21 MB of ciphertext.

The key is claimed in the same transaction as the work itself, so a retry never has a second
effect: a concurrent duplicate waits for the first to commit (SQLite's write lock, or
PostgreSQL's unique index) and then gets its answer.
"""

from __future__ import annotations

import datetime as dt
import zlib

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from opencoupon.db.session import upsert_insert
from opencoupon.errors import ApiError
from opencoupon.kit.clock import utcnow
from opencoupon.kit.crypto import Keyring
from opencoupon.models import IdempotencyRecord

MAX_KEY_LENGTH = 255
# A kept answer compressed before it was encrypted starts with this (a Fernet token never does:
# it starts with "gAAAA"; an answer kept in clear before encryption, with "{" or "[").
COMPRESSED = "z1:"
COMPRESS_FROM_BYTES = 1024


def claim(
    session: Session, account_id: int, key: str, fingerprint: str, *, ttl: dt.timedelta
) -> IdempotencyRecord | None:
    """None when this request should run; the stored record when it is a retry."""
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise ApiError(300, "Invalid value in header: Idempotency-Key (1 to 255 characters).")
    now = utcnow()
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.account_id == account_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.created_at < now - ttl,
        )
    )
    inserted = session.execute(
        upsert_insert(session, IdempotencyRecord)
        .values(account_id=account_id, key=key, request_hash=fingerprint, created_at=now)
        .on_conflict_do_nothing()
        .returning(IdempotencyRecord.id)
    ).scalar()
    if inserted is not None:
        return None
    existing = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.account_id == account_id, IdempotencyRecord.key == key
        )
    )
    if existing is None or existing.response_status == 0:
        raise ApiError(307, "A request with this Idempotency-Key is still in progress.")
    if existing.request_hash != fingerprint:
        raise ApiError(306, "This Idempotency-Key was used with a different request.")
    return existing


def store(session: Session, keyring: Keyring, account_id: int, key: str, status: int, body: str) -> None:
    record = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.account_id == account_id, IdempotencyRecord.key == key
        )
    )
    if record is not None:
        record.response_status = status
        record.response_body = sealed(keyring, body)


def sealed(keyring: Keyring, body: str) -> str:
    """A kept answer as it is stored: encrypted, and compressed first when large."""
    data = body.encode()
    if len(data) < COMPRESS_FROM_BYTES:
        return keyring.encrypt_bytes(data)
    return COMPRESSED + keyring.encrypt_bytes(zlib.compress(data, 1))


def kept_answer(keyring: Keyring, record: IdempotencyRecord) -> str:
    """The answer `store` kept, in clear."""
    return opened(keyring, record.response_body)


def opened(keyring: Keyring, stored: str) -> str:
    """A kept answer's body as stored, in clear."""
    if stored.startswith(COMPRESSED):
        data = keyring.decrypt_bytes(stored.removeprefix(COMPRESSED))
        if data is not None:
            return zlib.decompress(data).decode()
    text = keyring.decrypt(stored)
    # Answers kept before they were encrypted (at most a day old) are plain JSON.
    return stored if text is None else text
