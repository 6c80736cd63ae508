"""One run per output folder: a lock file that names its owner, taken over when the owner is dead.

    with OutputLock("output/run"):   # a second process on the same folder gets LockError at once
        ...

The lock is `.minibert.lock` in the folder, created with O_EXCL (atomic on local and NFSv3+ file
systems) and holding {"pid", "host", "started"}. A lock whose process no longer runs on this host
(a run killed with SIGKILL, a machine that rebooted) is stale and is taken over with a warning. A
lock from another host cannot be checked from here and is refused; the message says which file to
delete once that run is known to be gone. The lock is re-entrant within a process: the CLI takes
it before it touches the folder, the trainer again around the loop; both through RunFolder.lock()
(run_folder.py). Imports no torch.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path

LOCK_NAME = ".minibert.lock"

_held: dict[Path, int] = {}  # lock file -> how many times this process holds it


class LockError(RuntimeError):
    """Another run is writing the folder; the message names it and what to do."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read_owner(path: Path) -> dict | None:
    """The lock's contents, or None when it is unreadable or half-written (treated as stale)."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return None
    return owner


class OutputLock:
    """Hold `folder`'s lock for the duration of a `with` block (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = (self.folder / LOCK_NAME).absolute()
        self.created = False

    def acquire(self) -> None:
        if self.path in _held:
            _held[self.path] += 1
            return
        self.created = not self.folder.exists()  # removed again at release if the run wrote nothing
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):  # a stale lock removed by someone else between our attempts: try again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_stale(me)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            _held[self.path] = 1
            return
        raise LockError(f"{self.folder}: could not take the lock {self.path.name}; another run keeps replacing it")

    def _check_stale(self, me: dict) -> None:
        """Raise LockError if the lock's owner may still be running; else remove the stale lock."""
        owner = _read_owner(self.path)
        if owner is not None:
            pid, host = owner["pid"], owner.get("host")
            since = f", started {owner['started']}" if owner.get("started") else ""
            if host != me["host"]:
                raise LockError(f"{self.folder}: in use by process {pid} on host {host}{since}; if that run is "
                                f"gone, delete {self.path}, or choose another --output")
            if _alive(pid) and pid != me["pid"]:
                raise LockError(f"{self.folder}: another run (process {pid}{since}) is writing this folder; "
                                f"wait for it to finish, stop it, or choose another --output")
            what = f"process {pid}, which is no longer running"
        else:
            what = "an unreadable lock file"
        warnings.warn(f"{self.folder}: taking over the lock left by {what}", stacklevel=3)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        count = _held.get(self.path, 0)
        if count > 1:
            _held[self.path] = count - 1
            return
        _held.pop(self.path, None)
        if count == 1:
            owner = _read_owner(self.path)
            if owner is not None and owner["pid"] == os.getpid():
                self.path.unlink(missing_ok=True)
            if self.created:
                try:
                    self.folder.rmdir()  # only if empty: a run that failed before writing leaves no folder
                except OSError:
                    pass

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
