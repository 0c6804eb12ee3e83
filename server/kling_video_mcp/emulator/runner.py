"""Run the emulator in-process: uvicorn in a daemon thread with its own event loop.

Used as a context manager by tests and kept running for the life of the MCP
server when it serves the ``sandbox`` provider. The listening socket is bound
before the thread starts, so the port is known at once (port 0 picks a free
one). Logging goes through the ``logging`` module only (uvicorn's own stdout
handlers are not installed), because stdout may be the MCP stdio channel.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from .app import create_app
from .config import FLAVORS, EmulatorConfig
from .faults import Fault
from .state import Emulator
from .tasks import Task

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 10.0
SHUTDOWN_GRACE_SECONDS = 1


class EmulatorServer:
    """A live emulator at ``base_url``; ``start()``/``stop()`` or ``with EmulatorServer(config) as emu:``."""

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = create_app(config)
        self.emulator: Emulator = self.app.state.emulator
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Bind, serve in a background thread, and return once requests are being accepted."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            )
        )
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"kling-emulator:{self.port}", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError(f"emulator failed to start on {self.host}:{self.port}")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        log.info("emulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread (open requests get a short grace period)."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=SHUTDOWN_GRACE_SECONDS + 5)
        self._server = self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (the port is real once started)."""
        return f"http://{self.host}:{self.port}"

    def url(self, flavor: str) -> str:
        """The provider base URL to configure a client with, e.g. ``http://127.0.0.1:PORT/novita``."""
        if flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r}; expected one of {', '.join(FLAVORS)}")
        return f"{self.base_url}/{flavor}"

    # -- the same controls as the /__fake routes ----------------------------------

    @property
    def config(self) -> EmulatorConfig:
        """The live settings; changes apply to the next request."""
        return self.emulator.config

    def requests(self, flavor: str) -> list[dict[str, Any]]:
        """Requests recorded for ``flavor`` (see ``journal``)."""
        return self.emulator.journal.entries(flavor)

    def reset(self) -> None:
        """Clear tasks, files, request logs, faults and rate-limit windows."""
        self.emulator.reset()

    def inject_fault(self, flavor: str, target: str, kind: str, times: int = 1, **params: Any) -> Fault:
        """Arm a fault for the next ``times`` matching requests (see ``faults`` for kinds and parameters)."""
        return self.emulator.inject_fault(flavor, target, kind, times, **params)

    def complete(self, flavor: str, task_id: str) -> Task:
        """Make task ``task_id`` of ``flavor`` succeed now; ``KeyError`` if there is no such task."""
        return self.emulator.complete(flavor, task_id)
