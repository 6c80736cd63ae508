"""What both commands do with what goes wrong: expected errors as one line and exit status 2, a closed
pipe as 141, Ctrl-C as 130, library warnings as one plain line each."""

from __future__ import annotations

import os
import sys
import warnings


class UsageError(Exception):
    """Wrong input from the user: printed as one line, exit status 2."""


def _fail(prog: str, message: str, status: int = 2) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


def run_command(prog: str, fn, argv) -> int:
    """Run a command, turning expected errors into one line on stderr instead of a traceback.

    When stdout's reader goes away (`predict.py ... | head -1`) the command stops quietly with exit
    status 141, 128 + SIGPIPE, what a shell shows for a writer the closed pipe ended.
    """
    import torch

    from ..checkpoint import CheckpointError
    from ..data.readers import DataError
    from ..lock import LockError
    from ..train_state import TrainingError

    try:
        status = fn(argv) or 0
        sys.stdout.flush()  # so that a closed pipe shows here, not in the interpreter's flush at exit
        return status
    except BrokenPipeError:
        # Python flushes stdout once more at exit and would report the broken pipe again; a stdout
        # pointing at /dev/null takes that flush (Python docs, signal module, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt as e:  # the trainer's Interrupted carries 143 for SIGTERM
        return _fail(prog, str(e) or "interrupted", getattr(e, "exit_status", 130))
    except torch.OutOfMemoryError:
        return _fail(prog, "out of memory; lower --batch-size (raise --grad-accum to keep the effective batch) "
                           "or --max-length")
    except (UsageError, DataError, CheckpointError, TrainingError, LockError, FileNotFoundError,
            ValueError) as e:
        return _fail(prog, str(e).splitlines()[0] if str(e) else type(e).__name__)
    except RuntimeError as e:
        if "out of memory" in str(e) or "can't allocate memory" in str(e):
            return _fail(prog, "out of memory; lower --batch-size (raise --grad-accum to keep the effective "
                               "batch) or --max-length")
        raise


def show_warnings() -> None:
    """Library warnings as one plain line each, not Python's file:line form."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show
