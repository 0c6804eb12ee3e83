"""The MCP prompts: ``storyboard``."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from kling_video_mcp.surface.state import AppState

STORYBOARD_DESCRIPTION = (
    "Plan a multi-shot story, render the shots with visual continuity, and assemble them into one film "
    "with assemble_video."
)

STORYBOARD_PROMPT = """\
Make a short film from this idea: {idea}

1. Plan {shots} shots that tell it, each 3 to 15 seconds: for each, a prompt describing the scene, the motion,
   the camera and the sound. Keep characters, places and light consistent from shot to shot.
2. Price the plan first: call generate_video with dry_run=true for shot 1 (aspect_ratio="{aspect_ratio}",
   mode="{mode}") and tell me the estimated total before spending anything. If a shot costs more than the spend
   I set for confirmation, I am asked before it is sent: wait for my answer, never answer for me.
3. Render shot 1 with generate_video (aspect_ratio="{aspect_ratio}", mode="{mode}"). Wait for it with
   check_task(task_id=..., wait_seconds=45), calling again while it is still running.
4. For each following shot, call animate_image with image="task:<previous task_id>" so it starts from the last
   frame of the shot before (the same mode), then wait for it the same way. If a shot fails, say why (the error
   message says what to do) and ask me before retrying.
5. When all shots are done, call check_task(task_ids=[...]) once with every shot in story order: where the
   client shows the screening room, that puts the shots in front of me as a storyboard I can play. Tell me each
   shot's prompt, file path and duration.
6. Make the final cut: call assemble_video(task_ids=[...every shot's task_id, in story order], transition="cut"
   (or "crossfade" for soft joins), title="<a short title>"), wait for it with check_task on its task_id, and
   report the film: its file path, its duration, and the total estimated cost."""


def register_prompts(mcp: MCPServer[AppState]) -> None:
    """Add the ``storyboard`` prompt."""

    @mcp.prompt(name="storyboard", title="Storyboard", description=STORYBOARD_DESCRIPTION)
    def storyboard(idea: str, shots: int = 4, aspect_ratio: str = "16:9", mode: str = "std") -> str:
        return STORYBOARD_PROMPT.format(idea=idea, shots=shots, aspect_ratio=aspect_ratio, mode=mode)
