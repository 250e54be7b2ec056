"""The inventory's remote engine: read-plate sent to an OpenAI-compatible server (vLLM, SGLang,
llama.cpp's ``llama-server``, another ``glmv serve``) instead of the local model.

Only the standard library speaks HTTP here (``http.client``): the portable bundle ships no HTTP
client. Every failure becomes one of four :class:`RemoteError` kinds the queue acts on — wait and
retry (:class:`EngineUnavailable`), stop and keep the photos queued (:class:`EngineRefused`,
:class:`EngineMisconfigured`), or make this photo an error row (:class:`PhotoRejected`). The
bearer token is never part of a message, a ``repr`` or a log line.
"""
from __future__ import annotations

import base64
import email.utils
import http.client
import io
import json
import logging
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from PIL import Image

from runtime.engine import images
from runtime.tasks import plate
from runtime.tasks.inventory.errors import (EngineMisconfigured, EngineRefused, EngineUnavailable, PhotoRejected,
                                            ReadCancelled, RemoteError)

log = logging.getLogger(__name__)

MAX_TOKENS = 2048
# The longest side sent. GLM-4.6V's processor shrinks anything over 6144 image tokens (~2500×1900)
# anyway, so a 12 MP phone photo would cost 4-6× the upload (and, base64, can pass an engine's body
# limit: 28 MB on glmv serve) for nothing; at 2048 px a plate's small print stays legible.
MAX_SIDE = 2048
AS_IS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}   # what every engine decodes
LOSSLESS = ("PNG", "BMP", "TIFF", "GIF")   # re-encoded as PNG; the rest (JPEG, MPO, WebP, HEIC) as JPEG
CONNECT_TIMEOUT_S = 10.0   # a dead host must not hold a reader for the whole read timeout
SHORT_TIMEOUT_S = 30.0     # /v1/models and the check's one-token question
POLL_S = 0.1               # how often a waiting read asks cancelled()
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "nameplate", "schema": plate.SCHEMA, "strict": True}}


@dataclass
class RemoteOutcome:
    reading: plate.PlateReading
    confidence: dict[str, float | None]   # per field, from the engine's logprobs; all None without them
    raw: str
    seconds: float
    model: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    logprobs: bool = False                # whether the engine returned token logprobs


def encode_photo(photo: Path) -> tuple[str, bytes]:
    """(MIME type, bytes) to send. JPEG/PNG/WebP within MAX_SIDE, upright, opaque and one frame go
    as they are; anything else the images module takes goes through it (oriented, flattened, first
    frame, shrunk) and is sent as PNG, or JPEG for a photo that was lossy already. An
    :class:`images.ImageError` carries the local engine's own message."""
    name = photo.name
    try:
        data = photo.read_bytes()
    except OSError as e:   # gone, a folder, no permission: this photo's error row says which
        raise images.ImageError(f"{photo} cannot be read ({e.strerror or e})") from None
    fmt, size, as_is = None, None, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt, size = img.format, img.size
            as_is = (fmt in AS_IS and img.mode in ("RGB", "L") and "transparency" not in img.info
                     and img.getexif().get(0x0112, 1) == 1 and getattr(img, "n_frames", 1) == 1
                     and max(size) <= MAX_SIDE and len(data) <= images.DEFAULT_MAX_FILE_BYTES)
            if as_is:
                img.load()   # a truncated file is refused here, with our message, not by the engine
    except Exception:  # noqa: BLE001 - any decoder failure: images.prepare below says what it is
        as_is = False
    if as_is:
        images.grid_size(*size, name=name)   # a strip GLM-4.6V refuses: refused before sending
        return AS_IS[fmt], data
    budget = images.DEFAULT_PIXEL_BUDGET
    if size:   # the photo's own pixels, up to MAX_SIDE
        w, h = size
        budget = int(w * h * min(1.0, MAX_SIDE / max(w, h)) ** 2)
        budget = min(images.MAX_PIXEL_BUDGET, max(images.MIN_PIXEL_BUDGET, budget))
    prepared = images.prepare(data, name=name, pixel_budget=budget)   # raises ImageError when unusable
    out = Image.frombytes("RGB", (prepared.width, prepared.height), prepared.rgb)
    kind = "PNG" if fmt in LOSSLESS else "JPEG"   # a drawing stays exact; a photo need not grow 5×
    buf = io.BytesIO()
    out.save(buf, kind, **({"quality": 95} if kind == "JPEG" else {}))
    return f"image/{kind.lower()}", buf.getvalue()


def _engine_message(body: bytes) -> str:
    """The engine's own error text (OpenAI's, FastAPI's or plain), short."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return "an HTML page" if text[:20].lower().startswith(("<!doctype", "<html")) else text[:300] or "no message"
    e = data.get("error", data.get("detail", data.get("message"))) if isinstance(data, dict) else None
    e = e.get("message", e) if isinstance(e, dict) else e
    return (text if e is None else e if isinstance(e, str) else json.dumps(e))[:300]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None without a usable one."""
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class RemoteEngine:
    """One OpenAI-compatible engine. Thread-safe: up to ``concurrency`` reads run at once (more
    wait their turn); each read has its own connection."""

    def __init__(self, url: str, token: str | None, *, model: str | None = None, concurrency: int = 2,
                 timeout_s: float = 600):
        text = url.strip()
        parts = urlsplit(text if "://" in text else "http://" + text)
        try:
            port = parts.port
        except ValueError:
            port = -1   # "host:abc"
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise EngineMisconfigured(f"{text!r} is not an engine URL: give it as http://host:8000 or "
                                      "https://host/v1")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, port or (443 if self._https else 80)
        path = parts.path.rstrip("/")
        for tail in ("/chat/completions", "/v1"):   # a pasted endpoint or /v1 both mean the base
            path = path[:-len(tail)] if path.endswith(tail) else path
        self._api = path + "/v1"
        host = f"[{self._host}]" if ":" in self._host else self._host
        # shown in every message: no user:password@ part, no query
        self.url = f"{parts.scheme}://{host}{f':{port}' if port else ''}{self._api}"
        self.__token = token or None
        self.concurrency = max(1, int(concurrency))
        self.timeout_s = float(timeout_s)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._lock = threading.Lock()
        self._model = model
        self._no_logprobs = False   # set when the engine refuses them (400): asked without from then on

    def __repr__(self) -> str:
        return (f"RemoteEngine({self.url!r}, token={'set' if self.__token else 'none'}, model={self._model!r}, "
                f"concurrency={self.concurrency})")

    def check(self, cancelled: Callable[[], bool] = lambda: False) -> dict:
        """Test URL and token before a run: the model list, then a one-token question (some engines
        list models without a token). A dict, or one of the errors."""
        t0 = time.monotonic()
        ids = self._list_models(cancelled)
        model = self._model or ids[0]
        body = {"model": model, "messages": [{"role": "user", "content": "Reply with OK."}], "max_tokens": 1,
                "temperature": 0, "logprobs": True}
        resp = self._chat(body, cancelled, SHORT_TIMEOUT_S, photo=False)
        self._model = self._model or model
        lp = resp["choices"][0].get("logprobs")
        return {"url": self.url, "model": resp.get("model") or model, "models": ids, "seconds":
                round(time.monotonic() - t0, 2), "logprobs": isinstance(lp, dict) and bool(lp.get("content"))}

    @property
    def label(self) -> str:
        """The engine as the inventory's estimate knows it (its speed is measured apart)."""
        return f"remote {self.url}"

    def describe(self) -> dict:
        return {"label": self.label, "kind": "remote", "url": self.url, "model": self._model,
                "concurrency": self.concurrency}

    def read(self, photo: Path, *, cancelled: Callable[[], bool] = lambda: False,
             on_event: Callable[[object], None] | None = None) -> RemoteOutcome:
        """The read-plate prompt on ``photo``, greedy, under the plate schema (``on_event``: the
        queue's progress hook; a remote answer comes whole, so it is not called)."""
        try:
            mime, data = encode_photo(Path(photo))
        except images.ImageError as e:
            raise PhotoRejected(f"{e} (not sent to {self.url})") from None
        while not self._slots.acquire(timeout=POLL_S):
            if cancelled():
                raise ReadCancelled(f"reading {Path(photo).name} was cancelled before it was sent")
        try:
            t0 = time.monotonic()
            model = self._resolve_model(cancelled)
            url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
            content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": plate.PROMPT}]
            body = {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0,
                    "max_tokens": MAX_TOKENS, "logprobs": True, "stream": False, "response_format": RESPONSE_FORMAT,
                    # GLM-4.6V thinks by default; a schema-held answer must start at once (vLLM, SGLang,
                    # llama-server and glmv serve all take this field)
                    "chat_template_kwargs": {"enable_thinking": False}}
            resp = self._chat(body, cancelled, self.timeout_s, photo=True)
            return self._outcome(resp, model, time.monotonic() - t0, Path(photo).name)
        finally:
            self._slots.release()

    def _outcome(self, resp: dict, model: str, seconds: float, name: str) -> RemoteOutcome:
        choice = resp["choices"][0]
        content = (choice.get("message") or {}).get("content")
        raw = content if isinstance(content, str) else ""
        finish = choice.get("finish_reason")
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            cut = f" (cut at {MAX_TOKENS} tokens)" if finish == "length" else ""
            raise PhotoRejected(f"the engine at {self.url} answered {name} with something that is not a JSON "
                                f"object{cut}, although the request held it to the plate schema: "
                                f"{self._clean(raw[:120]) or 'an empty answer'}", raw=raw)
        reading = plate.reading_from_answer(raw)
        if finish == "length":
            reading.warnings.append(f"the answer was cut at {MAX_TOKENS} tokens (max_tokens)")
        entries = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
        confidence: dict = {k: None for k in plate.FIELD_KEYS}
        if entries:
            try:   # a sibling module; were it absent, the reading would simply have no confidences
                from runtime.tasks.plate_confidence import field_confidences, pieces_from_openai
            except ImportError:
                pass
            else:
                confidence = field_confidences(pieces_from_openai(entries))
        usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
        return RemoteOutcome(reading, confidence, raw, seconds, str(resp.get("model") or model), finish,
                             usage.get("prompt_tokens"), usage.get("completion_tokens"), bool(entries))

    def _resolve_model(self, cancelled) -> str:
        if not self._model:   # asked once; two threads asking at once agree on the same first id
            self._model = self._list_models(cancelled)[0]
        return self._model

    def _list_models(self, cancelled) -> list[str]:
        status, headers, body = self._exchange("GET", "/models", None, cancelled, SHORT_TIMEOUT_S)
        self._raise_for(status, headers, body, "/models", photo=False)
        try:
            ids = [str(m["id"]) for m in json.loads(body)["data"]]
        except (ValueError, KeyError, TypeError):
            raise EngineMisconfigured(f"{self.url}/models is no OpenAI model list: is it an OpenAI engine?") from None
        if not ids:
            raise EngineMisconfigured(f"the engine at {self.url} lists no model: start it with a model loaded")
        return ids

    def _chat(self, body: dict, cancelled, timeout_s: float, *, photo: bool) -> dict:
        with self._lock:
            if self._no_logprobs:
                body = {k: v for k, v in body.items() if k != "logprobs"}
        status, headers, data = self._exchange("POST", "/chat/completions", body, cancelled, timeout_s)
        if status == 400 and "logprobs" in body and "logprob" in _engine_message(data).lower():
            with self._lock:
                self._no_logprobs = True
            log.info("%s refuses logprobs: reading without confidences", self.url)
            body = {k: v for k, v in body.items() if k != "logprobs"}
            status, headers, data = self._exchange("POST", "/chat/completions", body, cancelled, timeout_s)
        self._raise_for(status, headers, data, "/chat/completions", photo=photo)
        try:
            resp = json.loads(data)
            if not isinstance(resp["choices"][0], dict):
                raise TypeError
        except (ValueError, KeyError, IndexError, TypeError):
            raise EngineMisconfigured(f"{self.url}/chat/completions gave no OpenAI chat completion ("
                                      f"{self._clean(_engine_message(data))}): is it an OpenAI engine?") from None
        return resp

    def _raise_for(self, status: int, headers: dict, body: bytes, path: str, *, photo: bool) -> None:
        if 200 <= status < 300:
            return
        where, said = f"{self.url}{path}", self._clean(_engine_message(body))
        low = said.lower()
        if status in (401, 403):
            what = "refused the token" if self.__token else "requires a token"
            raise EngineRefused(f"the engine at {self.url} {what} (HTTP {status}: {said}): check the engine's API "
                                "token in the settings")
        if status in (408, 429) or status >= 500:
            raise EngineUnavailable(f"the engine at {self.url} cannot answer now (HTTP {status}: {said}); "
                                    "the reading will be tried again", _retry_after(headers.get("retry-after")))
        if 300 <= status < 400:
            raise EngineMisconfigured(f"{where} redirects to {headers.get('location', '?')} (HTTP {status}): give "
                                      "the engine's final address (http or https?)")
        if status == 404:
            if "model" in low:
                raise EngineMisconfigured(f"the engine at {self.url} has no such model ({said}): choose one it lists")
            raise EngineMisconfigured(f"no OpenAI-compatible endpoint at {where} (HTTP 404: {said}): give the "
                                      "engine's base URL, such as http://host:8000/v1")
        if status == 413 and photo:
            raise PhotoRejected(f"the engine at {self.url} refused the photo as too large (HTTP 413: {said})")
        if status in (400, 422) and photo:
            # the request is the same for every photo but the image: a 400 is this photo's, unless
            # it names a part every request shares (the schema, the model)
            if not any(w in low for w in ("response_format", "json_schema", "guided", "grammar", "structured",
                                          "chat_template", "model")):
                raise PhotoRejected(f"the engine at {self.url} refused this photo (HTTP {status}: {said})")
        raise EngineMisconfigured(f"the engine at {where} refused the request (HTTP {status}: {said}): its "
                                  "settings may not fit this program")

    def _clean(self, text: str) -> str:
        """An engine's own words with the token taken out, should it echo the request's headers."""
        return text.replace(self.__token, "[token]") if self.__token else text

    def _connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=CONNECT_TIMEOUT_S)   # https: the system's CAs, verified

    def _exchange(self, method: str, path: str, body: dict | None, cancelled, timeout_s: float):
        """(status, lower-case headers, body). The blocking exchange runs in a helper thread so
        that this one can poll ``cancelled()`` and the deadline, and close the socket to stop."""
        headers = {"Accept": "application/json", "User-Agent": "glmv-portable", "Content-Type": "application/json",
                   **({"Authorization": f"Bearer {self.__token}"} if self.__token else {})}
        payload = None if body is None else json.dumps(body).encode()
        conn, result, done, stop = self._connection(), {}, threading.Event(), threading.Event()

        def work():
            try:
                conn.connect()
                if stop.is_set():
                    return
                conn.sock.settimeout(timeout_s)
                conn.request(method, self._api + path, body=payload, headers=headers)
                resp = conn.getresponse()
                result["ok"] = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                result["error"] = e
            finally:
                done.set()

        t0 = time.monotonic()
        threading.Thread(target=work, name="glmv-remote", daemon=True).start()
        try:
            while not done.wait(POLL_S):
                if cancelled():
                    raise ReadCancelled(f"the read from {self.url} was cancelled")
                if time.monotonic() - t0 > timeout_s + CONNECT_TIMEOUT_S:
                    raise EngineUnavailable(f"the engine at {self.url} gave no answer within {timeout_s:g} s")
        finally:
            stop.set()
            sock = conn.sock
            if sock is not None and not done.is_set():
                try:   # wakes the helper blocked in recv; the engine sees the client go and stops
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            conn.close()
        if "error" in result:
            raise self._network_error(result["error"], timeout_s) from None
        log.debug("%s %s%s: HTTP %d in %.2f s", method, self.url, path, result["ok"][0], time.monotonic() - t0)
        return result["ok"]

    def _network_error(self, e: BaseException, timeout_s: float) -> RemoteError:
        u = self.url
        for kinds, kind, text in (   # first match wins: the TLS errors are OSErrors too
                (ssl.SSLCertVerificationError, EngineMisconfigured, f"the certificate of {u} is not trusted"),
                (ssl.SSLError, EngineMisconfigured, f"TLS with {u} failed: is the engine on http rather than https?"),
                (socket.gaierror, EngineUnavailable, f"the name {self._host!r} cannot be found (DNS): check the "
                                                     "engine's address and this computer's network"),
                (ConnectionRefusedError, EngineUnavailable, f"nothing answers at {u} (connection refused): is the "
                                                            "engine running, on this port?"),
                (TimeoutError, EngineUnavailable, f"the engine at {u} gave no answer within {timeout_s:g} s"),
                ((ConnectionError, http.client.IncompleteRead), EngineUnavailable,
                 f"the engine at {u} closed the connection mid-request; it may have restarted"),
                (http.client.HTTPException, EngineMisconfigured, f"{u} does not answer as an HTTP engine does: is it "
                                                                 "the right port, http or https?")):
            if isinstance(e, kinds):
                return kind(f"{text} ({type(e).__name__})")
        return EngineUnavailable(f"the engine at {u} cannot be reached ({type(e).__name__}: {self._clean(str(e))})")
