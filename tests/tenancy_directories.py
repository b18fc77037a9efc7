"""Tenancy matrix: directories, their users and campaigns, and categories."""

from __future__ import annotations

import matrix_factories as f
from tenancy import TenancyCase

DIR = "/v4/directory/{id}"
USER = "/v4/directory/{directory}/users/{id}"
OF_USER = "/v4/directory/{id}/users/{user}"
CAT = "/v4/categories/{id}"

CASES = [
    TenancyCase("directory/info", "/v3/directory/info", "directory", f.directory),
    TenancyCase("directory/campaigns", "/v3/directory/campaigns", "directory", f.directory),
    TenancyCase("directoryusers/list", "/v3/directoryusers/list", "directory", f.directory),
    TenancyCase(
        "directoryusers/update directory",
        "/v3/directoryusers/update",
        "directory",
        f.directory_of_registration,
        extra={"user": "{user}", "status": "completed"},
    ),
    TenancyCase(
        "directoryusers/update user",
        "/v3/directoryusers/update",
        "user",
        f.registration,
        extra={"directory": "{directory}", "status": "completed"},
    ),
    TenancyCase(
        "directory/campaign/create directory",
        "/v3/directory/campaign/create",
        "directory",
        f.directory_of_campaign,
        extra={"template": "{campaign}", "name": "Copy"},
    ),
    TenancyCase(
        "directory/campaign/create template",
        "/v3/directory/campaign/create",
        "template",
        f.directory_with_campaign,
        extra={"directory": "{directory}", "name": "Copy"},
    ),
    TenancyCase(
        "directory/campaign/create category",
        "/v3/directory/campaign/create",
        "category",
        f.category_and_directory,
        extra={"directory": "{directory}", "template": "{campaign}", "name": "Copy"},
    ),
    TenancyCase(
        "directory/campaign/update campaign",
        "/v3/directory/campaign/update",
        "campaign",
        f.campaign_in_directory,
        extra={"status": "active"},
    ),
    TenancyCase(
        "directory/campaign/update directory",
        "/v3/directory/campaign/update",
        "directory",
        f.directory_listing_campaign,
        extra={"campaign": "{campaign}", "status": "active"},
    ),
    TenancyCase(
        "directory/campaign/update category",
        "/v3/directory/campaign/update",
        "category",
        f.category_and_listed_campaign,
        extra={"campaign": "{campaign}"},
    ),
    # v4 directories.
    TenancyCase("directory get (v4)", DIR, None, f.directory, method="GET"),
    TenancyCase("directory patch (v4)", DIR, None, f.directory, method="PATCH", extra={"name": "Renamed"}),
    TenancyCase(
        "directory patch campaigns (v4)",
        "/v4/directory/{directory}",
        "campaigns",
        f.directory_with_campaign,
        method="PATCH",
        extra={"campaigns": ["{id}"]},
    ),
    TenancyCase(
        "directory patch cards (v4)",
        "/v4/directory/{directory}",
        "loyalty_cards",
        lambda rt, owner: {**f.card(rt, owner), "directory": f.directory(rt, owner)["id"]},
        method="PATCH",
        extra={"loyalty_cards": ["{id}"]},
    ),
    TenancyCase(
        "directory create campaigns (v4)",
        "/v4/directory",
        "campaigns",
        f.campaign,
        extra={"name": "New", "campaigns": ["{id}"]},
    ),
    TenancyCase(
        "directory create cards (v4)",
        "/v4/directory",
        "loyalty_cards",
        f.card,
        extra={"name": "New", "loyalty_cards": ["{id}"]},
    ),
    TenancyCase("directory users (v4)", DIR + "/users", None, f.directory, method="GET"),
    TenancyCase(
        "directory add user (v4)",
        DIR + "/users",
        None,
        f.directory,
        extra={"email": "matrix-reg@example.com", "password": "longpassword1"},
    ),
    TenancyCase(
        "directory user get, directory (v4)", OF_USER, None, f.directory_of_registration, method="GET"
    ),
    TenancyCase("directory user get, user (v4)", USER, None, f.registration, method="GET"),
    TenancyCase(
        "directory user update, directory (v4)",
        OF_USER,
        None,
        f.directory_of_registration,
        extra={"block": False},
    ),
    TenancyCase("directory user update, user (v4)", USER, None, f.registration, extra={"block": False}),
    TenancyCase("directory user sso, directory (v4)", OF_USER + "/sso", None, f.directory_of_registration),
    TenancyCase("directory user sso, user (v4)", USER + "/sso", None, f.registration),
    TenancyCase(
        "directory user access, directory (v4)", OF_USER + "/access", None, f.directory_of_registration
    ),
    TenancyCase("directory user access, user (v4)", USER + "/access", None, f.registration),
    TenancyCase(
        "directory user revoke, directory (v4)",
        OF_USER + "/access",
        None,
        f.directory_of_registration,
        method="DELETE",
    ),
    TenancyCase("directory user revoke, user (v4)", USER + "/access", None, f.registration, method="DELETE"),
    TenancyCase("directory delete (v4)", DIR, None, f.directory, method="DELETE"),
    # Categories.
    TenancyCase("category get (v4)", CAT, None, f.category, method="GET"),
    TenancyCase("category patch (v4)", CAT, None, f.category, method="PATCH", extra={"name": "Renamed"}),
    TenancyCase(
        "category patch parent (v4)",
        "/v4/categories/{child}",
        "parent",
        lambda rt, owner: {**f.category(rt, owner), "child": f.category(rt, owner)["id"]},
        method="PATCH",
    ),
    TenancyCase(
        "category create parent (v4)", "/v4/categories", "parent", f.category, extra={"name": "Child"}
    ),
    TenancyCase("category delete (v4)", CAT, None, f.category, method="DELETE"),
]
