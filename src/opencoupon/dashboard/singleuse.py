"""Dashboard pages for single-use links: create a batch (up to 100,000) with a progress display,
download the links as CSV, and import recipients (one personal link each) from a CSV file.

Batches run in a background thread of this server process so the page can show progress; the
batch itself is singleuse.service.create_batch in one transaction (all or nothing), as for the API.
Job state lives in this process's memory for an hour: with several server processes behind a
load balancer, sticky sessions are needed for the progress page."""

from __future__ import annotations

import csv
import io
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon.coupons import repository as coupons_repo
from opencoupon.dashboard.common import FormProblem, api_context, csv_cell, no_store, page, runtime_of, text
from opencoupon.dashboard.security import PageError, require_login, verify_csrf
from opencoupon.errors import ApiError
from opencoupon.kit.clock import utcnow
from opencoupon.models import Account, Campaign
from opencoupon.runtime import Runtime
from opencoupon.singleuse import repository as singleuse_repo
from opencoupon.singleuse import service

router = APIRouter(include_in_schema=False)

IMPORT_MAX_ROWS = 10_000
IMPORT_MAX_BYTES = 5 * 1024 * 1024
JOB_TTL_SECONDS = 3600
CSV_COLUMNS = [
    "single_use_code",
    "single_use_url",
    "widget_validation_code",
    "custom_validation_code",
    "customid",
]
PREFILL_COLUMNS = ("firstname", "lastname", "email", "phone", "customid")


@dataclass
class Job:
    account_id: int
    kind: str
    campaign: str
    total: int
    done: int = 0
    state: str = "running"  # running, done, failed
    error: str = ""
    csv: str = ""
    started: float = field(default_factory=time.monotonic)


_jobs: dict[str, Job] = {}
_jobs_lock = threading.Lock()


def _remember(job: Job) -> str:
    key = secrets.token_urlsafe(12)
    with _jobs_lock:
        cutoff = time.monotonic() - JOB_TTL_SECONDS
        for old in [k for k, j in _jobs.items() if j.started < cutoff and j.state != "running"]:
            del _jobs[old]
        _jobs[key] = job
    return key


def _job(key: str, account: Account) -> Job:
    with _jobs_lock:
        job = _jobs.get(key)
    # Another person's job answers like a missing one.
    if job is None or job.account_id != account.id:
        raise PageError(404, "Not found", "This batch is unknown or has been forgotten (kept for one hour).")
    return job


def _links_csv(items: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow([csv_cell(item.get(name, "")) for name in CSV_COLUMNS])
    return out.getvalue()


# --- the page -------------------------------------------------------------------------------


def _campaign_choices(request: Request, account: Account) -> list[tuple[str, str]]:
    with api_context(request, account) as ctx:
        rows = coupons_repo.campaigns(ctx.session, ctx.scope(Campaign.account_id))
        return [(f"cam_{c.id}", c.name) for c in rows]


def _page(
    request: Request,
    account: Account,
    errors: list[str] | None = None,
    status_code: int = 200,
    values: dict[str, str] | None = None,
) -> Response:
    context = {
        "title": "Single-use links",
        "account": account,
        "campaigns": _campaign_choices(request, account),
        "errors": errors or [],
        "values": values or {"amount": "100", "code_length": "12", "code_type": "alphanumeric"},
        "max_amount": service.MAX_AMOUNT,
        "import_max": IMPORT_MAX_ROWS,
    }
    return page(request, "dashboard/singleuse.html", context, status_code=status_code)


@router.get("/dashboard/singleuse")
def singleuse_page(request: Request, account: Account = Depends(require_login)) -> Response:
    return _page(request, account)


# --- batches --------------------------------------------------------------------------------


def _run_batch(runtime: Runtime, job: Job, campaign_id: int, spec: service.BatchSpec) -> None:
    def progress(count: int) -> None:
        job.done += count

    try:
        with runtime.db.transaction() as session:
            campaign = singleuse_repo.campaign_by_id(session, campaign_id)
            if campaign is None:
                raise service.campaign_not_found()
            items = service.create_batch(
                session,
                campaign,
                spec,
                now=utcnow(),
                base_url=runtime.settings.public_base_url,
                progress=progress,
            )
        job.csv = _links_csv(items)
        job.done = job.total
        job.state = "done"
    except ApiError as err:
        job.error, job.state = err.description, "failed"
    except Exception:
        job.error, job.state = "The batch failed; nothing was created. Try again.", "failed"


def _check_batch(request: Request, account: Account, raw_campaign: str, spec: service.BatchSpec) -> int:
    with api_context(request, account) as ctx:
        campaign = service.resolve_campaign(ctx.session, ctx.scope(Campaign.account_id), raw_campaign)
        if spec.automated_codes:
            service.check_code_space(ctx.session, campaign, spec)
        return campaign.id


@router.post("/dashboard/singleuse/batches")
async def create_batch(request: Request, account: Account = Depends(require_login)) -> Response:
    form = await request.form()
    verify_csrf(request, form)
    values = {
        name: text(form, name, 100)
        for name in ("campaign", "amount", "code_prefix", "code_length", "code_type")
    }
    automated = text(form, "automated_codes") == "1"
    try:
        if not values["amount"]:
            raise FormProblem(["Amount: enter how many links to create."])
        spec = service.parse_batch(
            values["amount"],
            "normal",
            automated,
            values["code_prefix"],
            values["code_length"] if automated else None,
            values["code_type"] if automated else None,
        )
        campaign_id = await run_in_threadpool(_check_batch, request, account, values["campaign"], spec)
    except ApiError as err:
        return await run_in_threadpool(_page, request, account, [err.description], 422, values)
    except FormProblem as problem:
        return await run_in_threadpool(_page, request, account, problem.messages, 422, values)
    job = Job(account_id=account.id, kind="batch", campaign=values["campaign"], total=spec.amount)
    key = _remember(job)
    threading.Thread(
        target=_run_batch,
        args=(runtime_of(request), job, campaign_id, spec),
        daemon=True,
        name=f"batch-{key}",
    ).start()
    return RedirectResponse(f"/dashboard/singleuse/jobs/{key}", status_code=303)


def _job_context(request: Request, account: Account, key: str) -> dict[str, Any]:
    job = _job(key, account)
    percent = round(job.done * 100 / job.total) if job.total else 100
    return {"title": "Single-use batch", "account": account, "job": job, "key": key, "percent": percent}


@router.get("/dashboard/singleuse/jobs/{key}")
def job_page(request: Request, key: str, account: Account = Depends(require_login)) -> Response:
    return page(request, "dashboard/singleuse_job.html", _job_context(request, account, key))


@router.get("/dashboard/singleuse/jobs/{key}/progress")
def job_progress(request: Request, key: str, account: Account = Depends(require_login)) -> Response:
    """The progress fragment htmx polls every second while the batch runs."""
    return page(request, "dashboard/_singleuse_progress.html", _job_context(request, account, key))


@router.get("/dashboard/singleuse/jobs/{key}/links.csv")
def job_csv(request: Request, key: str, account: Account = Depends(require_login)) -> Response:
    job = _job(key, account)
    if job.state != "done":
        raise PageError(409, "Not ready", "The links are not ready yet.")
    response = Response(job.csv, media_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="single-use-{job.campaign}.csv"'
    return no_store(response)


# --- recipients from CSV --------------------------------------------------------------------


def _read_recipients(data: bytes) -> list[dict[str, str]]:
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FormProblem(["The file is not UTF-8 text. Save it as CSV (UTF-8)."]) from None
    reader = csv.DictReader(io.StringIO(decoded))
    headers = {(h or "").strip().lower() for h in (reader.fieldnames or [])}
    if not headers & set(PREFILL_COLUMNS):
        raise FormProblem([f"The first line must name the columns: any of {', '.join(PREFILL_COLUMNS)}."])
    rows = []
    for row in reader:
        clean = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
        if any(clean.get(c) for c in PREFILL_COLUMNS):
            rows.append(clean)
        if len(rows) > IMPORT_MAX_ROWS:
            raise FormProblem([f"At most {IMPORT_MAX_ROWS} recipients per file."])
    if not rows:
        raise FormProblem(["The file has no recipients."])
    return rows


def _import(
    request: Request, account: Account, raw_campaign: str, rows: list[dict[str, str]]
) -> tuple[str, int]:
    items = []
    created = 0
    with api_context(request, account, write=True) as ctx:
        campaign = service.resolve_campaign(ctx.session, ctx.scope(Campaign.account_id), raw_campaign)
        for number, row in enumerate(rows, start=2):
            try:
                prefill = service.clean_prefill(*(row.get(c) for c in PREFILL_COLUMNS))
                result = service.create_link(
                    ctx.session,
                    campaign,
                    prefill,
                    custom_code=None,
                    autovalcode=False,
                    duplicate_check=True,
                    expires_at=None,
                    now=ctx.now,
                    base_url=ctx.runtime.settings.public_base_url,
                )
            except ApiError as err:
                # All or nothing: one bad line rolls the whole file back.
                raise FormProblem([f"Line {number}: {err.description} Nothing was imported."]) from None
            created += int(result.created)
            items.append(service.link_answer(ctx.runtime.settings.public_base_url, campaign, result.link))
    return _links_csv(items), created


@router.post("/dashboard/singleuse/import")
async def import_recipients(request: Request, account: Account = Depends(require_login)) -> Response:
    # `async with` closes the uploaded file's temporary storage on every path, refusals included.
    async with request.form(max_part_size=IMPORT_MAX_BYTES) as form:
        verify_csrf(request, form)
        campaign = text(form, "campaign", 100)
        upload = form.get("file")
        try:
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise FormProblem(["Choose a CSV file to import."])
            data = await upload.read(IMPORT_MAX_BYTES + 1)
            if len(data) > IMPORT_MAX_BYTES:
                raise FormProblem(["The file is larger than 5 MB."])
            rows = _read_recipients(data)
            body, created = await run_in_threadpool(_import, request, account, campaign, rows)
        except ApiError as err:
            return await run_in_threadpool(_page, request, account, [err.description], 422)
        except FormProblem as problem:
            return await run_in_threadpool(_page, request, account, problem.messages, 422)
    job = Job(
        account_id=account.id,
        kind="import",
        campaign=campaign,
        total=len(rows),
        done=len(rows),
        state="done",
        csv=body,
    )
    job.error = "" if created == len(rows) else f"{len(rows) - created} recipients already had a link (kept)."
    key = _remember(job)
    return RedirectResponse(f"/dashboard/singleuse/jobs/{key}", status_code=303)
