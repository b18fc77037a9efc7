"""Property-based run over the whole OpenAPI spec (schemathesis): with valid credentials, no input,
valid or invalid, makes the server answer 5xx. Each operation gets a bounded number of examples per
mode, so the run stays well under a minute and covers every route later capabilities add."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from conftest import LiveServer, TestAccount

EXAMPLES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 8}


def test_no_input_makes_a_server_error(app: Any, live_server: LiveServer, account: TestAccount) -> None:
    schema = schemathesis.openapi.from_dict(app.openapi())
    failures: list[str] = []
    statuses: set[int] = set()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    for operation in operations:
        for mode, examples in EXAMPLES.items():

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                response = case.call(base_url=live_server.url, headers=account.headers, timeout=30)
                statuses.add(response.status_code)
                if response.status_code >= 500:
                    failures.append(
                        f"{case.operation.label}: {response.status_code} {response.text[:300]} <- {case!r}"
                    )

            run()
    assert not failures, "\n".join(failures[:20])
    # The run reached the handlers (successes) and the validation layer (refusals).
    assert 200 in statuses
    assert 422 in statuses
