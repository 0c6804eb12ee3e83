"""The request log: what each flavor was asked, for tests to assert on (docs/providers.md#emulator-control-routes).

Each entry is ``{"method", "path", "query", "json", "headers"}``:

- ``path`` is the provider path, i.e. without the ``/<flavor>`` mount prefix
  (``/v3/async/kling-v3.0-4k-t2v``), so it reads like the real API;
- ``query`` maps each query parameter to its (last) value;
- ``json`` is the parsed body, or ``None`` when the body is empty or not JSON;
- ``headers`` are lower-cased, without ``Authorization`` (keys never leak into logs).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from typing import Any

from starlette.requests import Request


class RequestLog:
    """Append-only per-flavor list of request summaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)

    def record(self, flavor: str, request: Request, body: bytes) -> None:
        """Summarise ``request`` (whose raw ``body`` the caller already read) under ``flavor``."""
        mount = request.scope.get("root_path", "")
        path = request.url.path
        entry = {
            "method": request.method,
            "path": path[len(mount) :] if path.startswith(mount) else path,
            "query": dict(request.query_params),
            "json": _parse_json(body),
            "headers": {name: value for name, value in request.headers.items() if name != "authorization"},
        }
        with self._lock:
            self._entries[flavor].append(entry)

    def entries(self, flavor: str) -> list[dict[str, Any]]:
        """A copy of the entries recorded for ``flavor``, oldest first."""
        with self._lock:
            return list(self._entries[flavor])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _parse_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
