"""Where tasks, uploads, backgrounds and rendered clips live.

Everything is written under one root directory: ``state_dir`` when configured
(so a restarted emulator still knows its tasks, as the brief requires), else a
private temporary directory removed at exit. Tasks are also cached in memory;
the files are read back only when a task is not in the cache (another
emulator process wrote it).

Layout: ``tasks/<id>.json``, ``uploads/up_<hex>.<ext>``,
``backgrounds/<id>.png``, ``clips/<id>.mp4``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from .tasks import Task

log = logging.getLogger(__name__)

_TASK_ID = re.compile(
    # UUIDs (Novita, WaveSpeed, fal), Kling's 18-digit ids, Replicate's 26-letter base32 ids
    r"^(?:[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}|[0-9]{18,19}|[a-z2-7]{26})$"
)
_UPLOAD_NAME = re.compile(r"^up_[0-9a-f]{12}\.[a-z0-9]{2,5}$")
_AREAS = ("tasks", "uploads", "backgrounds", "clips")


class Store:
    """Thread-safe task registry plus the files that belong to tasks and uploads."""

    def __init__(self, state_dir: Path | None) -> None:
        if state_dir is None:
            self._scratch: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(
                prefix="kling-emulator-"
            )
            self.root = Path(self._scratch.name)
        else:
            self._scratch = None
            self.root = Path(state_dir)
        for area in _AREAS:
            (self.root / area).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}

    @property
    def persistent(self) -> bool:
        return self._scratch is None

    # -- tasks -------------------------------------------------------------

    def save(self, task: Task) -> None:
        """Insert or update ``task`` in memory and on disk (atomic replace)."""
        with self._lock:
            self._tasks[task.id] = task
        write_atomic(self._task_file(task.id), json.dumps(task.to_json()).encode())

    def get(self, task_id: str) -> Task | None:
        """The task with ``task_id``, or ``None``; ids that cannot be ours are never looked up on disk."""
        with self._lock:
            task = self._tasks.get(task_id)
        if task is not None or not _TASK_ID.match(task_id):
            return task
        try:
            task = Task.from_json(json.loads(self._task_file(task_id).read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring unreadable task file for %s", task_id)
            return None
        with self._lock:
            return self._tasks.setdefault(task_id, task)

    def _task_file(self, task_id: str) -> Path:
        return self.root / "tasks" / f"{task_id}.json"

    # -- files -------------------------------------------------------------

    def add_upload(self, data: bytes, extension: str) -> str:
        """Keep an uploaded file; returns its public name ``up_<hex>.<ext>``."""
        name = f"up_{uuid.uuid4().hex[:12]}.{extension}"
        write_atomic(self.root / "uploads" / name, data)
        return name

    def upload_path(self, name: str) -> Path | None:
        """Path of upload ``name`` if it exists (names are validated, so no traversal)."""
        if not _UPLOAD_NAME.match(name):
            return None
        path = self.root / "uploads" / name
        return path if path.is_file() else None

    def background_path(self, task_id: str) -> Path:
        """Where the i2v background of a task is (or will be) kept."""
        return self.root / "backgrounds" / f"{task_id}.png"

    def clip_path(self, task_id: str) -> Path:
        """Where the rendered clip of a task is (or will be) cached."""
        return self.root / "clips" / f"{task_id}.mp4"

    def clear(self) -> None:
        """Forget every task and delete every file, persistent or not."""
        with self._lock:
            self._tasks.clear()
            for area in _AREAS:
                shutil.rmtree(self.root / area, ignore_errors=True)
                (self.root / area).mkdir(parents=True, exist_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or the whole file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

