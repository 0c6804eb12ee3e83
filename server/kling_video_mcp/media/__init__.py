"""Media work on finished clips with PyAV: everything here blocks, so callers run it on worker threads."""
