"""``kling-video-mcp demo`` makes a real clip through the server, as a new user would."""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers import clip_duration
from test_stdio import console_script


def test_demo_makes_a_playable_clip(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("KLING_MCP_")}
    env.update(KLING_MCP_OUTPUT_DIR=str(tmp_path / "clips"), KLING_MCP_STATE_DIR=str(tmp_path / "state"))
    run = subprocess.run(
        [console_script(), "demo", "a lighthouse at dusk", "--duration", "3"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines() if line.startswith(("Clip: ", "Resource link: ")))
    clip = lines["Clip"]
    assert clip.startswith(str(tmp_path / "clips"))
    assert lines["Resource link"].startswith("file://")
    assert clip_duration(clip) == pytest.approx(3, abs=0.1)
