"""Errors a user can fix. The CLI prints their message on one line and exits with code 2.

This module imports nothing from rpd, so every layer (data included) may raise these.
"""

from collections.abc import Iterator
from contextlib import contextmanager


class RpdError(Exception):
    """Bad input or a missing prerequisite: the message names the file/option and the fix."""

    exit_code = 2


class InputError(RpdError):
    """A file, directory or option the user gave is wrong (missing, corrupt, mismatched)."""


class SetupError(RpdError):
    """The machine lacks something rpd needs (e.g. a Vulkan device for SAPIEN)."""


class StorageError(RpdError):
    """Writing failed for lack of space (or a read-only disk): the message names what was
    being written and says that what was written before is intact."""


DISK_FULL_ERRNOS = (28, 122, 30)
"""ENOSPC, EDQUOT, EROFS: a write the user can fix by freeing space (or remounting)."""


@contextmanager
def disk_writes(what: str, kept: str) -> Iterator[None]:
    """`with disk_writes(what, kept):` turns a full (or read-only) disk into one StorageError
    naming `what` and saying what is `kept`; other errors pass through."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_FULL_ERRNOS:
            raise
        raise StorageError(f"{what}: {e.strerror}; {kept}. Free space and run the same command "
                           "again (rpd train: with --resume)") from None


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside: SIGTERM (`kill`, a scheduler's or CI's stop) raises KeyboardInterrupt in the
    main thread as Ctrl-C does, so `finally` blocks close worker processes and the CLI says
    how to continue; outside the main thread (where signals cannot be set) nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
