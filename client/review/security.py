"""Who may talk to the review app: the person who started it.

- Every request needs the per-run secret: the printed URL carries it once as `?token=`, the app swaps it
  for an HttpOnly, SameSite=Strict cookie and redirects to the same page without it.
- Every state-changing request is a POST carrying the per-run CSRF token (form field or header), and
  a browser's Origin, when sent, must be this app's.
- The Host header must name this app (a DNS-rebinding page cannot borrow the browser's cookie).
- Responses forbid framing, sniffing, referrers (the URL may hold the token) and any script or style
  that is not served by the app itself.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp

CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class Secrets:
    """The per-run token and CSRF token, and the cookie that carries the token after the first visit."""

    def __init__(self, token: str, csrf: str, port: int) -> None:
        self.token = token
        self.csrf = csrf
        self.cookie = f"photodedup_review_{port}"  # one cookie per running app on this host

    def token_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.token.encode())  # type: ignore[union-attr]

    def csrf_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.csrf.encode())  # type: ignore[union-attr]


class TokenMiddleware(BaseHTTPMiddleware):
    """Refuses requests without the token; turns a `?token=` visit into the cookie."""

    def __init__(self, app: ASGIApp, secrets: Secrets) -> None:
        super().__init__(app)
        self.secrets = secrets

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        query_token = request.query_params.get("token")
        if query_token is not None and self.secrets.token_ok(query_token):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(self.secrets.cookie, self.secrets.token, httponly=True, samesite="strict", path="/")
        elif not self.secrets.token_ok(request.cookies.get(self.secrets.cookie)):
            response = PlainTextResponse(
                "403 Forbidden: open the URL that `photodedup review` printed (it carries this run's token).\n",
                status_code=403,
            )
        else:
            response = await call_next(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


async def csrf_form(request: Request) -> FormData:
    """The POSTed form, after checking its CSRF token and origin; every state-changing handler calls it."""
    secrets: Secrets = request.app.state.secrets
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise HTTPException(403, "cross-origin request refused")
    form = await request.form()
    value = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not secrets.csrf_ok(value if isinstance(value, str) else None):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return form
