"""The official MCP conformance suite (npm @modelcontextprotocol/conformance) against the
streamable-HTTP server, on the free sandbox.

The suite tests servers over HTTP only and needs Node 22 or newer (https://github.com/modelcontextprotocol/conformance); .ci/run
installs both. Each scenario runs at every protocol revision it applies to among the two this
server speaks: 2025-11-25 (the initialize handshake, sessions) and 2026-07-28 (stateless).

Only generic scenarios run: most others drive the suite's own fixture tools, prompts and
resources (``test_simple_text``, ``json_schema_2020_12_tool``, ...) from its "everything"
example server, and against any other server they fail, or worse pass falsely (a
``tools-call-simple-text`` "passes" on ``Unknown tool``). Left out, and why:

- ``tools-call-*``, ``resources-read-*``, ``resources-templates-read``, ``prompts-get-*``,
  ``json-schema-2020-12``, ``completion-complete``, ``server-sse-polling``
  (``test_reconnection``), ``http-custom-header-server-validation`` (a tool with
  ``x-mcp-header`` parameters), ``elicitation-*``, ``input-required-result-*``: fixture
  tools, prompts or resources this server does not have.
- ``logging-set-level``, ``tools-call-with-logging``: logging is deprecated in 2026-07-28
  (SEP-2577); this server logs to stderr and declares no ``logging`` capability.
- ``resources-subscribe``/``-unsubscribe``: no subscriptions (tasks are polled by handle).
- ``tasks-*``, ``sep-2640-*``: extensions this server does not implement.

Within ``server-stateless``, four checks call fixture tools (``test_missing_capability``,
``test_trigger_tool_change``, ``test_trigger_prompt_change``) and are baselined in
``EXPECTED_FAILURES`` with the reason; the suite fails the run if one of them ever passes, so
the baseline cannot go stale. Every other check of every scenario below must pass.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_http import clean_env, http_server, sandbox_env
from test_inspector import npm_tool

CONFORMANCE_PACKAGE = "@modelcontextprotocol/conformance@0.2.0-alpha.12"
"""The version .ci/run installs (the 0.1.x line predates 2026-07-28 and its scenarios)."""

LEGACY, MODERN = "2025-11-25", "2026-07-28"
SCENARIOS = [
    ("server-initialize", LEGACY),
    ("ping", LEGACY),
    ("server-session-lifecycle", LEGACY),
    ("tools-list", LEGACY),
    ("tools-list", MODERN),
    ("server-stateless", MODERN),
    ("caching", MODERN),
    ("http-header-validation", MODERN),
    ("dns-rebinding-protection", LEGACY),
    ("dns-rebinding-protection", MODERN),
    ("sep-2164-resource-not-found", MODERN),
    ("server-sse-multiple-streams", LEGACY),
    ("server-sse-multiple-streams", MODERN),
]

EXPECTED_FAILURES = {
    "server-stateless": {
        "sep-2575-server-rejects-undeclared-capability": "calls the fixture tool test_missing_capability; this "
        "server never relies on a client capability, so it has nothing to reject",
        "sep-2575-missing-capability-http-400": "the same fixture tool, for the HTTP status of that rejection",
        "sep-2575-server-sends-tools-list-changed-on-subscription": "a SHOULD, tested by calling the fixture "
        "tool test_trigger_tool_change; this server's tool list never changes",
        "sep-2575-server-sends-prompts-list-changed-on-subscription": "a SHOULD, tested through the fixture "
        "tool test_trigger_prompt_change; this server has no prompts",
    },
}
"""Checks that cannot pass against a server without the suite's fixtures, with the reason."""


@pytest.fixture(scope="module")
def mcp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("conformance")
    with http_server(sandbox_env(folder), log_dir=folder) as server:
        yield server.mcp_url


def failed_checks(results: Path) -> list[str]:
    """``id: message`` of every check that did not pass, from the suite's checks.json files."""
    return [
        f"{check['id']}: {check.get('errorMessage')}"
        for checks in results.glob("*/checks.json")
        for check in json.loads(checks.read_text())
        if check["status"] == "FAILURE"
    ]


@pytest.mark.parametrize(("scenario", "revision"), SCENARIOS, ids=[f"{s}@{r}" for s, r in SCENARIOS])
def test_conformance_scenario(mcp_url, tmp_path, scenario, revision):
    argv = [*npm_tool("conformance", CONFORMANCE_PACKAGE, min_node=22), "server", "--url", mcp_url]
    argv += ["--scenario", scenario, "--spec-version", revision, "--output-dir", str(tmp_path / "results")]
    if baseline := EXPECTED_FAILURES.get(scenario):
        entries = "".join(f"  - {scenario}:{check}\n" for check in baseline)
        (tmp_path / "baseline.yml").write_text("server:\n" + entries)
        argv += ["--expected-failures", str(tmp_path / "baseline.yml")]
    done = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=300)
    failures = failed_checks(tmp_path / "results")
    assert done.returncode == 0, f"{scenario} at {revision}: {failures or done.stdout[-3000:] + done.stderr[-3000:]}"
    assert list((tmp_path / "results").glob("*/checks.json")), "the suite wrote no results: did the scenario run?"
