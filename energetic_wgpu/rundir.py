"""The output folder of a training run: one writer at a time.

:class:`RunLock` holds an exclusive ``fcntl.flock`` on ``<folder>/.energetic-wgpu.lock``
for the duration of a run. The operating system drops the lock when the process ends, even
by SIGKILL, so a stale lock never blocks a later run. A second process that asks for the
same folder gets :class:`~energetic_wgpu.errors.RunLockedError` naming the folder and the
holder's PID (written into the lock file, created like any other output with ``0o666``
less the umask). Within one process the lock is re-entrant (the command line takes it
before resuming, the trainer again for its run).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

from .errors import RunLockedError

__all__ = ["RunLock", "LOCK_NAME"]

LOCK_NAME = ".energetic-wgpu.lock"

_held: dict[str, list[Any]] = {}  # real folder path -> [fd, depth]
_guard = threading.Lock()


class RunLock:
    """Exclusive lock on a run folder (created if missing). Use as a context manager, or
    :meth:`acquire` / :meth:`release`.

    Raises:
        RunLockedError: another process holds the folder (the message names the folder and PID).
        OSError: the folder or the lock file cannot be created.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._key: str | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> "RunLock":
        if self._key is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.folder)
        with _guard:
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return self
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise RunLockedError(
                    f"the output folder {str(self.folder)!r} is in use by another run (PID {holder}); "
                    "wait for it to finish or choose another --out"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _held[key] = [fd, 1]
            self._key = key
        return self

    def release(self) -> None:
        if self._key is None:
            return
        with _guard:
            entry = _held[self._key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self._key]
                os.close(entry[0])  # closing the descriptor drops the flock
        self._key = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
