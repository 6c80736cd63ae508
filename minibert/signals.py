"""SIGINT (Ctrl-C) and SIGTERM (timeouts, schedulers, container stops) while training.

Inside `Signals.handled()` either signal raises `Stop` in the loop between two statements, and the trainer
saves a checkpoint and raises `Interrupted`. A signal that arrives while a save is under way
(`Signals.critical()`) waits for it, so no save is ever abandoned half-way; once the trainer is saving on
its way out, further signals are ignored.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Interrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT (Ctrl-C) or SIGTERM (timeout, schedulers, container stops) after
    saving a checkpoint. exit_status is the shell's convention for death by that signal: 128 + its
    number (130, 143)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_status = 128 + self.signum


class Stop(KeyboardInterrupt):
    """Raised by the signal handler between steps; becomes Interrupted once a checkpoint is saved."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """The trainer's signal handling: `handled()` around the loop, `critical()` around each save.
    say: prints a line (with any progress bar cleared)."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.saving = False  # a save in progress: a signal waits for it
        self.pending: int | None = None  # the signal that waited
        self.stopping = False  # the trainer is saving on its way out: nothing more to stop

    @contextmanager
    def handled(self) -> Iterator[None]:
        """SIGINT and SIGTERM raise Stop while inside. Only the main thread can install handlers; elsewhere
        Ctrl-C stays Python's KeyboardInterrupt."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.saving:  # never abandon a save half-way: stop once it is complete
                self.pending = signum
                self.say(f"{signal.Signals(signum).name}: finishing the save in progress, then stopping")
                return
            raise Stop(signum)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A save that a signal must not cut short: a signal that arrives meanwhile is raised after it."""
        outer, self.saving = self.saving, True
        try:
            yield
        finally:
            self.saving = outer
        if not outer and self.pending is not None and not self.stopping:
            signum, self.pending = self.pending, None
            raise Stop(signum)
