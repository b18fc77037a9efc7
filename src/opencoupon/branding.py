"""An account's branding on its consumer pages (coupons /p, loyalty cards /l, directories /d):
its logo at the top and its colours as CSS custom properties on <body>.

Account.branding is JSON text written by the dashboard's account page (`logo_url`,
`primary_color`, `background_color`, `text_color`); the older spellings the email distribution
reads (`logo`, `*_colour`, a `colors` object, `company_name`) are read too. Only hex colours and
http(s) logo URLs are ever used, whatever is stored, so branding cannot inject CSS or markup.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session
from sqlalchemy.orm.util import identity_key

from opencoupon.accounts.authcache import MISSING, AccountCache
from opencoupon.models import Account

if TYPE_CHECKING:
    from opencoupon.runtime import Runtime

HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
MAX_LOGO_URL = 500
# Cards on the consumer pages stay white: text lighter than this contrast against white is unreadable.
MIN_TEXT_CONTRAST = 3.0

_PRIMARY = ("primary_color", "primary_colour", "color", "colour")
_BACKGROUND = ("background_color", "background_colour")
_TEXT = ("text_color", "text_colour")


def colour_ok(value: str) -> bool:
    return bool(HEX_COLOUR.match(value))


def logo_url_ok(value: str) -> bool:
    """An absolute http(s) address with a host and no spaces or control characters."""
    if not value or len(value) > MAX_LOGO_URL or any(c.isspace() or ord(c) < 32 for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _rgb(colour: str) -> tuple[int, int, int]:
    digits = colour[1:]
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def luminance(colour: str) -> float:
    """WCAG relative luminance of a hex colour (0 black … 1 white)."""

    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else float(((c + 0.055) / 1.055) ** 2.4)

    r, g, b = (channel(v) for v in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def on_colour(background: str) -> str:
    """White or near-black, whichever reads better on `background` (button labels)."""
    return "#ffffff" if contrast(background, "#ffffff") >= contrast(background, "#1d2330") else "#1d2330"


@dataclass(frozen=True)
class PageBrand:
    """What an account set explicitly; an empty field keeps the page's default look."""

    logo_url: str = ""
    company: str = ""
    primary: str = ""
    background: str = ""
    text: str = ""

    @property
    def css(self) -> str:
        """Custom properties for a style attribute (app.css reads --accent, --bg and --fg)."""
        parts = []
        if self.primary:
            parts += [f"--accent:{self.primary}", f"--accent-fg:{on_colour(self.primary)}"]
        if self.background:
            parts.append(f"--bg:{self.background}")
        if self.text:
            parts.append(f"--fg:{self.text}")
        return ";".join(parts)


def raw_values(branding_json: str) -> dict[str, Any]:
    """The stored JSON as a dict, with a `colors`/`colours` object spread into `<name>_color` keys."""
    try:
        raw = json.loads(branding_json or "{}")
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    colours = raw.get("colors") or raw.get("colours")
    if isinstance(colours, dict):
        raw = {**{f"{k}_color": v for k, v in colours.items()}, **raw}
    return raw


def _first_colour(raw: dict[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        value = str(raw.get(name) or "").strip()
        if colour_ok(value):
            return value.lower()
    return ""


def read(branding_json: str, company: str) -> PageBrand:
    """The valid parts of the stored branding; anything else is ignored."""
    raw = raw_values(branding_json)
    logo = str(raw.get("logo_url") or raw.get("logo") or "").strip()
    text = _first_colour(raw, _TEXT)
    if text and contrast(text, "#ffffff") < MIN_TEXT_CONTRAST:
        text = ""  # unreadable on the white cards: the account form refuses it too
    return PageBrand(
        logo_url=logo if logo_url_ok(logo) else "",
        company=str(raw.get("company_name") or company or "")[:200],
        primary=_first_colour(raw, _PRIMARY),
        background=_first_colour(raw, _BACKGROUND),
        text=text,
    )


def page_brand(branding_json: str, company: str) -> PageBrand | None:
    """The brand for a page, or None when the account set no logo and no colour."""
    brand = read(branding_json, company)
    if not (brand.logo_url or brand.primary or brand.background or brand.text):
        return None
    return brand


# A page usually already holds the account row (the coupon page reads its time zone). Other pages
# take the brand from a short per-process cache (accounts/authcache.py): a change made in this
# process clears it when flushed and committed, one made by another process shows within a few
# seconds.
_brands: AccountCache[int, PageBrand | None] = AccountCache(Account)


def for_account(session: Session, account_id: int) -> PageBrand | None:
    """The brand of the account that owns the page's campaign, card or directory."""
    loaded = session.identity_map.get(identity_key(Account, account_id))
    if isinstance(loaded, Account):
        return page_brand(loaded.branding, loaded.company_name)
    cached = _brands.get(account_id)
    if cached is not MISSING:
        return cached
    read_at = _brands.generation
    row = session.execute(
        select(Account.branding, Account.company_name).where(Account.id == account_id)
    ).first()
    brand = page_brand(row.branding, row.company_name) if row is not None else None
    _brands.put(account_id, brand, read_at)
    return brand


class Owned(Protocol):
    """A campaign, loyalty card or directory: whatever a consumer page shows."""

    @property
    def account_id(self) -> int: ...


def of(runtime: Runtime, owned: Owned) -> PageBrand | None:
    """The brand of the account owning `owned`, read in the object's own session when it is still
    attached (pages render inside their unit of work), otherwise in a short read."""
    session = object_session(owned)
    if session is not None:
        return for_account(session, owned.account_id)
    cached = _brands.get(owned.account_id)
    if cached is not MISSING:
        return cached
    with runtime.db.read() as fresh:
        return for_account(fresh, owned.account_id)


def clear_cache() -> None:
    _brands.clear()
