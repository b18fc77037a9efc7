"""Tenancy matrix: loyalty cards and their users (v3 and v4)."""

from __future__ import annotations

import matrix_factories as f
from tenancy import TenancyCase

CARD = "/v4/loyalty/loyalty-cards/{id}"

CASES = [
    TenancyCase("loyalty/info", "/v3/loyalty/info", "loyaltycard", f.card),
    TenancyCase("loyaltyusers/list", "/v3/loyaltyusers/list", "loyaltycard", f.card),
    TenancyCase(
        "loyaltyusers/create",
        "/v3/loyaltyusers/create",
        "loyaltycard",
        f.card,
        extra={"email": "matrix-join@example.com", "password": "longpassword1"},
    ),
    TenancyCase(
        "loyaltyusers/search", "/v3/loyaltyusers/search", "loyaltycard", f.card, extra={"search": "bob"}
    ),
    TenancyCase(
        "loyaltyusers/update card",
        "/v3/loyaltyusers/update",
        "loyaltycard",
        f.card_of_holder,
        extra={"user": "{user}", "points": "1"},
    ),
    TenancyCase(
        "loyaltyusers/update user",
        "/v3/loyaltyusers/update",
        "user",
        f.holder,
        extra={"loyaltycard": "{card}", "points": "1"},
    ),
    TenancyCase(
        "loyaltyusers/link card",
        "/v3/loyaltyusers/link",
        "loyaltycard",
        f.card_of_holder,
        extra={"user": "{user}"},
    ),
    TenancyCase(
        "loyaltyusers/link user", "/v3/loyaltyusers/link", "user", f.holder, extra={"loyaltycard": "{card}"}
    ),
    TenancyCase("loyalty card get (v4)", CARD, None, f.card, method="GET"),
    TenancyCase("loyalty card patch (v4)", CARD, None, f.card, method="PATCH", extra={"name": "Renamed"}),
    TenancyCase("loyalty card copy (v4)", CARD + "/copy", None, f.card, extra={"name": "Copy"}),
    TenancyCase("loyalty card stats (v4)", CARD + "/stats", None, f.card, method="GET"),
    TenancyCase(
        "loyalty card add user (v4)", CARD + "/stats", None, f.card, extra={"email": "matrix-add@example.com"}
    ),
    TenancyCase(
        "loyalty card add users (v4)",
        CARD + "/stats/bulk",
        None,
        f.card,
        extra={"users": [{"email": "matrix-bulk@example.com"}]},
    ),
    TenancyCase("loyalty card user, card (v4)", CARD + "/stats/{user}", None, f.card_of_holder, method="GET"),
    TenancyCase(
        "loyalty card user, user (v4)",
        "/v4/loyalty/loyalty-cards/{card}/stats/{id}",
        None,
        f.holder,
        method="GET",
    ),
    TenancyCase("loyalty card delete (v4)", CARD, None, f.card, method="DELETE"),
]
