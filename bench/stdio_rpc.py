"""A bare JSON-RPC client for an MCP server on stdio: one request at a time, timed.

The benchmarks compare two servers by the time they take to answer, so the client must
add as little as possible: no SDK session machinery, just newline-delimited JSON over the
child's pipes (the stdio transport), with the 2025-11-25 ``initialize`` handshake that
Claude Desktop speaks.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

PROTOCOL_VERSION = "2025-11-25"
ANSWER_TIMEOUT_SECONDS = 120.0


class RpcError(RuntimeError):
    """The server answered with a JSON-RPC error, or not at all."""


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without provider keys or server settings, plus ``extra``.

    ``PYTHONDONTWRITEBYTECODE`` is dropped too: a user's installed server has its bytecode
    cached, so start-up is measured with the cache (after one warm-up start writes it).
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith("_API_KEY") and not key.startswith("KLING_MCP_") and key != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(extra or {})
    return env


class StdioServer:
    """A server process spoken to over its stdin/stdout; ``with StdioServer(cmd, env) as s:``."""

    def __init__(
        self, command: Sequence[str], env: Mapping[str, str], *, stderr: Path | None = None, cwd: Path | None = None
    ) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.cwd = cwd
        self._stderr_path = stderr
        self._stderr: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._next_id = 0
        self._waiting_since: float | None = None
        self.started_at = 0.0
        """``time.perf_counter()`` just before the process was spawned."""

    # -- lifecycle ---------------------------------------------------------------------

    def spawn(self) -> StdioServer:
        """Start the process (no handshake yet)."""
        self._stderr = open(self._stderr_path, "ab") if self._stderr_path else None  # noqa: SIM115 - closed in close()
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr or subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
        )
        threading.Thread(target=self._watchdog, args=(self.process,), daemon=True).start()
        return self

    def _watchdog(self, process: subprocess.Popen[bytes]) -> None:
        """Kill a server that leaves a request unanswered too long, so no read blocks forever."""
        while process.poll() is None:
            since = self._waiting_since
            if since is not None and time.monotonic() - since > ANSWER_TIMEOUT_SECONDS:
                process.kill()
                return
            time.sleep(1.0)

    def close(self) -> None:
        """Close stdin (the stdio way to say goodbye), then make sure the process is gone."""
        if self.process is None:
            return
        process, self.process = self.process, None
        try:
            if process.stdin:
                process.stdin.close()
            process.wait(timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            process.kill()
            process.wait(timeout=10)
        finally:
            if process.stdout:
                process.stdout.close()
            if self._stderr:
                self._stderr.close()

    def __enter__(self) -> StdioServer:
        self.spawn()
        self.handshake()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def pid(self) -> int:
        assert self.process is not None, "spawn() first"
        return self.process.pid

    # -- messages ----------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None, *, notify: bool = False) -> int:
        """Write one message; returns its id (``-1`` for a notification)."""
        assert self.process is not None and self.process.stdin is not None, "spawn() first"
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        request_id = -1
        if not notify:
            self._next_id += 1
            request_id = message["id"] = self._next_id
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()
        return request_id

    def answer(self, request_id: int) -> dict[str, Any]:
        """Read messages until the answer to ``request_id``; returns its ``result``.

        Raises:
            RpcError: the server answered with an error or closed its stdout.
        """
        assert self.process is not None and self.process.stdout is not None, "spawn() first"
        self._waiting_since = time.monotonic()
        try:
            while True:
                line = self.process.stdout.readline()
                if not line:
                    raise RpcError(f"the server closed stdout (exit code {self.process.poll()}); see its stderr")
                message = json.loads(line)
                if message.get("id") != request_id:
                    continue  # a notification or a server request we do not serve
                if "error" in message:
                    raise RpcError(str(message["error"]))
                return message["result"]
        finally:
            self._waiting_since = None

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.answer(self.send(method, params))

    def handshake(self) -> dict[str, Any]:
        """``initialize`` + ``notifications/initialized``; returns the initialize result."""
        result = self.request(
            "initialize",
            {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}},
        )
        self.send("notifications/initialized", notify=True)
        return result

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """``tools/call``; returns the result's ``structuredContent`` (raises on ``isError``)."""
        result = self.request("tools/call", {"name": name, "arguments": arguments})
        if result.get("isError"):
            raise RpcError(f"{name} failed: {json.dumps(result.get('structuredContent') or result.get('content'))[:500]}")
        return result.get("structuredContent") or {}
