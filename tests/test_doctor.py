"""``kling-video-mcp doctor`` against the emulator: good keys, a refused key, an unwritable folder.

The command reads the environment like the server does, so each test sets the variables a
user would. It must never print a key, and must not spend: no submit reaches the emulator.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import KEY
from helpers import FLAVORS, submits
from kling_video_mcp.cli import main

ENV_NAMES = {"novita": "NOVITA", "highway": "HIGHWAY", "wavespeed": "WAVESPEED"}


@pytest.fixture
def environment(monkeypatch, tmp_path, emulator) -> dict[str, str]:
    """A user's environment: every provider keyed and pointed at the emulator, folders in tmp."""
    values = {"KLING_MCP_OUTPUT_DIR": str(tmp_path / "clips"), "KLING_MCP_STATE_DIR": str(tmp_path / "state")}
    for flavor, prefix in ENV_NAMES.items():
        values |= {f"{prefix}_API_KEY": KEY, f"{prefix}_BASE_URL": emulator.url(flavor)}
    for name in ("KLING_MCP_PROVIDER", "KLING_MCP_MODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def doctor(capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(["doctor"])
    return exited.value.code, capsys.readouterr().out


def test_good_keys_are_accepted_without_spending(environment, emulator, capsys):
    status, out = doctor(capsys)
    assert status == 0, out
    assert "Novita AI key (NOVITA_API_KEY): accepted" in out
    assert "HighwayAPI key (HIGHWAY_API_KEY): accepted" in out
    assert "WaveSpeedAI key (WAVESPEED_API_KEY): accepted, balance $100.00" in out
    assert f"output folder {environment['KLING_MCP_OUTPUT_DIR']}: writable" in out
    assert f"state folder {environment['KLING_MCP_STATE_DIR']}: writable" in out
    assert "default provider novita" in out and "default mode 4k" in out
    assert "mcp 2." in out and "PyAV " in out and "All good." in out
    assert KEY not in out
    assert all(submits(emulator, flavor) == [] for flavor in FLAVORS)
    assert [r["path"] for r in emulator.requests("wavespeed")] == ["/api/v3/balance"]


def test_refused_key_fails_and_is_never_printed(environment, monkeypatch, capsys):
    wrong = "sk-live-not-a-real-key-42"
    monkeypatch.setenv("NOVITA_API_KEY", wrong)
    monkeypatch.delenv("HIGHWAY_API_KEY")
    status, out = doctor(capsys)
    assert status == 1, out
    assert "Novita AI key (NOVITA_API_KEY): REFUSED" in out and "Check NOVITA_API_KEY" in out
    assert "HighwayAPI key (HIGHWAY_API_KEY): not set" in out
    assert "WaveSpeedAI key (WAVESPEED_API_KEY): accepted" in out
    assert wrong not in out and "1 problem(s) found" in out


def test_unwritable_output_folder_fails(environment, monkeypatch, tmp_path, capsys):
    # A path under a regular file cannot be created, even by root (CI runs as root, where chmod does not bite).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    monkeypatch.setenv("KLING_MCP_OUTPUT_DIR", str(blocker / "clips"))
    status, out = doctor(capsys)
    assert status == 1, out
    assert f"output folder {blocker / 'clips'}: NOT WRITABLE" in out
    assert "state folder" in out and "1 problem(s) found" in out


def test_doctor_runs_as_a_command(environment):
    """The console entry point, as a user runs it: the report on stdout, the status as exit code."""
    done = subprocess.run(
        [sys.executable, "-m", "kling_video_mcp", "doctor"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All good." in done.stdout and KEY not in done.stdout + done.stderr
