"""The MCP prompts: ``storyboard``."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from kling_video_mcp.surface.state import AppState

STORYBOARD_DESCRIPTION = "Plan a multi-shot story, render the shots with visual continuity, and report the clips in order."

STORYBOARD_PROMPT = """\
Make a short video story from this idea: {idea}

1. Plan {shots} shots that tell it, each 3 to 15 seconds: for each, a prompt describing the scene, the motion,
   the camera and the sound. Keep characters, places and light consistent from shot to shot.
2. Price the plan first: call generate_video with dry_run=true for shot 1 (aspect_ratio="{aspect_ratio}",
   mode="{mode}") and tell me the estimated total before spending anything.
3. Render shot 1 with generate_video (aspect_ratio="{aspect_ratio}", mode="{mode}"). Wait for it with
   check_task(task_id=..., wait_seconds=45), calling again while it is still running.
4. For each following shot, call animate_image with image="task:<previous task_id>" so it starts from the last
   frame of the shot before (the same mode), then wait for it the same way.
5. When all shots are done, call check_task(task_ids=[...]) once and report the clips in story order: the shot
   prompt, the file path and the duration of each, and the total estimated cost.
If a shot fails, say why (the error message says what to do) and ask me before retrying."""


def register_prompts(mcp: MCPServer[AppState]) -> None:
    """Add the ``storyboard`` prompt."""

    @mcp.prompt(name="storyboard", title="Storyboard", description=STORYBOARD_DESCRIPTION)
    def storyboard(idea: str, shots: int = 4, aspect_ratio: str = "16:9", mode: str = "std") -> str:
        return STORYBOARD_PROMPT.format(idea=idea, shots=shots, aspect_ratio=aspect_ratio, mode=mode)
