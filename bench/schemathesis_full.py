"""R14 in full (reliability-performance.md §6.1), on demand: schemathesis over the whole OpenAPI
document of a running server, with a real account's credentials, every meaningful check (the list
and the one exclusion are in tests/test_foundation_schemathesis.py), at least 100 examples per
operation, and the stateful phase (chains along the links schemathesis infers). Prints the
failures per check and exits 1 when there is any.

    opencoupon migrate && opencoupon demo && OPENCOUPON_RATE_LIMIT_PER_SECOND=0 opencoupon serve --port 8000 &
    python bench/schemathesis_full.py http://127.0.0.1:8000 var/demo-credentials.json [--examples 100]

The server must not rate-limit the run (OPENCOUPON_RATE_LIMIT_PER_SECOND=0). Takes about half an
hour on SQLite on two cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_foundation_schemathesis import (
    EXCLUDED_CHECKS,
    failure_details,
    failures_of,
    run_schemathesis,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "credentials", help="a JSON file with client_id and client_secret (opencoupon demo's)"
    )
    parser.add_argument(
        "--examples", type=int, default=100, help="examples per operation (R14: at least 100)"
    )
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    credentials = json.loads(Path(args.credentials).read_text())
    headers = {"X-Client-Id": credentials["client_id"], "X-Client-Secret": credentials["client_secret"]}
    print(f"checks: all except {', '.join(f'{name} ({why})' for name, why in EXCLUDED_CHECKS.items())}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        report, output = run_schemathesis(
            args.base_url.rstrip("/"),
            headers,
            Path(scratch),
            examples=args.examples,
            seed=args.seed,
            extra=[],
        )
    print(f"{report['test_cases']['generated']} test cases, {time.monotonic() - started:.0f} s")
    print("phases:", {name: phase["status"] for name, phase in report["phases"].items()})
    failures = failures_of(report)
    for kind, operations in sorted(failures.items()):
        print(f"\n{kind}: {len(operations)} operation(s)")
        print(failure_details(output, operations))
    for error in report["errors"]:
        print(f"\nerror: {error['title']} x {error['count']}")
    if not failures and not report["errors"]:
        print("R14: no failures")
    return 1 if failures or report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
