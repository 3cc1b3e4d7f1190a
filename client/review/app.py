"""The review web app: routes and pages over a ReviewState. Blocking work (SQLite, decoding, file
operations) runs on worker threads, so the event loop only moves bytes."""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from photodedup.client.actions import ActionError
from photodedup.client.report import human_bytes
from photodedup.client.review.security import CSRF_FIELD, Secrets, TokenMiddleware, csrf_form
from photodedup.client.review.state import KINDS, SORTS, ReviewError, ReviewState
from photodedup.client.review.thumbs import SIZES, ThumbnailCache, ThumbnailError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PAGE_SIZE = 50


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["bytes"] = human_bytes
    env.filters["date"] = lambda t: (
        dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if t else ""
    )
    env.filters["dirname"] = os.path.dirname
    env.filters["basename"] = os.path.basename
    return env


def _filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    kind = q.get("kind", "")
    sort = q.get("sort", "order")
    return {
        "kind": kind if kind in KINDS else "",
        "folder": q.get("folder", "")[:500],
        "sort": sort if sort in SORTS else "order",
        "unresolved_first": q.get("done_last", "1") != "0",
    }


def _query(filters: dict[str, Any], **extra: Any) -> str:
    items = {
        "kind": filters["kind"],
        "folder": filters["folder"],
        "sort": filters["sort"],
        "done_last": "1" if filters["unresolved_first"] else "0",
        **extra,
    }
    return urlencode({k: v for k, v in items.items() if v not in ("", None)})


def create_app(state: ReviewState, thumbs: ThumbnailCache, secrets: Secrets, hosts: list[str]) -> Starlette:
    """The ASGI app. `hosts` are the Host header names it answers to (DNS-rebinding guard)."""
    env = _env()

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            csrf=secrets.csrf, csrf_field=CSRF_FIELD, total=len(state), path=request.url.path, **ctx
        )
        return HTMLResponse(html, status_code=status)

    async def listing(request: Request) -> Response:
        filters = _filters(request)
        views = await run_in_threadpool(state.listing, **filters)
        pages = max(1, math.ceil(len(views) / PAGE_SIZE))
        try:
            number = min(max(1, int(request.query_params.get("page", "1"))), pages)
        except ValueError:
            number = 1
        shown = views[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
        return page(
            request,
            "list.html",
            views=shown,
            count=len(views),
            page=number,
            pages=pages,
            filters=filters,
            query=_query(filters),
            kinds=KINDS,
            sorts=SORTS,
            done=sum(v.done for v in views),
        )

    async def group(request: Request) -> Response:
        filters = _filters(request)
        key = request.path_params["key"]
        view = state.view(key)
        prev_key, next_key = await run_in_threadpool(state.neighbours, key, **filters)
        return page(
            request,
            "group.html",
            view=view,
            g=view.group,
            prev_key=prev_key,
            next_key=next_key,
            query=_query(filters),
            protected=view.group.protected,
        )

    async def compare(request: Request) -> Response:
        key = request.path_params["key"]
        view = state.view(key)
        try:
            a, b = int(request.query_params.get("a", "1")), int(request.query_params.get("b", "2"))
        except ValueError:
            raise HTTPException(400, "a and b are file numbers") from None
        ra, rb = state.member(key, a), state.member(key, b)
        return page(request, "compare.html", view=view, a=a, b=b, ra=ra, rb=rb, query=_query(_filters(request)))

    async def keep(request: Request) -> Response:
        form = await csrf_form(request)
        key = await run_in_threadpool(state.choose_keeper, request.path_params["key"], _int(form.get("number")))
        return RedirectResponse(f"/group/{key}?{_query(_filters(request))}", status_code=303)

    async def not_duplicates(request: Request) -> Response:
        form = await csrf_form(request)
        filters = _filters(request)
        key = request.path_params["key"]
        _, next_key = await run_in_threadpool(state.neighbours, key, **filters)
        numbers = [_int(v) for v in form.getlist("number")]
        remaining = await run_in_threadpool(state.not_duplicates, key, numbers)
        target = remaining[0] if remaining and numbers else next_key
        return RedirectResponse(
            f"/group/{target}?{_query(filters)}" if target else f"/?{_query(filters)}", status_code=303
        )

    async def done(request: Request) -> Response:
        form = await csrf_form(request)
        filters = _filters(request)
        key = request.path_params["key"]
        flag = form.get("done", "1") == "1"
        _, next_key = await run_in_threadpool(state.neighbours, key, **filters)
        await run_in_threadpool(state.set_done, key, flag)
        target = next_key if flag and next_key else key
        return RedirectResponse(f"/group/{target}?{_query(filters)}", status_code=303)

    async def image(request: Request) -> Response:
        md5, size = request.path_params["md5"], request.path_params["size"]
        if size not in SIZES:
            raise HTTPException(404, "no such size")
        rec = state.file(md5)
        if request.headers.get("if-none-match") == f'"{md5}-{size}"':
            return Response(status_code=304)
        try:
            path = await run_in_threadpool(thumbs.get, md5, rec.path, rec.size, rec.mtime, SIZES[size])
        except ThumbnailError as exc:
            raise HTTPException(404, str(exc)) from None
        # named by content: the same URL always means the same picture
        return FileResponse(
            path,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=31536000, immutable", "ETag": f'"{md5}-{size}"'},
        )

    async def view_full(request: Request) -> Response:
        rec = state.file(request.path_params["md5"])
        return page(request, "view.html", rec=rec)

    async def apply_form(request: Request) -> Response:
        done_count = sum(v.done for v in state.listing())
        return page(request, "apply.html", done_count=done_count, roots=state.scan.roots)

    async def apply_preview(request: Request) -> Response:
        form = await csrf_form(request)
        kinds = [k for k in form.getlist("kinds") if isinstance(k, str)]
        plan = await run_in_threadpool(
            state.plan,
            str(form.get("mode", "")),
            str(form.get("dest", "")).strip() or None,
            kinds,
            str(form.get("scope", "done")),
        )
        return page(request, "preview.html", plan=plan)

    async def apply_confirm(request: Request) -> Response:
        form = await csrf_form(request)
        result = await run_in_threadpool(state.confirm, str(form.get("plan", "")))
        return page(request, "applied.html", result=result, journal=result.journal.name)

    async def journals(request: Request) -> Response:
        return page(request, "journals.html", journals=await run_in_threadpool(state.journals))

    async def undo(request: Request) -> Response:
        form = await csrf_form(request)
        name = str(form.get("journal", ""))
        result = await run_in_threadpool(state.undo, name)
        return page(request, "undone.html", result=result, journal=name)

    async def review_error(request: Request, exc: Exception) -> Response:
        return page(request, "error.html", status=404 if isinstance(exc, ReviewError) else 400, message=str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return page(request, "error.html", status=exc.status_code, message=exc.detail)

    routes = [
        Route("/", listing),
        Route("/group/{key}", group),
        Route("/group/{key}/compare", compare),
        Route("/group/{key}/keep", keep, methods=["POST"]),
        Route("/group/{key}/not-duplicates", not_duplicates, methods=["POST"]),
        Route("/group/{key}/done", done, methods=["POST"]),
        Route("/image/{md5}/{size}", image),
        Route("/view/{md5}", view_full),
        Route("/apply", apply_form),
        Route("/apply/preview", apply_preview, methods=["POST"]),
        Route("/apply/confirm", apply_confirm, methods=["POST"]),
        Route("/journals", journals),
        Route("/journals/undo", undo, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts), Middleware(TokenMiddleware, secrets=secrets)]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={ReviewError: review_error, ActionError: review_error, HTTPException: http_error},
    )
    app.state.secrets = secrets
    return app


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise HTTPException(400, "expected a file number") from None
