"""The one JSON client of the collector's HTTP API that every ``fleetops`` command uses.

A request goes to ``<url><path>`` with ``Accept: application/json``, a JSON body when there is one and
``Authorization: Bearer <token>`` when a token is set. Every failure is an :class:`ApiError`: the
API's HTTP status and its ``{"error": ...}`` reason, or status 0 when the API could not be reached.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

__all__ = ["DEFAULT_TIMEOUT_S", "DEFAULT_URL", "ApiError", "Client"]

DEFAULT_URL: Final = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S: Final = 30.0


class ApiError(RuntimeError):
    """The API refused (``status`` is its HTTP status) or was not reached (``status`` 0)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}" if status else reason)
        self.status = status
        self.reason = reason


class Client:
    """A small JSON client of the collector's API: base URL, bearer token, timeout."""

    def __init__(self, url: str, token: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def request(
        self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """Send one request; return the decoded JSON answer (``{}`` for an empty one)."""
        params = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, _reason(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(0, f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None
        except ValueError as exc:  # not JSON: something else answers at that address
            raise ApiError(0, f"{self.url} did not answer JSON: {exc}") from None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body=body)


def _reason(exc: urllib.error.HTTPError) -> str:
    try:
        answer = json.loads(exc.read())
    except (ValueError, OSError):
        return str(exc.reason)
    return str(answer.get("error", exc.reason)) if isinstance(answer, dict) else str(exc.reason)
