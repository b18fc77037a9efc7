"""Dashboard webhook pages over real HTTP: create (secret shown once), the delivery log with status
and response, replay one event and everything since a time, rotation, CSRF and tenancy."""

from __future__ import annotations

import re

from conftest import LiveServer, TestAccount
from dashboard_fixtures import YES, post_form, signed_in
from opencoupon.runtime import Runtime
from webhooks_fixtures import Receiver, Reply, drain, emit, receiver  # noqa: F401 - fixture

PAGE = "/dashboard/webhooks"


def _secret(html: str) -> str:
    match = re.search(r'id="secret" class="dash-secret" readonly value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def test_endpoint_log_replay_and_rotation(
    live_server: LiveServer,
    account: TestAccount,
    other_account: TestAccount,
    runtime: Runtime,
    receiver: Receiver,  # noqa: F811
) -> None:
    receiver.behaviour = lambda _p, _h, _b: Reply(status=200, body="thanks")
    with signed_in(live_server.url, account.email) as web:
        bad = post_form(web, PAGE, PAGE, {"url": "", "events": "*"})
        assert bad.status_code == 422
        assert "URL: enter" in bad.text
        bad = post_form(web, PAGE, PAGE, {"url": receiver.url + "/hook"})
        assert bad.status_code == 422
        assert "Events: choose" in bad.text
        created = post_form(web, PAGE, PAGE, {"url": receiver.url + "/hook", "events": ["coupon_validated"]})
        assert created.status_code == 201
        first_secret = _secret(created.text)
        endpoint_id = re.search(r'href="/dashboard/webhooks/(whe_\d+)"', created.text).group(1)  # type: ignore[union-attr]
        # Shown once: the endpoint page never repeats it.
        page = web.get(f"{PAGE}/{endpoint_id}")
        assert first_secret not in page.text
        assert "No deliveries yet." in page.text

        event_id = emit(runtime, account.id)
        drain(runtime)
        receiver.wait_for(1)
        page = web.get(f"{PAGE}/{endpoint_id}")
        assert f'data-delivery="{event_id}"' in page.text
        assert "200" in page.text
        assert "thanks" in page.text

        replayed = post_form(
            web, f"{PAGE}/{endpoint_id}", f"{PAGE}/{endpoint_id}/replay", {"event": event_id}
        )
        assert "1+deliveries+queued" in replayed.headers["location"]
        drain(runtime)
        assert [r.event_id for r in receiver.wait_for(2)] == [event_id, event_id]
        since = post_form(
            web, f"{PAGE}/{endpoint_id}", f"{PAGE}/{endpoint_id}/replay", {"since": "2000-01-01", **YES}
        )
        assert "1+deliveries+queued" in since.headers["location"]
        nonsense = post_form(
            web, f"{PAGE}/{endpoint_id}", f"{PAGE}/{endpoint_id}/replay", {"since": "yesterday", **YES}
        )
        assert "Invalid+format" in nonsense.headers["location"]

        rotated = post_form(
            web, f"{PAGE}/{endpoint_id}", f"{PAGE}/{endpoint_id}/rotate", {"grace_hours": "2", **YES}
        )
        assert rotated.status_code == 200
        assert _secret(rotated.text) != first_secret
        assert "previous secret keeps signing" in rotated.text
        too_long = post_form(
            web, f"{PAGE}/{endpoint_id}", f"{PAGE}/{endpoint_id}/rotate", {"grace_hours": "999", **YES}
        )
        assert "Grace+period" in too_long.headers["location"]
        # Not confirmed yet: a grace period it would refuse is refused before the question is
        # asked (a yes would only lead to the refusal), and the secret stays as it was.
        unasked = post_form(
            web, f"{PAGE}/{endpoint_id}", f"{PAGE}/{endpoint_id}/rotate", {"grace_hours": "200"}
        )
        assert unasked.status_code == 303, unasked.text
        assert "Grace+period" in unasked.headers["location"]
        assert "use+a+number+from+0+to+168" in unasked.headers["location"]
        asked = post_form(
            web, f"{PAGE}/{endpoint_id}", f"{PAGE}/{endpoint_id}/rotate", {"grace_hours": "100"}
        )
        assert asked.status_code == 200
        assert "Rotate the signing secret?" in asked.text

        saved = post_form(
            web,
            f"{PAGE}/{endpoint_id}",
            f"{PAGE}/{endpoint_id}/edit",
            {"events": ["coupon_opened", "coupon_claimed"], "description": "shop", "enabled": "1"},
        )
        assert "Saved" in web.get(saved.headers["location"]).text
        assert "coupon_opened, coupon_claimed" in web.get(PAGE).text

        assert web.post(f"{PAGE}/{endpoint_id}/rotate", data={"grace_hours": "1"}).status_code == 403
        assert web.post(PAGE, data={"url": receiver.url, "events": "*", "csrf_token": "x"}).status_code == 403

    with signed_in(live_server.url, other_account.email) as stranger:
        assert stranger.get(f"{PAGE}/{endpoint_id}").status_code == 404
        refused = post_form(stranger, PAGE, f"{PAGE}/{endpoint_id}/replay", {"event": event_id})
        assert refused.status_code == 404
        assert receiver.url not in stranger.get(PAGE).text

    with signed_in(live_server.url, account.email) as web:
        gone = post_form(web, f"{PAGE}/{endpoint_id}", f"{PAGE}/{endpoint_id}/delete", YES)
        assert gone.headers["location"] == PAGE
        assert web.get(f"{PAGE}/{endpoint_id}").status_code == 404


def test_an_endpoint_path_cannot_write_a_notice(live_server: LiveServer, account: TestAccount) -> None:
    """An ID holding `?done=…&` posted with a bad form once came back as a signed notice of its own
    words; the endpoint is looked up first, so a made-up ID is a 404 and writes nothing."""
    with signed_in(live_server.url, account.email) as web:
        forged = post_form(web, PAGE, f"{PAGE}/x%3Fdone%3DCall%2Bus%2Bnow%26/edit", {})
        assert forged.status_code == 404
        assert "location" not in forged.headers
        assert "Call us now" not in forged.text


def test_replay_since_checks_the_time_before_asking(live_server: LiveServer, account: TestAccount) -> None:
    """A time the replay cannot read is refused at once, not after a yes to the question."""
    created = account.client.post(
        "/v4/webhooks",
        json={"url": "https://example.com/hook", "events": ["coupon_validated"]},
        headers=account.headers,
    )
    assert created.status_code == 201, created.text
    endpoint = f"{PAGE}/{created.json()['id']}"
    with signed_in(live_server.url, account.email) as web:
        refused = post_form(web, endpoint, f"{endpoint}/replay", {"since": "yesterday"})
        assert refused.status_code == 303, refused.text
        assert "Invalid+format+in+parameter%3A+since" in refused.headers["location"]
        assert "Invalid format in parameter: since" in web.get(refused.headers["location"]).text
        asked = post_form(web, endpoint, f"{endpoint}/replay", {"since": "2000-01-01 10:00"})
        assert asked.status_code == 200
        assert "Send every event since this time again?" in asked.text
