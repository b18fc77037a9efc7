"""Secrets at rest: HMAC for lookups, Fernet for what must be shown again, argon2 for passwords."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

# The password hash of a person whose data was erased (privacy/): no argon2 hash looks like it, so
# no password matches it (verify_password answers False to a malformed hash), and a sign-in made
# before the erasure stops counting (directories.signin).
ERASED_PASSWORD = "!erased"

# OWASP minimum for argon2id: 19 MiB, 2 iterations, parallelism 1.
_password_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class Keyring:
    """Keys derived from the server secret key, one per purpose."""

    def __init__(self, secret_key: str) -> None:
        self._root = secret_key.encode()
        self._hmac_key = self._derive(b"hmac")
        self._fernet = Fernet(base64.urlsafe_b64encode(self._derive(b"fernet")))

    def _derive(self, purpose: bytes) -> bytes:
        return hmac.new(self._root, b"opencoupon:" + purpose, hashlib.sha256).digest()

    def digest(self, value: str) -> str:
        """HMAC-SHA256 hex of a high-entropy secret or token, for storage and lookup."""
        return hmac.new(self._hmac_key, value.encode(), hashlib.sha256).hexdigest()

    def encrypt(self, value: str) -> str:
        return self.encrypt_bytes(value.encode())

    def decrypt(self, token: str) -> str | None:
        data = self.decrypt_bytes(token)
        return None if data is None else data.decode()

    def encrypt_bytes(self, data: bytes) -> str:
        return self._fernet.encrypt(data).decode()

    def decrypt_bytes(self, token: str) -> bytes | None:
        try:
            return self._fernet.decrypt(token.encode())
        except InvalidToken:
            return None

    def derive_key(self, purpose: str) -> bytes:
        return self._derive(purpose.encode())


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def hash_password(password: str) -> str:
    return _password_hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        # Spend the same time as a real check so unknown emails are not revealed by timing.
        _password_hasher.hash(password)
        return False
    try:
        return _password_hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)
