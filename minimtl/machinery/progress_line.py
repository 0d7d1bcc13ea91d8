"""Progress within long work (an epoch, the feature cache, an evaluation, infer.py's texts): what a person
waiting wants to know, never a flood. The one progress mechanism of training and inference.

    bar = ProgressLine(batches, "epoch 2/6", log=print)
    for batch in bar:
        ...
        bar.loss = loss.item()          # optional: shown as a running mean

Work that is not a loop over a list of batches counts its steps itself: `ProgressLine(12, "dev")` for 12
steps to come (`counted` wraps an evaluation's forward pass, whose batches the core makes), or
`ProgressLine(None, "predicting", unit="texts")` for texts that arrive as they come; `step(n)` after each.

On a terminal (stderr is one) a single line is rewritten in place, at most ten times a second:

    epoch 2/6  180/412 batches  44%  loss 0.4312  640 sentences/s  0:12 elapsed, about 0:16 left

Anywhere else (CI, a log file, a notebook's captured output) the same text goes to `log` as a plain line when
another tenth of the work is done, but no more often than every MIN_GAP seconds, or after QUIET_SECONDS
without one: a 10-second epoch says nothing more than its own line, a 5-minute one about ten lines.
"""

import sys
import time
from collections import deque

MIN_GAP = 5.0  # seconds between two plain lines, at the least
QUIET_SECONDS = 30.0  # a plain line comes at least this often while the work goes on
REDRAW = 0.1  # seconds between two rewrites of the terminal line
RUNNING = 50  # steps the shown loss is the mean of: it follows the epoch's trend
CURVE_POINTS = 300  # per-step losses a run keeps for curves.svg: enough for the shape, few enough for small files


def clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class ProgressLine:
    """`steps` (batches: anything with a length), each counted done, with its sentences (`batch.index`), once
    the consumer asks for the next; or the number of steps to come (None: unknown), each counted by `step`.
    The progress of `what` goes to `log` as plain lines, or to `terminal` (default: stderr, when it is a
    terminal; False: none) as one rewritten line, cleared once the work is done; `quiet` says nothing at all.
    `unit`: what a step's items are.
    With `points`, the running mean of the loss is also kept at most that many times, evenly over the work, in
    `curve`: [[the fraction of the work done, the mean]], which curves.svg draws."""

    def __init__(self, steps, what, log=print, quiet=False, points=0, terminal=None, unit="sentences"):
        self.steps, self.what, self.log, self.quiet, self.unit = steps, what, log, quiet, unit
        self.total = steps if steps is None or isinstance(steps, int) else len(steps)
        if terminal is None:  # found out: stderr, when it is a terminal; False: none
            terminal = sys.stderr if sys.stderr is not None and sys.stderr.isatty() else None
        self.terminal = terminal or None
        self.done = self.items = 0
        self.drawn = False  # the terminal shows the line
        self.loss, self.losses = None, deque(maxlen=RUNNING)
        self.points, self.curve = points, []
        self.start = self.shown = time.monotonic()
        self.next_tenth = 1

    def __len__(self):
        return self.total

    def __iter__(self):
        self.start = self.shown = time.monotonic()
        try:
            for step in self.steps:
                yield step
                self.step(len(step.index))
        finally:
            self.end()

    def step(self, items):
        self.done += 1
        self.items += items
        if self.loss is not None:
            self.losses.append(self.loss)
            self.loss = None
            if self.points and self.done * self.points // self.total > len(self.curve):  # another 1/points done
                # Rounded: metrics.jsonl keeps them, and more digits would only add bytes.
                self.curve.append([round(self.done / self.total, 4), round(sum(self.losses) / len(self.losses), 6)])
        if self.quiet or self.total == 0:
            return
        now = time.monotonic()
        if self.terminal is not None:
            if now - self.shown >= REDRAW or self.done in (1, self.total):  # at once, and at the end
                self.terminal.write(f"\r{self.line(now)}\033[K")
                self.terminal.flush()
                self.shown, self.drawn = now, True
        elif self.total and 10 * self.done >= self.next_tenth * self.total and now - self.shown >= MIN_GAP \
                or now - self.shown >= QUIET_SECONDS:
            self.log(self.line(now))
            self.shown = now
            self.next_tenth = 10 * self.done // self.total + 1 if self.total else 0
        if self.done == self.total:  # what comes next starts on a clear line
            self.end()

    def line(self, now):
        elapsed = now - self.start
        parts = [self.what, f"{self.done}/{self.total} batches", f"{100 * self.done // self.total}%"] if self.total \
            else [self.what, f"{self.items:,} {self.unit}"]
        if self.losses:
            parts.append(f"loss {sum(self.losses) / len(self.losses):.4f}")
        if elapsed > 0:
            parts.append(f"{self.items / elapsed:,.0f} {self.unit}/s")
        left = elapsed * (self.total - self.done) / self.done if self.done and self.total else 0
        parts.append(f"{clock(elapsed)} elapsed" + (f", about {clock(left)} left" if left else ""))
        return "  ".join(parts)

    def end(self):
        """Clear the terminal line (the work's own summary line comes next)."""
        if self.drawn:
            self.terminal.write("\r\033[K")
            self.terminal.flush()
            self.drawn = False


def counted(forward, line):
    """`forward` (evaluation.head_outputs' own), each batch it computes counted a step of `line`: an evaluation is
    paced from outside the core, which makes its batches itself."""
    def watched(batch):
        out = forward(batch)
        line.step(len(batch.index))
        return out
    return watched
