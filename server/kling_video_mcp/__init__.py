"""kling-video-mcp: an MCP server that makes videos with Kling v3.0.

Layout (data flows one way, top to bottom):

- ``surface/``: the MCP surface (tools, results, resources, server assembly).
- ``tasks/``: the task domain: the service façade over submission, delivery and the watcher.
- ``journal/``: where tasks are kept (SQLite, or PostgreSQL for several workers).
- ``media/``: PyAV work on clips: the probe, companions, films, previews.
- ``providers/``: one self-describing class per hosted provider, registered in one tuple, over HTTP.
- ``emulator/``: a local emulator of the providers' HTTP APIs (tests, and the free placeholder provider).
"""

__version__ = "0.1.0"
