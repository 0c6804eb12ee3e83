"""The floor of this stack: a minimal ``MCPServer`` with one trivial tool, on stdio.

Cold start and per-call overhead of kling-video-mcp are reported as multiples of this
server's, measured in the same run. The tool is ``async`` like ours (a plain ``def`` tool
would pay for a worker thread and flatter the comparison).
"""

from mcp.server.mcpserver import MCPServer

server = MCPServer("floor")


@server.tool()
async def ping(task_id: str = "") -> str:
    """Answer at once."""
    return "pong"


if __name__ == "__main__":
    server.run("stdio")
