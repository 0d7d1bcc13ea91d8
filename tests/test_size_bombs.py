"""No input makes a process allocate more than the model and data need (issue 25, class 1 and 3).

Each command runs in a child whose address space is capped (RLIMIT_AS) far below what the input claims:
a config that asks for 10^10 embeddings, 100,000 layers or 10^9 positions, or a flag that asks for a rank
of 10^9, must be refused (one line, exit 2) from what the files and flags say, before anything is built;
and one enormous word must cost what a short text costs, not memory that grows with it.
"""

import json
import resource
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

LIMIT = 3 << 30  # bytes of address space: a CPU torch process and the small test models need under 2 GiB
TIMEOUT = 60  # seconds: a refusal comes from a few kilobytes of headers, so it is quick


def capped(*args, limit=LIMIT, timeout=TIMEOUT):
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=cap)


def refused(result, *expected):
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines and lines[-1].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[-1], lines[-1]


BOMBS = {"vocab_size": 10**10, "num_hidden_layers": 100_000, "max_position_embeddings": 10**9,
         "hidden_size": 2**20}


@pytest.mark.parametrize("key", BOMBS)
def test_a_weights_config_that_claims_too_much_is_refused_before_anything_is_built(key, tmp_path, tiny_weights,
                                                                                    tiny_data):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    config = json.loads((weights / "config.json").read_text())
    (weights / "config.json").write_text(json.dumps({**config, key: BOMBS[key]}))
    refused(capped("train.py", "--data", tiny_data, "--weights", weights, "--out", tmp_path / "run", "--epochs",
                   "1"), str(weights))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", BOMBS)
def test_a_checkpoint_config_that_claims_too_much_is_refused_before_anything_is_built(key, tmp_path, small):
    run = tmp_path / "run"
    shutil.copytree(small, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, key: BOMBS[key]}))
    refused(capped("infer.py", "--checkpoint", run, "Alice went to Paris."), str(run))


@pytest.mark.parametrize("flag", [["--lora", "1000000000"], ["--grad-accum", str(10**20)],
                                  ["--batch-size", str(10**12)], ["--layers", str(10**9)]])
def test_a_flag_that_asks_for_too_much_is_one_line(flag, tmp_path, tiny_weights, tiny_data):
    refused(capped("train.py", "--data", tiny_data, "--weights", tiny_weights, "--out", tmp_path / "run",
                   "--epochs", "1", *flag), flag[0])
    assert not (tmp_path / "run").exists()


def peak_rss_of(*args):
    """Peak resident memory (bytes) of `python ARGS`, measured by a parent that runs nothing else."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=True)
    return int(done.stdout)


def test_one_enormous_word_costs_what_a_short_text_costs(tmp_path, small):
    (tmp_path / "short.txt").write_text("Alice went to Paris.\n")
    (tmp_path / "huge.txt").write_text("a" * 5_000_000 + "\n")  # one word of 5 million characters
    short = peak_rss_of("infer.py", "--checkpoint", small, "--file", tmp_path / "short.txt")
    huge = peak_rss_of("infer.py", "--checkpoint", small, "--file", tmp_path / "huge.txt")
    # The text itself is 5 MB and is printed back once; tokenizing it whole took over 250 MB more.
    assert huge - short < 100 << 20, (short, huge)
