"""Cold start: a plain stdio start with no keys loads only what answering needs.

How it is checked: the real stdio entry point (``python -m kling_video_mcp``, what the console
script runs) is started under ``python -X importtime``, which makes CPython write one line to
stderr for every module as it is imported, in the server process itself, with no hook in the
server's code. stderr goes to a file; ``mcp.Client`` speaks to the server over stdio, and the
moment ``tools/list`` has been answered the file is read. Every import before the answer has
been written by then, so the modules found are those loaded up to the answer (plus, at most,
any loaded in the instant between the answer and the read: the check can only be stricter).

The modules held back are those only some configurations use: PyAV and
Pillow (a clip or image is handled), PyJWT (an OAuth issuer), psycopg (a PostgreSQL URL),
uvicorn and Starlette (the HTTP transports). With ``mcp`` 2.3 the SDK's own ``MCPServer`` imports
Starlette and uvicorn (its low-level server imports the streamable HTTP and SSE transports), so
for those the rule is "no more than the bare SDK loads", measured in the same run: should the
SDK stop loading them, the check becomes strict by itself. Our HTTP-only modules and the
sandbox's emulator must not load either.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from kling_video_mcp.providers import PROVIDERS

pytestmark = pytest.mark.anyio

HELD_BACK = ("av", "PIL", "jwt", "psycopg", "psycopg_pool", "uvicorn", "starlette")
"""Top-level packages a keyless stdio start must not import before it answers ``tools/list``."""
OURS_HELD_BACK = (
    "kling_video_mcp.surface.http",  # the HTTP app (Starlette, uvicorn, sign-in)
    "kling_video_mcp.emulator",  # the sandbox's emulator starts on the first sandbox request
    "kling_video_mcp.journal.postgres",  # only with a PostgreSQL URL
)
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|( *)(\S+)\s*$")


def imports(stderr: str) -> list[tuple[int, str]]:
    """``(depth, module)`` per ``-X importtime`` line, in the order CPython wrote them: a module's
    line comes after those of the modules it imported, which are one level deeper."""
    return [(len(m[1]) // 2, m[2]) for line in stderr.splitlines() if (m := IMPORT_LINE.match(line))]


def importer_chain(lines: list[tuple[int, str]], index: int) -> str:
    """``module <- importer <- ...`` for the module at ``lines[index]``, from the nesting."""
    depth, chain = lines[index][0], [lines[index][1]]
    for later_depth, name in lines[index + 1 :]:
        if later_depth < depth:
            chain.append(name)
            depth = later_depth
    return " <- ".join(chain)


def held_back(module: str) -> str | None:
    """The entry of :data:`HELD_BACK` or :data:`OURS_HELD_BACK` that ``module`` belongs to, if any."""
    if (package := module.split(".")[0]) in HELD_BACK:
        return package
    return next((ours for ours in OURS_HELD_BACK if module == ours or module.startswith(ours + ".")), None)


def held_back_loaded(lines: list[tuple[int, str]]) -> dict[str, str]:
    """Each held-back package or module that was imported, with the chain that imported it first."""
    found: dict[str, str] = {}
    for index, (_, name) in enumerate(lines):
        if (watched := held_back(name)) is not None and watched not in found:
            found[watched] = importer_chain(lines, index)
    return found


def sdk_loaded() -> set[str]:
    """The held-back packages the bare SDK's ``MCPServer`` imports by itself."""
    probe = "import sys, mcp.server.mcpserver; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    return set(HELD_BACK) & set(loaded)


def keyless_env(tmp_path: Path) -> dict[str, str]:
    """This environment without provider keys or server settings: a first-time user's setup."""
    keys = {variable for provider in PROVIDERS for variable in provider.key_variables}
    env = {k: v for k, v in os.environ.items() if k not in keys and not k.startswith("KLING_MCP_")}
    env.update(KLING_MCP_OUTPUT_DIR=str(tmp_path / "clips"), KLING_MCP_STATE_DIR=str(tmp_path / "state"))
    return env


async def test_keyless_stdio_start_loads_nothing_it_does_not_use(tmp_path):
    params = StdioServerParameters(
        command=sys.executable, args=["-X", "importtime", "-m", "kling_video_mcp"], env=keyless_env(tmp_path)
    )
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        async with Client(stdio_client(params, errlog=stderr)) as client:
            tools = (await client.list_tools()).tools
            before_answer = imports(stderr_path.read_text())
    assert {"generate_video", "check_task"} <= {tool.name for tool in tools}
    assert any(name == "kling_video_mcp.surface.server" for _, name in before_answer), "no -X importtime lines read"
    loaded = held_back_loaded(before_answer)
    allowed = sdk_loaded()
    unexpected = {name: chain for name, chain in loaded.items() if name not in allowed}
    assert not unexpected, "imported before the first tools/list answer:\n" + "\n".join(unexpected.values())
