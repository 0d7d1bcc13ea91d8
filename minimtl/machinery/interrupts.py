"""Ctrl-C during training: stop within the batch (never in the middle of a save), say what is saved and how
to continue."""

import signal
import threading
from contextlib import contextmanager


class Interrupted(Exception):
    """Ctrl-C during training: the message says what is saved and how to continue."""


class CtrlC:
    """What Ctrl-C does during training: stop within the batch, but never in the middle of a save.

    Outside a save, the handler raises KeyboardInterrupt at once: Python delivers it between two bytecodes,
    so a long tensor operation finishes first and the stop comes within one batch, in the feature cache as
    much as in an epoch. During a save (`saving()`) the first Ctrl-C only asks, and the save finishes first;
    a second one raises at once (the save's temporary is then discarded, the previous run stays whole).
    The request is also remembered (`check()`, called before every batch): KeyboardInterrupt raised inside a
    finalizer run by garbage collection is printed as "Exception ignored" and dropped, and the run must
    still stop at the next batch. Under torchrun SIGTERM is handled the same way: the launcher sends it
    when another process failed.
    """

    def __init__(self):
        self.requested = threading.Event()
        self.in_save = False

    def handler(self, signum, frame):
        first = not self.requested.is_set()
        self.requested.set()
        if not (self.in_save and first):
            raise KeyboardInterrupt

    def check(self):
        if self.requested.is_set():
            raise KeyboardInterrupt

    @contextmanager
    def saving(self):
        self.in_save = True
        try:
            yield
        finally:
            self.in_save = False
        self.check()  # a request that waited for the save


@contextmanager
def ctrl_c_between_batches(progress, out, command="python train.py", signals=(signal.SIGINT,)):
    """A `CtrlC` for the run; Ctrl-C ends it with `Interrupted`, saying what is saved and how to continue
    (`command` --resume `out`)."""
    ctrl_c = CtrlC()
    # Only the main thread may set signal handlers; elsewhere Ctrl-C is the main thread's business.
    on_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, ctrl_c.handler) for s in signals} if on_main else {}
    try:
        yield ctrl_c
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
    # Every save is whole (atomic_directory) and an unfinished one is discarded: what is on disk is the last
    # save that ended, not the last epoch that ended (a Ctrl-C may cut the save after it).
    done = progress.saved
    return f"the state after epoch {done} is saved; continue with: {command} --resume {out}" if done else \
        "no epoch had finished, so nothing was saved"
