"""How many threads torch computes with: the count that is fastest now, as measured at the start of every phase.

torch splits every large operation over its threads, and each operation ends when its slowest thread ends.
When another process keeps a core busy, one of two threads shares that core with it and the other waits for
it at every operation: a 2-thread run then fell to a fraction of what one thread does alone, while a single
thread beside the same load kept its speed (docs/benchmarks.md, "Threads under load";
`python tests/benchmarks/bench_threads.py`). Which processes take a core cannot be read off the system: under
Linux's autogroup scheduling a `nice 19` process started from another terminal (another session) takes a
whole core, though /proc/stat counts its time as low priority. So it is measured: before the feature cache,
each epoch and infer.py --file's texts (`Paced`), and again every RECHECK_SECONDS of a long phase, a few
matrix products are timed with each count worth trying, and the fastest is kept, the log says which.

The products are synthetic on purpose. Timing real batches would compute some of them with a count that
turns out slow (40 times slower beside such a process: one batch would cost more than the rest of the
measuring), and the last bits of a result depend on the thread count, so on a quiet machine a run would no
longer give the same numbers twice. `--threads N` fixes the count, and so does OMP_NUM_THREADS in the
environment (torchrun sets it to 1 for each of its processes): then nothing is measured, and a resumed run
equals the uninterrupted one bit for bit whatever the load.
"""

import os
import time

import torch

PRODUCTS = 60  # 256 x 256 products per timing, ~12 ms on one core: a thread that shares its core must wait for
#                time slices within it (a timing of 1 ms can fall between two slices and see nothing)
ROUNDS = 3  # timings per count, in turn: the median decides
HOPELESS = 3.0  # a count this many times slower than the best after one round is not timed again
RECHECK_SECONDS = 60.0  # a long phase measures again this often: a neighbour may have started or stopped


def usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def product_seconds(counts):
    """count -> median seconds of PRODUCTS small matrix products with that many threads, fewest threads first
    (torch's count is left as it was). A count found over HOPELESS times slower than the best so far is
    given up at once, its time extrapolated: beside a busy process the whole timing would take 30 times longer."""
    x = torch.full((256, 256), 1 / 256)  # not random: a draw would move every seeded run's random numbers
    before, seconds = torch.get_num_threads(), {c: [] for c in sorted(counts)}
    for _ in range(ROUNDS):
        for c, times in seconds.items():
            best = min((min(t) for t in seconds.values() if t), default=float("inf"))
            if times and times[0] > HOPELESS * best:
                continue
            torch.set_num_threads(c)
            start, done = time.perf_counter(), 0
            while done < PRODUCTS and time.perf_counter() - start <= HOPELESS * best:
                for _ in range(10):
                    x @ x
                done += 10
            times.append((time.perf_counter() - start) * PRODUCTS / done)
    torch.set_num_threads(before)
    return {c: sorted(t)[len(t) // 2] for c, t in seconds.items()}


class Paced:
    """`batches` handed out with torch's thread count set to the count that is fastest now (the module's
    docstring says how it is measured), measured before the first and again every RECHECK_SECONDS; `fixed`
    (--threads), or OMP_NUM_THREADS, fixes it instead. `log` hears the count the first time and when it
    changes (`said`: the last count said in this process)."""

    said = None

    def __init__(self, batches, fixed, phase, log):
        self.batches, self.fixed, self.phase, self.log = batches, fixed, phase, log

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.choose()
        measured = time.perf_counter()
        for batch in self.batches:
            if time.perf_counter() - measured > RECHECK_SECONDS:
                self.choose()
                measured = time.perf_counter()
            yield batch

    def choose(self):
        if self.fixed is not None:
            count, why = self.fixed, "--threads"
        elif "OMP_NUM_THREADS" in os.environ:
            return
        else:
            seconds = product_seconds(sorted({1, max(1, usable_cpus() - 1), usable_cpus()}))
            count = min(seconds, key=lambda c: (seconds[c], -c))
            why = "the fastest now on a few small products: " + ", ".join(
                f"{c} thread{'s' * (c != 1)} {1e3 * t:.1f} ms" for c, t in seconds.items())
        torch.set_num_threads(count)
        if count != Paced.said:
            self.log(f"{self.phase}: {count} thread{'s' * (count != 1)} ({why})")
            Paced.said = count
