"""The server's socket and its announcement: bind, print the URL (and the token's), quickly.

Kept apart from ``app.py`` on purpose: this module imports nothing heavy, so ``glmv`` can bind
and print its URL — and, with no display, its browser/URL fallback — in well under a second,
before Starlette, uvicorn, numpy and llama.cpp are imported.
"""
from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
from dataclasses import dataclass


class BindError(OSError):
    """The address/port cannot be listened on (in use, not this machine's address)."""


def is_loopback(host: str) -> bool:
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """Bind before printing the URL, so port 0 becomes a real, already-reserved port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if sys.platform != "win32":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise BindError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def resolve_token(host: str, token: str | None) -> tuple[str | None, bool]:
    """(token, generated). Beyond loopback a token is mandatory: generated when not given."""
    if token:
        return token, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(24), True


def url_for(sock: socket.socket, host: str) -> str:
    """The URL to open on this machine: loopback for wildcard binds."""
    port = sock.getsockname()[1]
    h = host.strip("[]")
    if h in ("", "0.0.0.0") or (is_loopback(h) and ":" not in h):
        shown = "127.0.0.1"
    elif h in ("::", "::1"):
        shown = "[::1]"
    else:
        shown = f"[{h}]" if ":" in h else h
    return f"http://{shown}:{port}/"


def ui_url(url: str, token: str | None) -> str:
    """The page's address: with a token in force, the page needs it, and reads it once from
    ``?token=`` (assets/ui/api.js keeps it for the tab and drops it from the address bar)."""
    from runtime.app.window import with_token
    return with_token(url, token)


@dataclass
class Announced:
    sock: socket.socket
    url: str            # the bare URL: the first line of stdout, which scripts read
    page: str           # the UI's address (with ?token= when a token is in force)
    token: str | None


def announce(host: str, port: int, token: str | None, out=None) -> Announced:
    """Bind and print the URL as the first line of stdout; token lines on stderr."""
    token, generated = resolve_token(host, token)
    sock = bind(host, port)
    url = url_for(sock, host)
    print(url, file=out or sys.stdout, flush=True)
    if generated:
        print(f"glmv serve: listening beyond this computer; API token (send 'Authorization: Bearer <token>'): "
              f"{token}", file=sys.stderr, flush=True)
    page = ui_url(url, token)
    if token:  # the bare URL's page would be refused by its own API: say which address works
        print(f"glmv serve: open the UI at {page}", file=sys.stderr, flush=True)
    return Announced(sock, url, page, token)
