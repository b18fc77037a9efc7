"""Public identifiers: prefixed numeric IDs (cam_123), random codes, session codes."""

from __future__ import annotations

import re
import secrets
import string

from opencoupon.errors import ApiError, invalid_character, missing

LOWER_ALNUM = string.ascii_lowercase + string.digits
ALNUM = string.ascii_letters + string.digits
# For codes people read and type: no 0/O, 1/I/L look-alikes.
UNAMBIGUOUS = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"

SESSION_CODE_LENGTH = 21
SHORT_CODE_LENGTH = 6

PREFIXES = {
    "campaign": "cam_",
    "subaccount": "sub_",
    "directory": "dir_",
    "directory_user": "reg_",
    "category": "cat_",
    "event": "evt_",
    "loyalty_card": "",
    "package": "pac_",
    "webhook": "whe_",
}


def public_id(prefix: str, pk: int) -> str:
    return f"{prefix}{pk}"


_NUMERIC = re.compile(r"^[0-9]+$")
# The largest stored ID: the ID columns are `Integer`, int4 on PostgreSQL. A larger number was
# PostgreSQL's "value too large" (300) where SQLite, whose integers are 64-bit, found nothing.
MAX_ID = 2**31 - 1
# A number with more digits is not found without calling int() on it.
_MAX_ID_DIGITS = len(str(MAX_ID))


def is_number(text: str) -> bool:
    """ASCII digits only: `str.isdigit` also takes "²" (which int() refuses) and "٣" (which int()
    reads as 3), so an ID typed with them was a 500 or another object."""
    return text.isascii() and text.isdigit()


def stored_id(text: str) -> int:
    """`text` as an ID a row can have (ASCII digits, 1 to MAX_ID), else 0: a larger number is no
    row's on any database (PostgreSQL would refuse it in a query on an int4 column)."""
    if not is_number(text) or len(text.lstrip("0")) > _MAX_ID_DIGITS:
        return 0  # more digits than any ID (and int() of a huge number is slow)
    number = int(text)
    return number if 0 < number <= MAX_ID else 0


def parse_public_id(value: str, prefix: str, param: str, not_found_error: ApiError) -> int:
    """`cam_123` (or bare `123`) -> 123. Empty -> 200 (as if not sent: what the vendor's PHP makes
    of an empty field); malformed -> 301; a number no ID column holds (above MAX_ID) -> not found,
    on every database."""
    text = value.strip()
    if not text:
        raise missing(param)
    if prefix and text.startswith(prefix):
        text = text[len(prefix) :]
    if not _NUMERIC.match(text):
        raise invalid_character(param)
    number = stored_id(text)
    if number == 0:
        raise not_found_error  # well formed, but no object has it
    return number


def random_code(length: int, alphabet: str = LOWER_ALNUM) -> str:
    """Uniform over `alphabet` (rejection sampling: no modulo bias), one urandom call usually."""
    size = len(alphabet)
    limit = 256 - 256 % size
    out: list[str] = []
    while len(out) < length:
        for byte in secrets.token_bytes(length + length // 2 + 4):
            if byte < limit:
                out.append(alphabet[byte % size])
                if len(out) == length:
                    break
    return "".join(out)


def session_code() -> str:
    return random_code(SESSION_CODE_LENGTH)


def event_id() -> str:
    return "evt_" + random_code(20, ALNUM)


def numeric_client_id() -> str:
    """A 27-digit API key, as the vendor's subaccount sample shows."""
    return str(secrets.randbelow(9 * 10**26) + 10**26)


def client_secret() -> str:
    return random_code(40, ALNUM)
