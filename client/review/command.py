"""`photodedup review`: start the review app on this machine for the index of the last scan."""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from photodedup.cliutils import build_settings, handle_errors
from photodedup.errors import PhotodedupError

if TYPE_CHECKING:
    import socket

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or one clear error when the address is taken or not ours."""
    import socket  # here, like the command's other modules: every photodedup command imports this file

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PhotodedupError(
                f"port {port} on {host} is already in use: pick another with --port, or 0 for any"
            ) from None
        raise PhotodedupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(64)
    return sock


def open_review(db: str | None) -> tuple[Any, Any]:
    """The review state and thumbnail cache for the last scan in the index `db` (groups computed once)."""
    from photodedup.client.commands import _as_scanned
    from photodedup.client.index import Index
    from photodedup.client.review.state import ReviewState
    from photodedup.client.review.thumbs import ThumbnailCache
    from photodedup.client.scan import grouping_config, load_groups

    with Index(build_settings(db=db).scan.db) as index:
        last, settings, refs = _as_scanned(index, db, (), {"near_threshold": None, "similar_threshold": None})
        config = grouping_config(settings, last.model_id)
        groups = load_groups(index, last.roots, last.model_id, config, refs)
    db_path = Path(settings.scan.db).expanduser()
    state = ReviewState(
        db_path, last, groups, config, refs, db_path.parent / "journals", max_pixels=settings.imaging.max_image_pixels
    )
    return state, ThumbnailCache(db_path.parent / "thumbs", settings.imaging.max_image_pixels)


def build(db: str | None, host: str, port: int) -> tuple[Any, socket.socket, str]:
    """The app, its bound socket and the URL (with the token) for the index's last scan."""
    import secrets

    from photodedup.client.review.app import create_app
    from photodedup.client.review.security import Secrets

    state, thumbs = open_review(db)
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)
    keys = Secrets(token, secrets.token_urlsafe(24), bound)
    hosts = [*LOOPBACK, "[::1]"] if host in LOOPBACK else ["*"]
    app = create_app(state, thumbs, keys, hosts)
    shown = f"[{host}]" if ":" in host else host
    return app, sock, f"http://{shown}:{bound}/?token={token}"


@click.command()
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    help="Index file [env PHOTODEDUP_DB; default ~/.local/share/photodedup/index.sqlite3].",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback lets other machines reach the app (token-protected).",
)
@click.option("--port", type=int, default=0, show_default=True, help="Port; 0 picks a free one.")
@click.option("--no-browser", is_flag=True, help="Only print the URL; do not open a browser.")
@handle_errors
def review(db: str | None, host: str, port: int, no_browser: bool) -> None:
    """Look at the groups of the last scan in a local web page, decide, and apply (nothing is rescanned)."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"photodedup: warning: listening on {host}: other machines can reach this app; "
            "anyone with the URL's token can act on your files",
            err=True,
        )
    app, sock, url = build(db, host, port)
    click.echo(f"photodedup review: {url}", err=False)
    click.echo("Press Ctrl-C to stop.", err=True)
    if not no_browser:
        import threading
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    sys.exit(0)
