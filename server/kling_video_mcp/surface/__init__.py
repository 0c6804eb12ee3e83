"""The MCP surface: tools, their parameters and results, and the server that serves them."""
