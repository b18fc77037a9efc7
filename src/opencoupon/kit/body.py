"""The one v3 request parser: JSON, form, multipart or query string into one flat dict.

Form values stay strings; `key[]=a&key[]=b`, `key[0]=a` and repeated keys become lists, and
`key[name]=a` (PHP's http_build_query of an object) an object. Deeper keys nest as PHP's parse_str
nests them: `a[0][b]=1&a[1][b]=2` is a list of objects (`[{"b": "1"}, {"b": "2"}]`) while its indexes
run 0, 1, 2..., an object otherwise; past MAX_FORM_LEVELS brackets or MAX_NESTED_FORM_ITEMS such
keys the form is refused with 300. A form is read in the charset its
Content-Type names (UTF-8, ASCII, Latin-1 or Windows-1252; UTF-8 otherwise) and refused with 301
where its bytes are not of it. JSON `null` means "not given". An empty body, or an empty JSON array
(PHP's `json_encode([])`), means no parameters. A leading UTF-8 byte order mark is ignored.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from opencoupon.errors import ApiError
from opencoupon.kit import ids

log = logging.getLogger("opencoupon.api")

_INDEXED_KEY = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<index>[^\[\]]*)\]$")
_NESTED_KEY = re.compile(r"^(?P<name>[^\[\]]+)(?P<path>(?:\[[^\[\]]*\]){2,})$")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
UTF8_BOM = b"\xef\xbb\xbf"
# No parameter of any call nests deeper than a few levels; the checks below walk values
# recursively, and Python's JSON decoder itself fails past about 990 levels.
MAX_JSON_DEPTH = 32
# A form's own object is one level, as a JSON body's is: `a[0][b]` nests as deep as {"a": [{"b": …}]}.
MAX_FORM_LEVELS = MAX_JSON_DEPTH - 1
# Keys of two or more brackets in one form or query string: a bulk of 1,000 card users with all
# 15 fields is 15,000; every such key may make up to MAX_FORM_LEVELS containers.
MAX_NESTED_FORM_ITEMS = 20_000


def _add_keyed(target: dict[str, Any], name: str, index: str, value: Any) -> None:
    """`name[index]=value` with a named index: an object, as PHP reads `filter[email]=x`."""
    current = target.get(name)
    if isinstance(current, dict):
        current[index] = value
    elif current is None:
        target[name] = {index: value}
    else:
        # Mixed with list items (`a[]=x&a[k]=y`): PHP numbers those 0, 1, ...
        items = current if isinstance(current, list) else [current]
        target[name] = {**{str(i): item for i, item in enumerate(items)}, index: value}


def _add(target: dict[str, Any], key: str, value: Any) -> None:
    match = _INDEXED_KEY.match(key)
    if match:
        name, index = match.group("name"), match.group("index")
        current = target.get(name)
        if index and not ids.is_number(index):
            _add_keyed(target, name, index, value)
        elif isinstance(current, dict):
            current[index or str(len(current))] = value
        elif isinstance(current, list):
            current.append(value)
        elif current is None:
            target[name] = [value]
        else:
            target[name] = [current, value]
        return
    if key in target:
        current = target[key]
        # In place: copying the list on every repeat made `a&a&a…` quadratic (a 240 KB body
        # held the event loop for 20 s).
        if isinstance(current, list):
            current.append(value)
        else:
            target[key] = [current, value]
    else:
        target[key] = value


def _php_index(key: str) -> int | None:
    """The integer a key is to PHP (`0`, `12`; not `012`, `+1` or 19 digits and more), else None."""
    if not ids.is_number(key) or (key != "0" and key.startswith("0")) or len(key) > 18:
        return None
    return int(key)


def _list_index(segment: str, items: list[Any]) -> int | None:
    """The list position a bracket names where it keeps the list's indexes running 0, 1, 2...:
    an existing item or the next one (`[]`). None otherwise."""
    index = len(items) if segment == "" else _php_index(segment)
    return index if index is not None and index <= len(items) else None


def _as_object(items: list[Any]) -> dict[str, Any]:
    return {str(i): item for i, item in enumerate(items)}


def _new_container(segment: str) -> list[Any] | dict[str, Any]:
    """The container a key's next bracket goes into: a list when that bracket begins one."""
    return [] if segment in ("", "0") else {}


class _NestedForm:
    """Keys of two or more brackets, `name[s1][s2]...=value`, put into a form's dict one level a
    bracket, as PHP's parse_str builds arrays (a later key replaces what an earlier one left at the
    same place), counted and bounded."""

    def __init__(self, out: dict[str, Any]) -> None:
        self.out = out
        self.items = 0
        # PHP's next free index of each object (`[]` in one): one past its highest integer key.
        # The object is kept with it so that its id is not reused by another.
        self.next_free: dict[int, tuple[dict[str, Any], int]] = {}

    def add(self, name: str, segments: list[str], value: Any) -> None:
        if len(segments) > MAX_FORM_LEVELS:
            raise ApiError(300, f"Parameter {name[:40]} is nested more than {MAX_JSON_DEPTH} levels deep.")
        self.items += 1
        if self.items > MAX_NESTED_FORM_ITEMS:
            raise ApiError(
                300, f"More than {MAX_NESTED_FORM_ITEMS} nested parameters ({name[:40]}[...][...])."
            )
        container = self.out.get(name)
        if not isinstance(container, (list, dict)):
            container = _new_container(segments[0])
            self.out[name] = container
        # Where `container` is held, so that a list turned into an object can take its place.
        holder: Any = self.out
        place: int | str = name
        last = len(segments) - 1
        for position, segment in enumerate(segments):
            slot: int | str
            index = _list_index(segment, container) if isinstance(container, list) else None
            if isinstance(container, list) and index is not None:
                if index == len(container):
                    container.append(None)
                slot = index
            else:
                if isinstance(container, list):
                    # An index out of the 0, 1, 2... run: an object, as PHP's json_encode shows it.
                    container = _as_object(container)
                    holder[place] = container
                slot = self._object_key(container, segment)
            if position == last:
                container[slot] = value  # type: ignore[index]
                return
            child = container[slot]  # type: ignore[index]
            if not isinstance(child, (list, dict)):
                child = _new_container(segments[position + 1])
                container[slot] = child  # type: ignore[index]
            holder, place, container = container, slot, child

    def _object_key(self, container: dict[str, Any], segment: str) -> str:
        """The key `segment` names in an object (`[]`: the next free index), set to None if new."""
        _kept, next_free = self.next_free.get(id(container)) or (container, _highest_index(container) + 1)
        if segment == "":
            # Past keys a one-bracket key (`a[7]=x`) put in since: each is stepped over once.
            while str(next_free) in container:
                next_free += 1
        key = segment or str(next_free)
        index = _php_index(key)
        if index is not None:
            next_free = max(next_free, index + 1)
        self.next_free[id(container)] = (container, next_free)
        container.setdefault(key, None)
        return key


def _highest_index(container: dict[str, Any]) -> int:
    """The highest integer key of an object (-1 without one): looked for once an object."""
    return max((i for i in map(_php_index, container) if i is not None), default=-1)


def pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    nested = _NestedForm(out)
    for key, value in pairs:
        match = _NESTED_KEY.match(key) if "][" in key else None
        if match is None:
            _add(out, key, value)
        else:
            nested.add(match.group("name"), _BRACKET.findall(match.group("path")), value)
    return out


def json_depth(value: Any) -> int:
    """How deeply `value` nests lists and objects (without recursion: the value may be hostile)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def load_json(text: str | bytes) -> Any:
    """json.loads for request text: ValueError for what is not JSON, nested too deeply included."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ValueError("nested too deeply")
    return data


def parse_json_bytes(raw: bytes) -> dict[str, Any]:
    try:
        data = load_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(300, "Malformed JSON body.") from exc
    if data == []:
        # PHP's json_encode([]) of an empty parameter array, as the vendor's own samples send it.
        return {}
    if not isinstance(data, dict):
        raise ApiError(300, "The JSON body must be an object.")
    return {k: v for k, v in data.items() if v is not None}


class PayloadTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than {limit} bytes.", http_status=413)


class ClientGone(ApiError):
    """The client closed the connection before sending its whole body: nobody reads the answer,
    and nothing is worth logging beyond a debug line."""

    def __init__(self) -> None:
        super().__init__(400, "The request body was not sent in full.", http_status=400)


class EncodedBody(ApiError):
    def __init__(self, encoding: str) -> None:
        super().__init__(
            415,
            f"Content-Encoding {encoding[:40]} is not supported; send the body uncompressed.",
            http_status=415,
        )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body: PayloadTooLarge past `max_bytes`, ClientGone if the client hung up."""
    declared = request.headers.get("content-length")
    if declared and ids.is_number(declared) and int(declared) > max_bytes:
        raise PayloadTooLarge(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        log.debug("client disconnected while sending the body of %s", request.url.path)
        raise ClientGone() from None
    return b"".join(chunks)


# Charsets a form may name (web.SafeFormCharset's for multipart): none of them decodes bytes into
# text no database stores.
_FORM_CODECS = {"utf-8", "ascii", "iso8859-1", "cp1252"}


def _form_codec(content_type: str) -> str:
    """The codec a form body is read with: its declared charset if one of ours, else UTF-8."""
    _kind, options = parse_options_header(content_type)
    charset = options.get(b"charset")
    if charset:
        try:
            name = codecs.lookup(charset.decode("latin-1")).name
        except LookupError:
            return "utf-8"
        if name in _FORM_CODECS:
            return name
    return "utf-8"


def parse_form(text: str | bytes, codec: str = "utf-8") -> dict[str, Any]:
    """A query string or form body; 301 where it (or a %-escape in it) is not text of `codec`:
    the replacement character stored instead lost what was sent."""
    try:
        if isinstance(text, bytes):
            text = text.decode(codec)
        return pairs_to_dict(parse_qsl(text, keep_blank_values=True, encoding=codec, errors="strict"))
    except UnicodeDecodeError:
        raise ApiError(301, f"Invalid character in the parameters: they are not {codec} text.") from None


async def read_payload(request: Request, max_bytes: int) -> dict[str, Any]:
    """Parse query string and body into one dict; body values win over the query string."""
    raw = await read_body(request, max_bytes)
    payload = parse_form(request.url.query)
    content_type = request.headers.get("content-type", "").lower()
    # A byte order mark (Windows tools write one) would hide the JSON's `{` and begin a form's first key.
    body_bytes = raw.removeprefix(UTF8_BOM)
    stripped = body_bytes.strip()
    if not stripped:
        check_characters(payload)
        return payload
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise EncodedBody(encoding)
    if content_type.startswith("multipart/form-data"):
        body = await _parse_multipart(request, raw)
    elif content_type.startswith("application/x-www-form-urlencoded") and not stripped.startswith(b"{"):
        body = parse_form(body_bytes, _form_codec(content_type))
    elif stripped.startswith((b"{", b"[")) or "json" in content_type:
        body = parse_json_bytes(stripped)
    else:
        # Clients that send a form body with a wrong or missing Content-Type.
        body = parse_form(body_bytes, _form_codec(content_type))
    payload.update(body)
    check_characters(payload)
    return payload


def unstorable_text(text: str) -> bool:
    # NUL and lone surrogates cannot be stored as PostgreSQL text (nor round-trip through UTF-8).
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def holds_unstorable(value: Any) -> bool:
    """Whether a value (text, or lists and objects of them) holds characters no database stores."""
    if isinstance(value, str):
        return unstorable_text(value)
    if isinstance(value, list):
        return any(holds_unstorable(v) for v in value)
    if isinstance(value, dict):
        return any(unstorable_text(str(k)) or holds_unstorable(v) for k, v in value.items())
    return False


def check_characters(payload: dict[str, Any]) -> None:
    """Error 301 for a parameter holding characters no database can store."""
    for key, value in payload.items():
        if unstorable_text(key):
            raise ApiError(301, "Invalid character in a parameter name.")
        if holds_unstorable(value):
            raise ApiError(301, f"Invalid character in parameter: {key}.")


async def _parse_multipart(request: Request, raw: bytes) -> dict[str, Any]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    replay = Request(request.scope, receive)
    try:
        form = await replay.form()
    except Exception as exc:  # python-multipart raises several types on bad input
        raise ApiError(300, "Malformed multipart body.") from exc
    pairs: list[tuple[str, Any]] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            pairs.append((key, (await value.read()).decode("utf-8", "replace")))
        else:
            pairs.append((key, value))
    await form.close()
    return pairs_to_dict(pairs)
