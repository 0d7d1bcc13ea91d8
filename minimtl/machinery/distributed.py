"""Training under torchrun: several processes, one model, each process a disjoint share of every epoch.

    torchrun --standalone --nproc_per_node 2 train.py ...    # plain `python train.py` never uses any of this

torchrun starts N copies of train.py and tells each its RANK, WORLD_SIZE and LOCAL_RANK in the environment.
Every copy builds the same model from the same seed and computes the same seeded order of the epoch's
micro-batches, then takes every N-th of them (`shard`). DistributedDataParallel (DDP) averages the
gradients across the processes inside backward(), so every process applies the same update and the weights stay equal
everywhere without being sent. One optimizer step therefore sees batch_size x N x grad_accum sentences (the
global batch), and it is the step one process would take with grad_accum x N, up to the order in which
floating-point sums are added.

What is exchanged, and why:

    gradients         all-reduced (averaged) at the last micro-batch of each step; `no_sync` skips the
                      exchange on the others, whose gradients just accumulate locally (training.train_epoch)
    weights           broadcast from rank 0 when DDP is built: the processes start from the same ones
    dev predictions   each process predicts every N-th evaluation batch and the predicted ids are merged,
                      so every process scores the whole split and all take the same best-epoch and
                      early-stop decisions (evaluation.predict)
    epoch statistics  summed (losses, sentences, padding), for the log line and metrics.jsonl
                      (training.EpochStats)

Nothing else: the batch order is computed, not sent, and so is the feature cache (every process encodes it;
training.features_for_epoch says why). Those exchanges are the lesson's own few lines; this module is what
the run (run.py) needs around them: which process this is, the process group, and what happens when a peer
is lost. Rank 0 alone prints, holds the run's lock and writes the run directory; the others write nothing.

A process that dies makes the others' next collective operation fail at once (its connections close); one
that stops answering, after PEER_TIMEOUT. Either way the others stop with `PeerLost`, a one-line message.
"""

import datetime
import os
import random
import re
import signal
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..guards.errors import UserError
from .interrupts import what_is_saved

# How long a process waits for the others at a collective operation before it gives up. The longest wait
# in a healthy run is the other processes waiting while rank 0 saves an epoch, so this is generous.
PEER_TIMEOUT = datetime.timedelta(minutes=10)


class PeerLost(Exception):
    """Another process of the torchrun job died or stopped answering: this one stops too."""


@dataclass(frozen=True)
class Processes:
    """This process's place in the job: rank 0 of 1 for a plain `python train.py`."""

    rank: int = 0
    world: int = 1
    launched: bool = False  # started by torchrun: a process group exists and the model is wrapped in DDP
    device: torch.device = torch.device("cpu")  # where collective operations put their tensors

    @property
    def main(self):
        return self.rank == 0

    def seed_epoch(self, seed, epoch):
        """Under torchrun, each process draws dropout from its own stream, restarted from (seed, epoch, rank)
        at every epoch: a resumed run then needs no per-process random state to continue exactly."""
        if self.launched:
            torch.manual_seed(random.Random(f"{seed}/{epoch}/{self.rank}").getrandbits(63))

    def barrier(self):
        if self.launched:
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # --- who does what, and how it stops ---

    def main_only(self, context):
        return context if self.main else nullcontext()

    @property
    def stop_signals(self):
        """The signals that stop training at the next batch boundary (interrupts.ctrl_c_between_batches)."""
        return (signal.SIGINT, signal.SIGTERM) if self.launched else (signal.SIGINT,)

    def command(self):
        """How to start this job again (for the resume hint)."""
        return f"torchrun --nproc_per_node {self.world} train.py" if self.launched else "python train.py"

    @contextmanager
    def peers_watched(self, progress, out):
        """Turn a failed collective operation (a process died or stopped answering) into PeerLost."""
        try:
            yield
        except RuntimeError as e:
            if not (self.launched and lost_peer(e)):
                raise
            reason = transport_reason(e)
            if not self.main:
                raise PeerLost(f"another process of this job stopped or stopped answering ({reason}): stopping "
                               "too (rank 0 says why, and what is saved)") from None
            raise PeerLost(f"another process of this job stopped or stopped answering during epoch "
                           f"{progress.epoch + 1} ({reason}): {what_is_saved(progress, out, self.command())}") from None


def transport_reason(error):
    """"Connection reset by peer" out of gloo's "[.../pair.cc:537] Read error [...]: Connection reset by peer.
    This is typically caused by ...": the first sentence, without the source location."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip().splitlines()[0])
    return text.split(". ")[0].rstrip(".")[:200]


def lost_peer(error):
    """Whether a RuntimeError came from the process group's transport (gloo raises plain RuntimeErrors)."""
    return isinstance(error, dist.DistError) or "gloo" in str(error).lower()


@contextmanager
def joined(device):
    """This process's `Processes`: under torchrun a process group (gloo on the CPU, nccl on CUDA, one GPU
    per process), torn down at the end; otherwise just this process, and nothing is set up."""
    if "WORLD_SIZE" not in os.environ:  # plain `python train.py`
        yield Processes()
        return
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        torch.cuda.set_device(local)  # before the model is built: .to("cuda") then means this process's GPU
        device, backend = torch.device("cuda", local), "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(f"--device {device.type}: torchrun needs CUDA GPUs (nccl) or the CPU (gloo)")
    # torchrun sends SIGTERM to the other processes when one fails. In the training loop that stops at the next
    # batch boundary (`stop_signals`); anywhere else it is ignored, so it cannot cut short a process that is on
    # its way out, saying why: the failed exchange with the dead process stops this one, with a message.
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    dist.init_process_group(backend, timeout=PEER_TIMEOUT)
    try:
        yield Processes(rank, world, True, device)
    finally:
        dist.destroy_process_group()
    # Restored only after a clean end: a process leaving with an error keeps ignoring SIGTERM until it exits, or
    # the signal torchrun sends on seeing the failed peer could kill it between its message and its exit.
    signal.signal(signal.SIGTERM, previous)


def shard(micro_batches, rank=0, world=1):
    """Process `rank`'s micro-batches of an epoch under torchrun, as (source, batch, counts); all of them,
    each counting, in a plain run.

    Process r takes items r, r + N, r + 2N, ...: step s then covers items s*N*A .. (s+1)*N*A - 1 of the
    one ordered list across the processes, the same items as step s of a single process with
    accumulation N*A. When the count does not divide by N, the processes that come up one short get a
    filler (the last item again, counts False): its loss is multiplied by 0, so it adds nothing, but the
    process still takes part in that step's gradient exchange, which every process must join.
    """
    mine = [(source, batch, True) for source, batch in micro_batches[rank::world]]
    missing = -(-len(micro_batches) // world) - len(mine)  # ceil(n / N) - own: 0 or 1
    return mine + [(source, batch, False) for source, batch in micro_batches[-1:]] * missing
