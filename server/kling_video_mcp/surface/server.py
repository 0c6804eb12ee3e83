"""Assemble the MCP server: tools, resources and prompts, lifespan (HTTP client + task service), error shaping.

Data flows one way: a tool builds a :class:`GenerationRequest`, the task service checks,
journals and submits it through a provider adapter, and the tool renders the journaled
record with :mod:`kling_video_mcp.surface.results`.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import ValidationError

from kling_video_mcp import __version__
from kling_video_mcp.config import Settings
from kling_video_mcp.errors import InvalidRequest
from kling_video_mcp.providers import PROVIDERS, either
from kling_video_mcp.providers.http import make_client
from kling_video_mcp.redact import filter_logs
from kling_video_mcp.surface.icons import icons
from kling_video_mcp.surface.mcp_tasks import McpTasks
from kling_video_mcp.surface.mcp_tasks import legacy as mcp_tasks_legacy
from kling_video_mcp.surface.prompts import register_prompts
from kling_video_mcp.surface.resources import register_resources
from kling_video_mcp.surface.results import error_result
from kling_video_mcp.surface.signed_urls import UrlSigner
from kling_video_mcp.surface.state import AppState
from kling_video_mcp.surface.tools import register_tools
from kling_video_mcp.surface.view import screening_room
from kling_video_mcp.surface.visibility import HideAppOnlyTools
from kling_video_mcp.tasks.service import TaskService

_RENDERERS = either([provider.label for provider in PROVIDERS if not provider.makes_placeholders])
_PLACEHOLDERS = either([provider.name for provider in PROVIDERS if provider.makes_placeholders])
INSTRUCTIONS = f"""\
Makes videos with Kling v3.0 (Standard, Pro, 4K) through {_RENDERERS}.
Rendering takes minutes, so generate_video and animate_image return a task_id at once; the
server then finishes the task and downloads the clip by itself. Call check_task with the
task_id to get the status, and once it succeeded, the clip as a file on disk (resource link).
Every result states the estimated cost in USD. If the person running the server set a spend that
needs their confirmation, a request above it is sent only after they say yes; you cannot answer
for them. The {_PLACEHOLDERS} provider makes free placeholder clips."""


def describe_validation_error(error: ValidationError) -> str:
    """One line per broken rule, naming the field: ``duration: Input should be ... (got 20)``."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "arguments"
        got = f" (got {item['input']!r})" if "input" in item and not isinstance(item["input"], dict) else ""
        lines.append(f"{field}: {item['msg']}{got[:120]}.")
    return "Invalid request, nothing was sent: " + " ".join(lines)


class KlingMCPServer(MCPServer[AppState]):
    """``MCPServer`` whose argument-validation errors carry the structured error shape too.

    ``live`` is the lifespan's state while the server runs, for the HTTP routes that are no
    MCP requests (the webhook receiver) and so get no request context. Streamable HTTP enters
    the lifespan once; the deprecated SSE transport once per connection, hence a list.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._running: list[AppState] = []

    @property
    def live(self) -> AppState | None:
        return self._running[-1] if self._running else None

    @contextmanager
    def running(self, state: AppState) -> Iterator[None]:
        """Make ``state`` the live one for the life of the context (the lifespan's)."""
        self._running.append(state)
        try:
            yield
        finally:
            self._running.remove(state)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                return error_result(InvalidRequest(describe_validation_error(exc.__cause__)))
            raise


HANDSHAKES = frozenset({"initialize", "server/discover"})
"""How a client opens a session: 2025-11-25's ``initialize``, 2026-07-28's ``server/discover``."""


class RecoverAfterFirstAnswer:
    """Server middleware: once the first request after the handshake is answered (``tools/list``,
    usually), start-up recovery may begin; a client starting the server is answered first."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.request_id is not None and ctx.method not in HANDSHAKES:
            ctx.lifespan_context.service.answering()
        return result


def build_server(
    settings: Settings | None = None,
    *,
    clip_base_url: str | None = None,
    image_dirs: list[Path] | None = None,
    url_signer: UrlSigner | None = None,
) -> KlingMCPServer:
    """The MCP server, reading the environment unless ``settings`` is given.

    For stdio leave ``clip_base_url``, ``image_dirs`` and ``url_signer`` unset (``file://``
    links, any local image, media for the view through ``resources/read``). An HTTP deployment
    passes the public base URL its ``/clips/`` route is served under, the folders remote callers
    may name local images in (``[]`` for none), and the signer of the view's media links.
    """
    settings = settings or Settings()
    filter_logs()  # webhook tokens and signed-link signatures stay out of every transport's logs

    # Loading the CA bundle takes about 20 ms and OpenSSL does it without holding the GIL: it
    # runs on another thread while the tools are registered, not before the first answer.
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tls")
    tls = loader.submit(httpx2.create_ssl_context)
    loader.shutdown(wait=False)  # its thread ends once the context is made

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        async with make_client(settings, tls.result()) as client, TaskService.running(settings, client) as service, \
                mcp_tasks_legacy.followers() as task_followers:  # MCP tasks: status notifications (surface/mcp_tasks)
            state = AppState(
                settings=settings, service=service, clip_base_url=clip_base_url, image_dirs=image_dirs,
                url_signer=url_signer, task_followers=task_followers,
            )  # fmt: skip
            with mcp.running(state):
                yield state

    mcp_tasks = McpTasks()  # long work as MCP tasks, both protocol eras (surface/mcp_tasks)
    mcp = KlingMCPServer(
        "kling-video-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        icons=icons("server"),
        lifespan=lifespan,
        middleware=[RecoverAfterFirstAnswer(), HideAppOnlyTools(), mcp_tasks.legacy],
        extensions=[screening_room(clip_base_url), mcp_tasks],
    )
    register_tools(mcp, settings)
    register_resources(mcp)
    register_prompts(mcp)
    return mcp


def settle_heap() -> None:
    """Exempt everything built so far from future collections, and collect from now on.

    Start-up leaves a large heap of long-lived objects (the SDK, pydantic schemas); full
    collections re-scanning it stalled the event loop for 40-90 ms under load (benchmark
    figure 4). Call it when the server is built, before serving. No collection first: one
    would scan that whole heap (40-60 ms of cold start, benchmark figure 1) to free some 3,200
    objects of start-up garbage (with collection off while the server is built), which frozen
    cost about 1 MB of resident memory (of some 80 MB).
    """
    gc.freeze()
    gc.enable()  # the command line turns collection off while the server is built
