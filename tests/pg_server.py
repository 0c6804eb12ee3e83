"""A real PostgreSQL server for the tests (and ``python -m bench``): Debian's ``postgresql``
binaries, a temporary folder, a free port.

``initdb`` refuses to run as root, and CI runs as root: then every server command runs as the
unprivileged ``postgres`` user the package creates (``runuser``), in a folder it owns. As
anyone else, they run as the current user. Nothing here needs a server someone else started.

Several servers may start at once (one per pytest-xdist worker): each has its own folder, and
one that loses its port to another between choosing it and binding it tries another port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the server would not start; the message says why."""

SERVER_USER = "postgres"
PORT_ATTEMPTS = 5
DB_USER = "kling"
MISSING = (
    "PostgreSQL's server binaries (initdb, pg_ctl) were not found under /usr/lib/postgresql/*/bin or on PATH. "
    "Install them: apt-get install postgresql (.ci/run does this when pg_ctl is missing)."
)


def server_binaries() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: Debian's newest version first, then PATH."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True):
        if (folder / "pg_ctl").is_file() and (folder / "initdb").is_file():
            return folder
    if found := shutil.which("pg_ctl"):
        return Path(found).parent
    raise PostgresUnavailable(MISSING)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway server; yields the URL of its ``postgres`` database (user ``kling``, trust auth)."""
    binaries = server_binaries()
    folder = Path(tempfile.mkdtemp(prefix="kling-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, SERVER_USER, SERVER_USER)
    data = folder / "data"
    log = folder / "server.log"

    def run(*argv: str) -> None:
        done = subprocess.run(_as_server_user([str(binaries / argv[0]), *argv[1:]]), capture_output=True, text=True)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{argv[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    run("initdb", "-D", str(data), "-U", DB_USER, "--auth=trust", "-E", "UTF8", "--no-sync")
    for attempt in range(PORT_ATTEMPTS):
        port = _free_port()
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        try:
            run("pg_ctl", "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
            break
        except PostgresUnavailable:
            taken = log.is_file() and "already in use" in log.read_text(errors="replace")
            if not taken or attempt == PORT_ATTEMPTS - 1:
                raise
            log.unlink()
    try:
        yield f"postgresql://{DB_USER}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server_url: str, name: str) -> str:
    """Create the empty database ``name`` on the server; returns its URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"
