"""Ctrl-C during training: stop at a batch boundary, say what is saved and how to continue."""

import signal
import threading
from contextlib import contextmanager


class Interrupted(Exception):
    """Ctrl-C during training: the message says what is saved and how to continue."""


@contextmanager
def ctrl_c_between_batches(progress, out, command="python train.py", signals=(signal.SIGINT,)):
    """Make the first Ctrl-C a request that the loop honours at its next batch boundary (`check()`), then
    stop with `Interrupted`, saying what is saved and how to continue (`command` --resume `out`).

    Why not let KeyboardInterrupt fly: Python raises it wherever the main thread happens to be, and when
    that is inside a finalizer run by garbage collection it prints "Exception ignored" and drops it, so the
    run would go on. A second Ctrl-C raises at once. Under torchrun SIGTERM is handled the same way: the
    launcher sends it when another process failed, and a save in progress should finish, not be cut off.
    """
    requested = threading.Event()

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    def check():
        if requested.is_set():
            raise KeyboardInterrupt

    # Only the main thread may set signal handlers; elsewhere Ctrl-C is the main thread's business.
    on_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, handler) for s in signals} if on_main else {}
    try:
        yield check
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted during epoch {progress.epoch + 1}: {what_is_saved(progress, out, command)}") \
            from None
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class Checked(list):
    """A list of batches whose iteration calls `check()` before each one: where the loop honours Ctrl-C,
    without the loop knowing (it only iterates)."""

    def __init__(self, items, check):
        super().__init__(items)
        self.check = check

    def __iter__(self):
        for item in super().__iter__():
            self.check()
            yield item


def what_is_saved(progress, out, command):
    # Every finished epoch was saved whole (atomic_directory), and an unfinished save was discarded.
    done = progress.epoch
    return f"the state after epoch {done} is saved; continue with: {command} --resume {out}" if done else \
        "no epoch had finished, so nothing was saved"
