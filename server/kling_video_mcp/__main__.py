from kling_video_mcp.cli import main

main()
