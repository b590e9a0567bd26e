"""A small JSON-over-HTTP client for OpenAI-compatible servers, with bounded retries.

Faults become one `RemoteError` line (connection refused, timeouts, 429 and 5xx after
their retries, malformed or truncated JSON), never a traceback. The API key is sent in
a header only: it never appears in an error, a log or a saved run.
"""

from __future__ import annotations

import http.client
import json
import random
import time
import urllib.error
import urllib.request
from typing import Any

from tts_tui.errors import TTSError

RETRY_STATUS = {429, 500, 502, 503, 504}


class RemoteError(TTSError):
    """The server could not be reached or answered something unusable."""

    exit_code = 1


class OpenAIClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0, retries: int = 4,
                 backoff: float = 0.5) -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self._key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.requests = 0

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        url = f"{self.base_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1) * (0.5 + random.random()))
            req = urllib.request.Request(url, data=data, method=method, headers=self._headers())
            self.requests += 1
            try:
                with _OPENER.open(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc)
                if exc.code in RETRY_STATUS:
                    last = f"{exc.code} {detail}"
                    continue
                raise RemoteError(f"{self.base_url}{path}: the server answered {exc.code} {detail}") from None
            except http.client.HTTPException as exc:  # a truncated or garbled answer
                last = f"truncated answer ({type(exc).__name__})"
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
                continue
            try:
                return json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                last = f"malformed JSON ({len(raw)} bytes)"
                continue
        err = RemoteError(f"{self.base_url}{path}: no usable answer after {self.retries + 1} tries ({last})")
        err.transient = True  # unreachable, overloaded or garbling: another time it may answer
        raise err

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self._key:
            h["Authorization"] = f"Bearer {self._key}"
        return h

    def __repr__(self) -> str:  # never the key
        return f"OpenAIClient({self.base_url!r})"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the Authorization header to another host: refuse it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        raise urllib.error.HTTPError(req.full_url, code, f"redirected to {newurl} (not followed)", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
        msg = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("error")
        return " ".join(str(msg or exc.reason).split())[:200]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError):
        return str(exc.reason)
