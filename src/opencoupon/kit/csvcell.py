"""CSV exports that are safe to open in a spreadsheet."""

from __future__ import annotations

import re

_PHONE_LIKE = re.compile(r"^[0-9 ()./-]*$")


def csv_cell(value: object) -> str:
    """A CSV value that spreadsheets show as text: consumer-typed values starting with = + - @ would
    otherwise run as formulas when the export is opened (CSV injection)."""
    text_value = "" if value is None else str(value)
    if text_value[:1] not in ("=", "+", "-", "@", "\t", "\r"):
        return text_value
    # Phone numbers such as +32 2 123 45 67 stay as they are.
    if text_value[:1] in "+-" and _PHONE_LIKE.match(text_value[1:]):
        return text_value
    return "'" + text_value
