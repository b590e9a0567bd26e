"""A small JSON-over-HTTP client for OpenAI-compatible servers, with bounded retries.

Faults become one `RemoteError` line (connection refused, timeouts, 429 and 5xx after
their retries, malformed or truncated JSON), never a traceback. The API key is sent in
a header only: it never appears in an error, a log or a saved run.
"""

from __future__ import annotations

import http.client
import json
import random
import ssl
import time
import urllib.error
import urllib.parse
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

from tts_tui.errors import TTSError

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class RemoteError(TTSError):
    """The server could not be reached or answered something unusable. `status`: the HTTP
    status of a refused request, where there was one."""

    exit_code = 1
    status: int | None = None


def safe_url(url: str) -> str:
    """A URL fit for a message or a log: no user:password@, no query (where keys hide)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(malformed URL)"
    host = parts.netloc.rpartition("@")[2]  # host[:port], whatever the port holds
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class Cancelled(RemoteError):
    """The caller stopped the request's retries (a cancel, or another branch's failure)."""


def _checked_key(key: str | None) -> str | None:
    """The key as sent: surrounding space dropped (a variable set from a file ends in a
    newline), and refused in one line when it cannot go in a header, before urllib's own
    error, which would print it."""
    if key is None:
        return None
    key = key.strip()
    if not key.isascii() or not key.isprintable() or " " in key:
        raise RemoteError("the API key holds characters a header cannot carry (spaces, control or non-ASCII)")
    return key or None


def count_of(x: Any) -> int:
    """A token count from `usage`, 0 where the server sent none or nonsense."""
    try:
        return max(0, int(x or 0))
    except (TypeError, ValueError, OverflowError):
        return 0


def _pause(seconds: float, stop: Callable[[], bool] | None) -> None:
    """Sleep, waking early when `stop` turns true."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if stop is not None and stop():
            return
        time.sleep(min(left, 0.1))


class OpenAIClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0, retries: int = 4,
                 backoff: float = 0.5) -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(f"{safe_url(self.base_url)!r} is not a server URL (http://HOST:PORT)")
        try:
            parts.port  # noqa: B018 - a non-numeric port raises here, not at the first request
        except ValueError:
            raise RemoteError(f"{safe_url(self.base_url)!r}: the port is not a number") from None
        self.shown = safe_url(self.base_url)  # what messages say
        self._key = _checked_key(api_key)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.requests = 0
        self._count_lock = threading.Lock()

    def get(self, path: str, stop: Callable[[], bool] | None = None) -> Any:
        return self._call("GET", path, None, stop)

    def post(self, path: str, body: dict[str, Any], stop: Callable[[], bool] | None = None) -> Any:
        """The JSON answer. `stop`, when it turns true, ends the retries (and their backoff)
        with `Cancelled`; a request in flight still runs to its answer or its timeout."""
        return self._call("POST", path, body, stop)

    def _call(self, method: str, path: str, body: dict[str, Any] | None, stop: Callable[[], bool] | None) -> Any:
        url = f"{self.base_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        last = ""
        timeouts = 0
        for attempt in range(self.retries + 1):
            if attempt:
                _pause(self.backoff * 2 ** (attempt - 1) * (0.5 + random.random()), stop)
            if stop is not None and stop():
                raise Cancelled(f"{self.shown}{path}: cancelled")
            try:
                req = urllib.request.Request(url, data=data, method=method, headers=self._headers())
            except ValueError as exc:  # never str(exc): it may hold the URL's or the header's text
                raise RemoteError(f"{self.shown}{path}: not a valid request ({type(exc).__name__})") from None
            with self._count_lock:
                self.requests += 1
            try:
                with _OPENER.open(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                detail = self._scrub(_error_detail(exc))
                if exc.code in RETRY_STATUS:
                    last = f"{exc.code} {detail}"
                    continue
                err = RemoteError(f"{self.shown}{path}: the server answered {exc.code} {detail}")
                err.status = exc.code
                raise err from None
            except http.client.HTTPException as exc:  # a truncated or garbled answer
                last = f"truncated answer ({type(exc).__name__})"
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, ssl.SSLCertVerificationError):  # no retry will make it trusted
                    raise RemoteError(f"{self.shown}{path}: its TLS certificate is not trusted") from None
                last = f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
                if isinstance(reason, TimeoutError):
                    timeouts += 1
                    if timeouts >= 2:  # a server too slow twice: more tries only pile work on it
                        break
                continue
            except ValueError as exc:  # a header or URL urllib will not send (never its text: the key)
                raise RemoteError(f"{self.shown}{path}: not a valid request ({type(exc).__name__})") from None
            try:
                return json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                last = f"malformed JSON ({len(raw)} bytes)"
                continue
        tries = attempt + 1
        err = RemoteError(f"{self.shown}{path}: no usable answer after {tries} tr{'ies' if tries > 1 else 'y'} "
                          f"({self._scrub(last)})")
        err.transient = True  # unreachable, overloaded or garbling: another time it may answer
        raise err

    def _scrub(self, text: str) -> str:
        """A server may echo what it was sent: never the key in a message."""
        return text.replace(self._key, "***") if self._key else text

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self._key:
            h["Authorization"] = f"Bearer {self._key}"
        return h

    def __repr__(self) -> str:  # never the key
        return f"OpenAIClient({self.shown!r})"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the Authorization header to another host: refuse it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        raise urllib.error.HTTPError(req.full_url, code, f"redirected to {safe_url(newurl)} (not followed)", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
        msg = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("error")
        return " ".join(str(msg or exc.reason).split())[:200]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError):
        return str(exc.reason)
