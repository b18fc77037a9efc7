"""Dashboard pages for single-use links: create a batch (up to 100,000) with a progress display,
download the links as CSV, and import recipients (one personal link each) from a CSV file.

A batch is a row in singleuse_batches plus an outbox job (singleuse.batches / singleuse.tasks),
queued in one transaction. This process starts the job at once in a background thread; if it dies,
a worker runs the job when its lease runs out. The batch itself is singleuse.service.create_batch
in one transaction (all or nothing), as for the API. Progress and the CSV are read from the row,
so any server process can show them."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from opencoupon.coupons import repository as coupons_repo
from opencoupon.dashboard.common import FormProblem, api_context, no_store, page, runtime_of, text
from opencoupon.dashboard.security import PageError, checked_form, require_login, verify_csrf
from opencoupon.errors import ApiError
from opencoupon.kit.dates import fmt
from opencoupon.models import Account, Campaign, SingleUseBatch
from opencoupon.singleuse import batches, recipients, service, tasks

router = APIRouter(include_in_schema=False)

IMPORT_MAX_ROWS = 10_000
IMPORT_MAX_BYTES = 5 * 1024 * 1024
NOT_FOUND = PageError(
    404, "Not found", "There is no such batch in your account (finished ones are kept 7 days)."
)


# --- the page -------------------------------------------------------------------------------


def _recent(request: Request, account: Account) -> list[dict[str, Any]]:
    with api_context(request, account) as ctx:
        return [_view(b) for b in batches.recent(ctx.session, ctx.scope(SingleUseBatch.account_id))]


def _view(batch: SingleUseBatch) -> dict[str, Any]:
    return {
        "id": batches.public_id(batch),
        "kind": batch.kind,
        "campaign": f"cam_{batch.campaign_id}",
        "state": batch.status,
        "total": batch.total,
        "done": batch.done,
        "error": batch.message,
        "created": fmt(batch.created_at),
    }


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
        "recent": _recent(request, account),
    }
    return page(request, "dashboard/singleuse.html", context, status_code=status_code)


@router.get("/dashboard/singleuse")
def singleuse_page(request: Request, account: Account = Depends(require_login)) -> Response:
    return _page(request, account)


# --- batches --------------------------------------------------------------------------------


def _check_batch(request: Request, account: Account, raw_campaign: str, spec: service.BatchSpec) -> int:
    with api_context(request, account) as ctx:
        campaign = service.resolve_campaign(ctx.session, ctx.scope(Campaign.account_id), raw_campaign)
        if spec.automated_codes:
            service.check_code_space(ctx.session, campaign, spec)
        return campaign.id


@router.post("/dashboard/singleuse/batches")
async def create_batch(request: Request, account: Account = Depends(require_login)) -> Response:
    form = await checked_form(request)
    values = {
        name: text(form, name, 100)
        for name in ("campaign", "amount", "code_prefix", "code_length", "code_type")
    }
    automated = text(form, "automated_codes") == "1"
    values["automated_codes"] = "1" if automated else ""  # a refused form comes back as ticked
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
        key, job_id, batch_id = await run_in_threadpool(_queue, request, account, campaign_id, spec)
    except ApiError as err:
        return await run_in_threadpool(_page, request, account, [err.description], 422, values)
    except FormProblem as problem:
        return await run_in_threadpool(_page, request, account, problem.messages, 422, values)
    tasks.run_claimed(runtime_of(request), job_id, batch_id)
    return RedirectResponse(f"/dashboard/singleuse/jobs/{key}", status_code=303)


def _queue(
    request: Request, account: Account, campaign_id: int, spec: service.BatchSpec
) -> tuple[str, int, int]:
    with api_context(request, account, write=True) as ctx:
        # The batch belongs to the campaign's account (a main account may work in a subaccount's).
        campaign = ctx.session.get(Campaign, campaign_id)
        if campaign is None or campaign.deleted_at is not None:  # deleted since it was checked
            raise service.campaign_not_found()
        batch, job_id = batches.queue_batch(
            ctx.session,
            campaign.account_id,
            campaign_id,
            spec,
            now=ctx.now,
            runner=tasks.PROCESS_RUNNER,
            lease=tasks.lease(ctx.runtime),
        )
        return batches.public_id(batch), job_id, batch.id


def _job_context(request: Request, account: Account, key: str) -> dict[str, Any]:
    with api_context(request, account) as ctx:
        batch = batches.get(ctx.session, ctx.scope(SingleUseBatch.account_id), key)
        # Another account's batch answers like a missing one.
        if batch is None:
            raise NOT_FOUND
        job = _view(batch)
    percent = round(job["done"] * 100 / job["total"]) if job["total"] else 100
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
    with api_context(request, account) as ctx:
        batch = batches.get(ctx.session, ctx.scope(SingleUseBatch.account_id), key)
        if batch is None:
            raise NOT_FOUND
        if batch.status != "done" or batch.result is None:
            raise PageError(409, "Not ready", "The links are not ready yet.")
        body, campaign = batches.unpack(batch.result), f"cam_{batch.campaign_id}"
    response = Response(body, media_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="single-use-{campaign}.csv"'
    return no_store(response)


# --- recipients from CSV --------------------------------------------------------------------


@dataclass
class _Recipients:
    lines: list[int]  # each request's line in the file, for messages
    requests: list[service.LinkRequest]


def _refused(line: int, message: str) -> FormProblem:
    return FormProblem([f"Line {line}: {message} Nothing was imported."])


def _read_recipients(data: bytes) -> _Recipients:
    """The rows with something to pre-fill, read as `opencoupon singleuse import` reads them
    (singleuse/recipients.py: the same column names, `customvalcode` and `autovalcode` too, the
    same refusal of extra cells), each with its line in the file (blank and skipped rows still
    count, and a cell over several lines takes them all); every value checked before anything
    is written."""
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FormProblem(["The file is not UTF-8 text. Save it as CSV (UTF-8)."]) from None
    try:
        header, rows = recipients.read(io.StringIO(decoded))
    except recipients.UnreadableRow as err:
        raise _refused(err.line, err.message + ".") from None
    columns = recipients.RECIPIENT_COLUMNS
    if not {recipients.column_key(name) for name in header} & set(columns):
        raise FormProblem([f"The first line must name the columns: any of {', '.join(columns)}."])
    wanted = [row for row in rows if any(row.fields.get(c) for c in columns)]
    if len(wanted) > IMPORT_MAX_ROWS:
        raise FormProblem([f"At most {IMPORT_MAX_ROWS} recipients per file."])
    if not wanted:
        raise FormProblem(["The file has no recipients."])
    requests = []
    for row in wanted:
        try:
            requests.append(recipients.link_request(row, autovalcode=False))
        except ApiError as err:
            raise _refused(row.line, err.description) from None
    return _Recipients([row.line for row in wanted], requests)


def _import(request: Request, account: Account, raw_campaign: str, wanted: _Recipients) -> str:
    """All links of the file in one transaction, written in bulk (service.create_links): on SQLite
    it holds the write lock for a fraction of a second even for 10,000 recipients."""
    with api_context(request, account, write=True) as ctx:
        campaign = service.resolve_campaign(ctx.session, ctx.scope(Campaign.account_id), raw_campaign)
        try:
            links = service.create_links(
                ctx.session,
                campaign,
                wanted.requests,
                duplicate_check=True,
                expires_at=None,
                now=ctx.now,
                base_url=ctx.runtime.settings.public_base_url,
            )
        except service.RecipientRefused as refused:
            # All or nothing: one bad line rolls the whole file back.
            raise _refused(wanted.lines[refused.index], refused.error.description) from None
        created = sum(link.created for link in links)
        total = len(links)
        note = "" if created == total else f"{total - created} recipients already had a link (kept)."
        # Kept with the links, in the same transaction, so the result page works from any process.
        csv_text = batches.links_csv([link.answer for link in links])
        batch = batches.record_import(
            ctx.session, campaign.account_id, campaign.id, csv_text, total, note, ctx.now
        )
        return batches.public_id(batch)


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
            # Parsed off the event loop: a wide 5 MB file held every request for a second.
            wanted = await run_in_threadpool(_read_recipients, data)
            key = await run_in_threadpool(_import, request, account, campaign, wanted)
        except ApiError as err:
            return await run_in_threadpool(_page, request, account, [err.description], 422)
        except FormProblem as problem:
            return await run_in_threadpool(_page, request, account, problem.messages, 422)
    return RedirectResponse(f"/dashboard/singleuse/jobs/{key}", status_code=303)
