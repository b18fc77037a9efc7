"""RFC 8291 message encryption for Web Push (`aes128gcm`, RFC 8188 framing, one record).

Written out here (about twenty lines over `cryptography`) rather than calling http_ece per
message: it is the same construction, about three times faster on this machine, and the tests
decrypt what it produces with http_ece itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

RECORD_SIZE = 4096
# One record of RECORD_SIZE holds the 86-byte header, the 16-byte tag and the padding delimiter.
MAX_PLAINTEXT = RECORD_SIZE - 17 - 86
_CURVE = ec.SECP256R1()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def encrypt(plaintext: bytes, ua_public: bytes, auth_secret: bytes) -> bytes:
    """The request body for one subscriber: header (salt, record size, sender key) + one record."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError("push payload too large")
    receiver = ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, ua_public)
    sender = ec.generate_private_key(_CURVE)
    as_public = sender.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    shared = sender.exchange(ec.ECDH(), receiver)
    # HKDF(auth_secret, ECDH secret, "WebPush: info" || ua_public || as_public), 32 bytes.
    prk_key = _hmac(auth_secret, shared)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_public + as_public + b"\x01")
    salt = os.urandom(16)
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    # The 0x02 delimiter marks the last (only) record.
    ciphertext = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    return salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public + ciphertext
