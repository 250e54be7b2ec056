"""The local server's front door: a pure ASGI middleware that runs before any endpoint.

Why each check exists:
- Host header (DNS rebinding): a web page on ``evil.example`` can make its name resolve to
  127.0.0.1 and then talk to us "same-origin". Only our own names (``localhost``,
  ``127.0.0.1``, ``[::1]``, the bound address, names passed explicitly) with our port pass.
  When bound to a wildcard address (0.0.0.0 / ::), IP literals also pass: rebinding needs a
  domain name, and LAN clients reach us by IP.
- Origin / Sec-Fetch-Site (CSRF): any page open in the laptop's browser can POST to
  http://127.0.0.1:PORT. Browsers send ``Origin`` on such requests; a foreign one is refused.
- Bearer token: required for /api and /v1 when the server listens beyond loopback (or when
  one was given explicitly).
- Body size: checked from Content-Length first, then counted while the body streams in (a
  chunked upload has no Content-Length).
"""
from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PROTECTED_PREFIXES = ("/api/", "/v1/")


class BodyTooLarge(Exception):
    """The request body went past the limit while it was being read."""

    def __init__(self, limit: int):
        super().__init__(too_large_message(limit))
        self.limit = limit


def too_large_message(limit: int) -> str:
    return (f"request body too large: the limit is {limit} bytes ({limit / 2**20:.0f} MB); "
            "send a smaller photo (export a smaller JPEG)")


def error_response(status: int, message: str, type_: str, headers: dict | None = None) -> JSONResponse:
    """Every error the server returns has this one shape (OpenAI's)."""
    return JSONResponse({"error": {"message": message, "type": type_}}, status_code=status, headers=headers)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None]:
    """'name:port' / '[v6]:port' / 'name' → (lower-case name, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        name, rest = value[:end + 1], value[end + 1:]
    elif value.count(":") == 1:
        name, rest = value.split(":")[0], ":" + value.split(":")[1]
    else:
        name, rest = value, ""
    if rest.startswith(":"):
        try:
            return name, int(rest[1:])
        except ValueError:
            return name, -1
    return name, None


@dataclass
class Policy:
    """What the guard accepts. ``port`` is set once the socket is bound (port 0 → a real one)."""
    bind_host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    max_body_bytes: int = 28 * 2**20
    extra_hosts: tuple[str, ...] = field(default_factory=tuple)

    @property
    def wildcard(self) -> bool:
        return self.bind_host in ("0.0.0.0", "::", "")

    def host_ok(self, value: str) -> bool:
        name, port = _split_host(value)
        if port is None:
            port = 80
        if self.port and port != self.port:
            return False
        bound = self.bind_host.lower()
        if ":" in bound and not bound.startswith("["):
            bound = f"[{bound}]"
        names = set(LOOPBACK_NAMES) | {bound} | {h.lower() for h in self.extra_hosts}
        return name in names or (self.wildcard and _is_ip(name))

    def origin_ok(self, origin: str) -> bool:
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        return parts.scheme == "http" and bool(parts.netloc) and self.host_ok(parts.netloc)

    def token_ok(self, authorization: str | None) -> bool:
        if not self.token:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(value.strip().encode(), self.token.encode())


class Guard:
    """ASGI middleware applying :class:`Policy` to every HTTP request."""

    def __init__(self, app, policy: Policy):
        self.app, self.policy = app, policy

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        p, h = self.policy, Headers(scope=scope)
        refusal = None
        if not p.host_ok(h.get("host", "")):
            refusal = error_response(421, f"Host {h.get('host', '')!r} is not this server (DNS rebinding "
                                          "protection): use http://127.0.0.1:PORT/ or the server's IP address, or "
                                          "start glmv serve with --allow-host NAME", "misdirected_request")
        elif h.get("origin") is not None and not p.origin_ok(h["origin"]):
            refusal = error_response(403, f"cross-origin request from {h['origin']!r} refused: only this "
                                          "server's own pages may call its API", "forbidden")
        elif scope["method"] not in SAFE_METHODS and h.get("sec-fetch-site") == "cross-site":
            refusal = error_response(403, "cross-site request refused", "forbidden")
        elif (scope["path"].startswith(PROTECTED_PREFIXES) or scope["path"] in ("/api", "/v1")) \
                and not p.token_ok(h.get("authorization")):
            refusal = error_response(401, "missing or wrong API token: send 'Authorization: Bearer <token>' "
                                          "(the token was printed when the server started)",
                                     "authentication_error", {"WWW-Authenticate": "Bearer"})
        else:
            try:
                declared = int(h.get("content-length", "0") or 0)
            except ValueError:
                declared = 0
            if declared > p.max_body_bytes:
                refusal = error_response(413, too_large_message(p.max_body_bytes), "payload_too_large")
        if refusal is not None:
            return await refusal(scope, receive, send)

        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > p.max_body_bytes:
                    raise BodyTooLarge(p.max_body_bytes)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as e:  # normally answered inside the app (exception handler); a fallback
            if started:
                raise
            await error_response(413, str(e), "payload_too_large")(scope, receive, send)
