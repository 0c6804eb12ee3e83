"""A local emulator of the Kling v3.0 HTTP APIs of Novita AI, HighwayAPI and WaveSpeedAI, and of
Kling's official API, fal.ai and Replicate.

Tests never call a real provider; they point the clients at this emulator,
which follows the contracts in docs/providers.md#the-emulator (routes,
validation order, envelopes, task clock, result media) and, for the last three,
each host's "in the emulator" section there, and adds control hooks (request log, fault injection,
forced completion).

    from kling_video_mcp.emulator import EmulatorConfig, EmulatorServer, create_app

    with EmulatorServer(EmulatorConfig(time_scale=0.01)) as emu:
        novita_base_url = emu.url("novita")  # also "highway", "wavespeed", "kling", "fal", "replicate"

The names are exported lazily (PEP 562): the MCP server imports this package only to
start the sandbox, and Starlette, uvicorn and PyAV should cost nothing at server start-up.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .config import FLAVORS, EmulatorConfig
    from .faults import Fault
    from .runner import EmulatorServer

__all__ = ["FLAVORS", "EmulatorConfig", "EmulatorServer", "Fault", "create_app"]

_HOMES = {
    "FLAVORS": ".config",
    "EmulatorConfig": ".config",
    "EmulatorServer": ".runner",
    "Fault": ".faults",
    "create_app": ".app",
}


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first access."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
