"""A recipients CSV, read the same way by `opencoupon singleuse import` and the dashboard's import:
one personal link per row, pre-filled from its columns."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a link is asked for: the CLI starts without the database layer
    from opencoupon.singleuse.service import LinkRequest

RECIPIENT_COLUMNS = ["firstname", "lastname", "email", "phone", "customid", "customvalcode"]
_TRUE = {"1", "true", "yes", "y", "on"}
_IGNORED_IN_NAMES = re.compile(r"[\s_-]")


def column_key(name: str) -> str:
    """ "First Name", "first_name" and "firstname" all name the same column."""
    return _IGNORED_IN_NAMES.sub("", name.lower())


@dataclass
class Recipient:
    line: int  # the file's line the row ends on (a quoted cell may span several)
    cells: list[str]  # as written, padded to the header's width
    fields: dict[str, str]  # column_key -> the cell, stripped


class UnreadableRow(Exception):
    """A row the import refuses as a whole file: `message` says why, `line` where."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def read(lines: Iterable[str]) -> tuple[list[str], list[Recipient]]:
    """The header and the non-blank rows, with their line numbers and cells as written. A row with
    more non-empty cells than the header names is refused: the CLI writes the link's columns after
    the header's, so its extra cells would sit under the wrong names (and cutting it loses them)."""
    reader = csv.reader(lines)
    try:
        header = next(reader, [])
        keys = [column_key(name) for name in header]
        rows = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(header) and any(cell.strip() for cell in cells[len(header) :]):
                raise UnreadableRow(
                    reader.line_num, f"{len(cells)} cells but the header names {len(header)} columns"
                )
            padded = (cells + [""] * len(header))[: len(header)]
            fields = {key: value.strip() for key, value in zip(keys, padded, strict=True)}
            rows.append(Recipient(reader.line_num, padded, fields))
    except csv.Error as err:  # e.g. a cell over the csv module's limit (128 KiB)
        raise UnreadableRow(reader.line_num, f"this line cannot be read as CSV ({err})") from None
    return header, rows


def link_request(recipient: Recipient, *, autovalcode: bool) -> LinkRequest:
    """The link a row asks for (ApiError on a value the API would refuse): its pre-filled fields,
    its `customvalcode`, or a generated code with `autovalcode` (the option, or the row's column)
    when it gives none."""
    from opencoupon.singleuse import service

    row = recipient.fields
    prefill = service.clean_prefill(
        row.get("firstname"), row.get("lastname"), row.get("email"), row.get("phone"), row.get("customid")
    )
    custom = service.clean_custom_code(row.get("customvalcode"), None)
    wants_code = autovalcode or row.get("autovalcode", "").lower() in _TRUE
    return service.LinkRequest(prefill, custom, autovalcode=wants_code and custom is None)
