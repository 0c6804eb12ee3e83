"""The ASGI application: the flavors mounted side by side, plus top-level control routes.

Layout::

    /novita/...      Novita AI         (novita.py)
    /highway/...     HighwayAPI        (novita.py)
    /wavespeed/...   WaveSpeedAI       (wavespeed.py)
    /kling/...       Kling's official API (kling.py)
    /fal/...         fal.ai: queue, storage and webhook key set (fal.py)
    /replicate/...   Replicate: predictions, files, webhook secret (replicate.py)
    /__fake/health   GET  -> {"ok": true}
    /__fake/reset    POST -> clears tasks, files, request logs, faults, rate windows
    /__fake/faults   GET  -> armed faults;  POST {flavor, target, kind, times, ...} -> arms one
    /__fake/config   GET  -> settings;      POST {field: value, ...} -> changes them live

Each flavor also has ``/<flavor>/__fake/requests``,
``/<flavor>/__fake/tasks/{id}/complete`` and ``/<flavor>/__fake/media/{name}``.

A submit that names a webhook (Novita/HighwayAPI ``extra.webhook.url``, WaveSpeed ``?webhook=``
or ``webhook_url``) gets it called when the task ends, retried on non-2xx (``state.py``);
``POST /__fake/config {"drop_webhooks": true}`` makes the emulator ignore them instead.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from .config import EmulatorConfig
from .fal import Fal
from .faults import Fault
from .flavor import Flavor, parse_object
from .kling import Kling
from .novita import Highway, Novita
from .replicate import Replicate
from .state import Emulator
from .wavespeed import WaveSpeed

FLAVOR_CLASSES: tuple[type[Flavor], ...] = (Novita, Highway, WaveSpeed, Kling, Fal, Replicate)


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """Build the emulator app for ``config`` (defaults when omitted); its state is ``app.state.emulator``."""
    emulator = Emulator(config or EmulatorConfig())
    controls = _Controls(emulator)
    routes = [
        Route("/__fake/health", controls.health, methods=["GET"]),
        Route("/__fake/reset", controls.reset, methods=["POST"]),
        Route("/__fake/faults", controls.list_faults, methods=["GET"]),
        Route("/__fake/faults", controls.arm_fault, methods=["POST"]),
        Route("/__fake/config", controls.show_config, methods=["GET"]),
        Route("/__fake/config", controls.change_config, methods=["POST"]),
        *(Mount(f"/{flavor.name}", routes=flavor(emulator).routes()) for flavor in FLAVOR_CLASSES),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = emulator
    return app


class _Controls:
    """Handlers of the top-level ``/__fake`` routes (test plumbing, not any provider's API)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def reset(self, _request: Request) -> Response:
        self.emulator.reset()
        return JSONResponse({"ok": True})

    async def list_faults(self, _request: Request) -> Response:
        return JSONResponse(self.emulator.faults.pending())

    async def arm_fault(self, request: Request) -> Response:
        payload = parse_object(await request.body())
        try:
            fault = Fault.from_mapping(payload if payload is not None else {})
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.emulator.faults.arm(fault)
        return JSONResponse({"ok": True, "fault": fault.public()})

    async def show_config(self, _request: Request) -> Response:
        return JSONResponse(self.emulator.config.public())

    async def change_config(self, request: Request) -> Response:
        payload = parse_object(await request.body())
        try:
            self.emulator.config.update(payload if payload is not None else {})
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(self.emulator.config.public())
