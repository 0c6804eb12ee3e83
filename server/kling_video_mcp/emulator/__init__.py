"""A local emulator of the Kling v3.0 HTTP APIs of Novita AI, HighwayAPI and WaveSpeedAI.

Tests never call a real provider; they point the clients at this emulator,
which follows the contracts in ``shared/reference/providers.md`` §6 (routes,
validation order, envelopes, task clock, result media) and adds control hooks
(request log, fault injection, forced completion).

    from kling_video_mcp.emulator import EmulatorConfig, EmulatorServer, create_app

    with EmulatorServer(EmulatorConfig(time_scale=0.01)) as emu:
        novita_base_url = emu.url("novita")
"""

from .app import create_app
from .config import FLAVORS, EmulatorConfig
from .faults import Fault
from .runner import EmulatorServer

__all__ = ["FLAVORS", "EmulatorConfig", "EmulatorServer", "Fault", "create_app"]
