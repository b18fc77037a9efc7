"""Fourth review of the coupons area, calls sent as the vendor's PHP samples send them: empty
`validation_value=`/`value=` form fields are not given, amounts round half-up to the cent, coupon/info
counts single-use links' own validation codes, and usage paging survives a removal between pages."""

from __future__ import annotations

from typing import Any

import httpx2

from conftest import TestAccount
from coupons_fixtures import bulk_sessions, create_campaign, session_status
from helpers import assert_error, assert_ok
from opencoupon.runtime import Runtime


def _form(account: TestAccount, path: str, **fields: Any) -> httpx2.Response:
    """A form POST, as PHP's curl with an array of fields sends it."""
    return account.client.post(path, data=fields, headers=account.headers)


# ---------------------------------------------------------------- 1. empty amount and value fields


def test_empty_amount_and_value_fields_are_not_given(account: TestAccount, runtime: Runtime) -> None:
    """A blank `validation_value=` or `value=` counted as an action: a misspelt flag plus the empty
    fields answered OK without validating, and the empty `value` wiped the stored one."""
    campaign = create_campaign(account)
    code, other = bulk_sessions(runtime, campaign["id"], 2)
    assert_ok(_form(account, "/v3/couponsession/update", couponsession=code, value="POS-77"))
    # `validation=true` is a misspelt `validate`: nothing is asked for, whatever the empty fields.
    for empties in ({"validation_value": "", "value": ""}, {"validation_value": ""}, {"value": " "}):
        refused = _form(account, "/v3/couponsession/update", couponsession=code, validation="true", **empties)
        assert_error(refused, 422, 200)
        many = _form(
            account,
            "/v3/couponsession/update/multiple",
            couponsessions=f"{code},{other}",
            validation="true",
            **empties,
        )
        assert_error(many, 422, 200)
    assert session_status(account, code)["value"] == "POS-77"
    # With a real action the empty fields leave the stored values alone.
    validated = assert_ok(
        _form(
            account,
            "/v3/couponsession/update",
            couponsession=code,
            validate="true",
            validation_value="",
            value="",
        )
    )
    assert validated["data"]["status"]["validations"] == "1"
    assert validated["data"]["status"]["value"] == "POS-77"
    assert_ok(_form(account, "/v3/couponsession/update", couponsession=code, validation_value="3.10"))
    kept = assert_ok(_form(account, "/v3/couponsession/update", couponsession=code, lock="true", value=""))
    assert (kept["data"]["status"]["value"], kept["data"]["status"]["validation_value"]) == ("POS-77", "3.10")
    many = assert_ok(
        _form(
            account, "/v3/couponsession/update/multiple", couponsessions=[code, other], lock="false", value=""
        )
    )
    assert many["amount_succeeded"] == "2"
    assert session_status(account, code)["value"] == "POS-77"


# ---------------------------------------------------------------- 4. half a cent rounds up


def test_an_amount_of_half_a_cent_rounds_up(account: TestAccount, runtime: Runtime) -> None:
    """`validation_value` was rounded half-to-even (12.505 → 12.50, 12.515 → 12.52), so the amounts
    a business reported disagreed by a cent with its tills, which round half-up."""
    campaign = create_campaign(account)
    (code,) = bulk_sessions(runtime, campaign["id"], 1)
    for sent, kept in (("12.505", "12.51"), ("12.515", "12.52"), ("12,504", "12.50"), ("0.005", "0.01")):
        answer = assert_ok(
            _form(account, "/v3/couponsession/update", couponsession=code, validation_value=sent)
        )
        assert answer["data"]["status"]["validation_value"] == kept, sent
    validated = assert_ok(
        _form(
            account, "/v3/couponsession/update", couponsession=code, validate="true", validation_value="7.125"
        )
    )
    assert validated["data"]["status"]["validation_value"] == "7.13"


# ---------------------------------------------------------------- 3. paging while links are removed


def test_paging_after_a_sequenceid_skips_no_session_when_one_is_removed(
    account: TestAccount, runtime: Runtime
) -> None:
    """`page` is an offset over the sessions not removed: a removal between two fetches moved the
    5,001st session onto page 1, already read, and page 2 came back empty. `after_sequenceid`
    (keyset) pages over what the client has seen, so the removal skips nothing."""
    campaign = create_campaign(account)
    codes = bulk_sessions(runtime, campaign["id"], 5002, source="single_use", link_status="activated")
    first = assert_ok(
        _form(account, "/v3/campaign/data", campaign=campaign["id"], page="1", after_sequenceid="")
    )
    assert first["amount_of_results"] == "5000"
    seen = [item["session"] for item in first["data"]]
    assert seen == codes[:5000]
    removed = assert_ok(_form(account, "/v3/singleuse/remove", single_use_code=codes[10]))
    assert removed["status"] == {"status": "OK"}
    last = first["data"][-1]["sequenceid"]
    second = assert_ok(
        _form(account, "/v3/campaign/data", campaign=campaign["id"], page="1", after_sequenceid=last)
    )
    assert [item["session"] for item in second["data"]] == codes[5000:]
    assert second["amount_of_results"] == "2"
    # The same for the other three calls, and a negative sequenceid is a bad value.
    assert_ok(_form(account, "/v3/couponsession/update", couponsession=codes[5001], validate="true"))
    validations = assert_ok(
        _form(account, "/v3/campaign/validations", campaign=campaign["id"], after_sequenceid=last)
    )
    assert [item["session"] for item in validations["data"]] == [codes[5001]]
    assert_error(
        _form(account, "/v3/campaign/opens", campaign=campaign["id"], after_sequenceid="-1"), 422, 300
    )
