"""A real third-party client end to end: Pydantic AI's ``MCPToolset`` makes a storyboard through MCP tasks.

Pydantic AI 2 connects through the FastMCP client. With ``fastmcp-tasks`` installed (the
``pydantic-ai-slim[mcp-tasks]`` extra), that client lists the ``io.modelcontextprotocol/tasks``
extension (2026-07-28) on every request and resolves a task answer by polling ``tasks/get`` to
its end, so an agent's tool call gets the finished result however long the render takes.
(``MCPToolset(prefer_tasks=...)`` is the SEP-1686 switch of FastMCP 3; on FastMCP 4 and the
``mcp`` 2.x SDK the server decides, as SEP-2663 has it.)

The model is scripted (``FunctionModel``, no LLM): make a shot with the sandbox provider, chain
a second from its last frame (``image='task:<id>'``), assemble the two. The server runs as a
subprocess over stdio, as a desktop client starts it; that each call was a task is read from
the server's own side: its log (one line per ``tools/call`` it answered with a task) and its
journal (the three tasks, delivered, the second chained from the first).
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import anyio
import pytest
from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from test_stdio import console_script, server_env

pytestmark = pytest.mark.anyio

TASK_ID = re.compile(r"task_id: ([0-9a-f]{32})")
ANSWERED_AS_TASK = re.compile(r"task ([0-9a-f]{32}) \(user local\): answered as an MCP task \(2026-07-28\)")


def finished_task_ids(messages: list[ModelMessage]) -> list[str]:
    """The task ids in the tool results the model has seen so far, in order."""
    return [
        match.group(1)
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart) and (match := TASK_ID.search(str(part.content)))
    ]


def storyboard(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The scripted model: one tool call per turn, each built from the results so far."""
    done = finished_task_ids(messages)
    if not done:
        call = ToolCallPart("generate_video", {"prompt": "a paper boat sets sail", "duration": 3, "provider": "sandbox"})
    elif len(done) == 1:
        arguments = {"image": f"task:{done[0]}", "prompt": "the boat reaches the far shore", "duration": 3, "provider": "sandbox"}
        call = ToolCallPart("animate_image", arguments)
    elif len(done) == 2:
        call = ToolCallPart("assemble_video", {"task_ids": done, "title": "Paper boat"})
    else:
        return ModelResponse(parts=[TextPart(f"The film is task {done[-1]}.")])
    return ModelResponse(parts=[call])


async def test_pydantic_ai_makes_a_storyboard_through_mcp_tasks(emulator, tmp_path):
    log = tmp_path / "server.log"
    env = server_env(emulator, tmp_path, KLING_MCP_SANDBOX_TIME_SCALE="0.2")
    toolset = MCPToolset(StdioTransport(console_script(), [], env=env, log_file=log), id="kling-video")
    agent = Agent(FunctionModel(storyboard), toolsets=[toolset])
    with anyio.fail_after(180):
        run = await agent.run("Make a two-shot film of a paper boat.")

    shot, chained, film = finished_task_ids(run.all_messages())
    assert run.output == f"The film is task {film}."
    tasked = ANSWERED_AS_TASK.findall(log.read_text())
    assert tasked == [shot, chained, film], log.read_text()[-4000:]  # each call was answered with a task

    with sqlite3.connect(tmp_path / "state" / "tasks.sqlite3") as db:
        rows = dict(db.execute("SELECT task_id, record FROM tasks").fetchall())
    records = {task_id: json.loads(record) for task_id, record in rows.items()}
    assert set(records) == {shot, chained, film}
    assert all(Path(record["file_path"]).is_file() for record in records.values())
    assert records[chained]["request"]["image"] == f"task:{shot}"
    assert [source["task_id"] for source in records[film]["assembly"]["sources"]] == [shot, chained]
