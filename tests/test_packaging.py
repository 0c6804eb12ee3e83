"""Packaging for the ecosystem: the built wheel runs under ``uvx``, and ``server.json`` is a
valid MCP registry entry that agrees with the package.

- ``uv build`` makes the sdist and, from it, the wheel (so a file the sdist leaves out shows
  up here); ``uvx --from <wheel> kling-video-mcp`` then serves a whole MCP session over stdio
  from uv's own environment, with this source tree nowhere on its path.
- ``server.json`` validates against the registry's published schema, 2025-12-11
  (https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json), kept in
  ``tests/schemas/`` byte for byte: CI reaches no host but the package registries, so the
  copy is pinned by its sha256 and replacing it is a deliberate change.

uv comes from PyPI: ``.ci/run`` puts it on PATH; elsewhere pip fetches it once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from jsonschema import Draft7Validator, FormatChecker
from mcp import Client, StdioServerParameters

from helpers import wait_done
from kling_video_mcp import __version__
from kling_video_mcp.config import Settings
from kling_video_mcp.providers import PROVIDERS
from test_http import sandbox_env

ROOT = Path(__file__).resolve().parents[1]
SERVER_JSON = json.loads((ROOT / "server.json").read_text())
SCHEMA_PATH = ROOT / "tests" / "schemas" / "mcp-registry-server-2025-12-11.json"
SCHEMA_SHA256 = "3fba09590c99f61735d234822279f4223fab9e300c0a81e81c91ab62a4114de0"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def uv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``uv`` executable (``uvx`` is beside it)."""
    if found := shutil.which("uv"):
        return Path(found)
    target = tmp_path_factory.mktemp("uv")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "uv"]
    subprocess.run(pip, check=True, timeout=600)
    return target / "bin" / "uv"


def uv_env(tmp_path: Path) -> dict[str, str]:
    """The sandbox server's environment, for uv: never download a Python, take this one."""
    env = sandbox_env(tmp_path, UV_PYTHON_DOWNLOADS="never", UV_PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


@pytest.fixture(scope="module")
def wheel(uv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``uv build`` makes from the sdist of this tree."""
    out = tmp_path_factory.mktemp("dist")
    env = uv_env(out)
    subprocess.run([str(uv), "build", "--quiet", "--out-dir", str(out), str(ROOT)], env=env, check=True, timeout=600)
    (built,) = out.glob("kling_video_mcp-*.whl")
    return built


def test_the_wheel_carries_the_server_and_the_registry_marker(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"kling_video_mcp-{__version__}.dist-info/METADATA").decode()
        entry_points = archive.read(f"kling_video_mcp-{__version__}.dist-info/entry_points.txt").decode()
    assert {"kling_video_mcp/cli.py", "kling_video_mcp/surface/http.py", "kling_video_mcp/emulator/app.py"} <= names
    assert not any(name.startswith("tests/") for name in names)
    assert "kling-video-mcp = kling_video_mcp.cli:main" in entry_points
    # The registry proves a PyPI package is ours by this line in its description (the README).
    assert f"mcp-name: {SERVER_JSON['name']}" in metadata


async def test_uvx_serves_mcp_from_the_built_wheel(uv, wheel, tmp_path):
    uvx = str(uv.with_name("uvx"))
    env = uv_env(tmp_path)
    where = subprocess.run(
        [uvx, "--from", str(wheel), "python", "-c", "import kling_video_mcp; print(kling_video_mcp.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    assert not Path(where.stdout.strip()).is_relative_to(ROOT), where.stdout  # not this source tree
    params = StdioServerParameters(command=uvx, args=["--from", str(wheel), "kling-video-mcp"], env=env, cwd=str(tmp_path))
    async with Client(params, mode="legacy") as client:
        assert client.server_info.version == __version__
        submitted = await client.call_tool("generate_video", {"prompt": "a paper plane", "duration": 3})
        done = await wait_done(client, submitted.structured_content["task_id"])
    assert done.structured_content["status"] == "succeeded", done.structured_content
    assert Path(done.structured_content["file_path"]).is_file()


def test_server_json_is_valid_against_the_registry_schema():
    raw = SCHEMA_PATH.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256, "the vendored schema is not the published 2025-12-11 file"
    schema = json.loads(raw)
    assert SERVER_JSON["$schema"] == schema["$id"]
    validator = Draft7Validator(schema, format_checker=FormatChecker())
    assert [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(SERVER_JSON)] == []


def test_server_json_agrees_with_the_package():
    (package,) = SERVER_JSON["packages"]
    assert SERVER_JSON["version"] == package["version"] == PYPROJECT["version"] == __version__
    assert package["identifier"] == PYPROJECT["name"] and package["registryType"] == "pypi"
    variables = package["environmentVariables"]
    fields = Settings.model_fields.values()
    aliases = {name for field in fields if field.validation_alias for name in field.validation_alias.choices}
    aliases |= {name for provider in PROVIDERS for name in provider.variables()}  # read through Settings too
    assert {variable["name"] for variable in variables} <= aliases  # each is a real setting
    assert all(variable.get("isSecret") for variable in variables if variable["name"].endswith("_API_KEY"))
    assert f"mcp-name: {SERVER_JSON['name']}" in (ROOT / "README.md").read_text()

