"""The application server key (VAPID, RFC 8292): generated on first use, kept in the database
(private half encrypted), and one signed token per push-service origin reused until near expiry."""

from __future__ import annotations

import base64
import threading
import time

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from opencoupon.kit.clock import utcnow
from opencoupon.models import VapidKey
from opencoupon.runtime import Runtime

KEY_NAME = "default"
TOKEN_LIFETIME = 12 * 3600
TOKEN_REFRESH_MARGIN = 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, private_raw: str, public_key: str, subject: str) -> None:
        self.public_key = public_key
        self._vapid = Vapid02.from_raw(private_raw.encode())
        self._subject = subject
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def authorization(self, origin: str) -> str:
        """`vapid t=<jwt>,k=<public key>` for a push service origin (cached per origin)."""
        now = time.time()
        with self._lock:
            cached = self._tokens.get(origin)
            if cached and cached[1] - now > TOKEN_REFRESH_MARGIN:
                return cached[0]
        expires = int(now) + TOKEN_LIFETIME
        header = str(self._vapid.sign({"aud": origin, "sub": self._subject, "exp": expires})["Authorization"])
        with self._lock:
            self._tokens[origin] = (header, float(expires))
        return header


def _generate() -> tuple[str, str]:
    vapid = Vapid02()
    vapid.generate_keys()
    private_value = vapid.private_key.private_numbers().private_value
    public = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(private_value.to_bytes(32, "big")), b64url(public)


def ensure_key(runtime: Runtime) -> VapidKey:
    """The stored key, created on first use. Opens its own transaction: never call it inside a
    request's transaction."""
    with runtime.db.read() as session:
        found = session.scalar(select(VapidKey).where(VapidKey.name == KEY_NAME))
    if found is not None:
        return found
    private_raw, public = _generate()
    try:
        with runtime.db.transaction() as session:
            row = VapidKey(
                name=KEY_NAME,
                private_key_encrypted=runtime.keyring.encrypt(private_raw),
                public_key=public,
                created_at=utcnow(),
            )
            session.add(row)
        return row
    except IntegrityError:
        # Another process created it first: theirs is the key.
        with runtime.db.read() as session:
            return session.scalars(select(VapidKey).where(VapidKey.name == KEY_NAME)).one()


_signers: dict[int, Signer] = {}
_signers_lock = threading.Lock()


def signer(runtime: Runtime) -> Signer:
    with _signers_lock:
        found = _signers.get(id(runtime.settings))
    if found is not None:
        return found
    key = ensure_key(runtime)
    private_raw = runtime.keyring.decrypt(key.private_key_encrypted)
    if private_raw is None:
        raise RuntimeError("the VAPID key cannot be decrypted: OPENCOUPON_SECRET_KEY changed")
    made = Signer(private_raw, key.public_key, runtime.settings.vapid_subject)
    with _signers_lock:
        return _signers.setdefault(id(runtime.settings), made)


def public_key(runtime: Runtime) -> str:
    return signer(runtime).public_key
