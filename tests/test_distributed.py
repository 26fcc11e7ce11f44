"""Data-parallel training under torchrun (CPU, gloo, 2 processes, a tiny language model)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from clihelpers import one_line_error, run

from arcli.checkpoint import read_checkpoint
from arcli.distributed import World, check_batch, from_environment, same_on_every_rank, shard, sum_over_ranks
from arcli.errors import ArcliError, OptionError
from arcli.metrics_log import read_metrics
from arcli.registry import get_family

ROOT = Path(__file__).resolve().parent.parent
TINY = {"d_model": 16, "heads": 2, "decoder_layers": 1, "ff_dim": 32, "vocab_size": 260, "dropout": 0.0}
SETTINGS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
WORDS = "the dog cat big small house red green runs sleeps eats and a of".split()


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """Lines of 1 to 9 words: the two halves of a batch hold different numbers of tokens, so the
    per-token mean over the whole batch is not the mean of the two halves' means."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))) for _ in range(120)) + "\n")
    return path


def torchrun(*args, processes=2):
    """The command line of `torchrun --standalone` (a free port of its own) running `arcli`."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", "arcli", *map(str, args)]


def environment():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def train_args(text, out, *extra):
    return ["train", "transformer-lm", "--data", text, "-o", out, "--batch-size", 8, "--warmup-steps", 1, "--lr", 0.01,
            "--log-every", 1, "--device", "cpu", "--quiet", "--seed", 3, *SETTINGS, *extra]


def losses(path):
    return [r["loss"] for r in read_metrics(path) if r["kind"] == "train"]


def test_two_processes_with_half_batches_give_the_losses_of_one_process(text, tmp_path):
    two, one = tmp_path / "two.safetensors", tmp_path / "one.safetensors"
    args = ["--steps", 5, "--eval-every", 5, "--save-every", 5]
    done = subprocess.run(torchrun(*train_args(text, two, *args)), capture_output=True, text=True, env=environment(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "data-parallel over 2 processes (gloo), 4 examples each per step" in done.stderr
    assert done.stderr.count("step 5/5:") == 1  # rank 0 alone reports
    assert done.stdout == ""
    result = run(*train_args(text, one, *args))
    assert result.exit_code == 0, result.output

    parallel, single = losses(two.with_name("two.metrics.jsonl")), losses(one.with_name("one.metrics.jsonl"))
    assert len(parallel) == len(single) == 5
    assert parallel == pytest.approx(single, rel=1e-5)
    assert single[-1] < single[0] - 0.5  # the steps did learn: equal losses are not equal constants
    valid = [[r["valid_nll"] for r in read_metrics(p) if r["kind"] == "valid"] for p in (two.with_name("two.metrics.jsonl"),
                                                                                       one.with_name("one.metrics.jsonl"))]
    assert valid[0] == pytest.approx(valid[1], rel=1e-5)

    # The checkpoint of the parallel run loads in one process and holds the same weights, up to what
    # Adam makes of rounding: it divides by the gradient's scale, so the update of a weight whose
    # gradient is near zero follows the rounding of that gradient (seen: 6e-4 after 5 steps of 1e-2).
    family = get_family("transformer-lm")
    model, stored = family.load(two, torch.device("cpu"))
    reference = read_checkpoint(one).tensors
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=3e-3)
    assert stored.training["processes"] == 2 and stored.training["steps"] == 5
    assert not list(tmp_path.glob(".*.tmp"))


def _worker_pids(output: Path) -> dict[int, int]:
    """rank -> pid of the torchrun workers writing `output` (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            env = dict(line.split(b"=", 1) for line in (entry / "environ").read_bytes().split(b"\0") if b"=" in line)
        except OSError:
            continue
        if str(output).encode() in command and b"RANK" in env and b"torch.distributed.run" not in command:
            found[int(env[b"RANK"])] = int(entry.name)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker processes through /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_stopping_one_rank_stops_all_with_the_last_checkpoint_intact(text, tmp_path, signum):
    out = tmp_path / "long.safetensors"
    args = train_args(text, out, "--steps", 100_000, "--eval-every", 100_000, "--save-every", 10)
    job = subprocess.Popen(torchrun(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    try:
        deadline = time.monotonic() + 240
        while not (out.exists() and out.with_name("long.train.safetensors").exists()):  # a first checkpoint
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1]
            time.sleep(0.2)
        pids = _worker_pids(out)
        assert sorted(pids) == [0, 1]
        os.kill(pids[1], signum)
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    lines = [line for line in stderr.splitlines() if line.startswith(("arcli:", "interrupted"))]
    stored = read_checkpoint(out)
    step = stored.metrics["step"]
    if signum == signal.SIGINT:  # a clean stop: both ranks at the same step, rank 0 saves there
        assert job.returncode == 0, stderr
        assert lines == [f"interrupted at step {step}; resume with --resume {out.with_name('long.train.safetensors')}"]
    else:  # rank 1 vanished: rank 0 says so in one line and leaves the last checkpoint as it was
        assert job.returncode != 0
        assert len(lines) == 1 and lines[0].startswith("arcli: error: another training process stopped"), stderr
        assert f"the checkpoint of step {step} is intact" in lines[0]
        assert step % 10 == 0
    assert not list(tmp_path.glob(".*.tmp"))
    assert max(r["step"] for r in read_metrics(out.with_name("long.metrics.jsonl"))) >= step
    # It loads in one process, and training resumes from it in one process.
    get_family("transformer-lm").load(out, torch.device("cpu"))
    resumed = run("train", "transformer-lm", "--data", text, "-o", out, "--steps", step + 2, "--batch-size", 8,
                  "--resume", out.with_name("long.train.safetensors"), "--device", "cpu", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming with 1 process where the state was written by 2 processes" in resumed.stderr
    assert read_checkpoint(out).metrics["step"] == step + 2


def test_a_world_size_that_does_not_divide_the_batch(text, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    one_line_error(run(*train_args(text, tmp_path / "m.safetensors")), "--batch-size 8 does not divide among 3 processes",
                   "multiple of 3 (e.g. 6 or 9)")
    monkeypatch.setenv("RANK", "1")  # the other ranks meet the same mistake and leave the saying to rank 0
    result = run(*train_args(text, tmp_path / "m.safetensors"))
    assert result.exit_code == 1 and result.output == ""
    assert not (tmp_path / "m.safetensors").exists()


def test_shard_keeps_this_ranks_rows_of_every_tensor():
    tokens = torch.arange(12).reshape(6, 2)
    ordering = torch.tensor([2, 0, 1])  # a per-batch value (MADE's drawn ordering): every rank gets it whole
    batch = {"pair": (tokens, torch.arange(6)), "labels": None, "names": [torch.arange(6) * 10], "ordering": ordering, "k": 4}
    first, last = shard(batch, World(rank=0, size=3), 6), shard(batch, World(rank=2, size=3), 6)
    assert first["pair"][0].tolist() == [[0, 1], [2, 3]] and first["pair"][1].tolist() == [0, 1]
    assert last["pair"][0].tolist() == [[8, 9], [10, 11]] and last["names"][0].tolist() == [40, 50]
    assert first["labels"] is None and first["k"] == 4
    assert first["ordering"] is ordering and last["ordering"] is ordering
    assert shard(batch, World(), 6) is batch
    with pytest.raises(ValueError, match="5 rows does not divide among 2"):
        shard(torch.zeros(5), World(rank=0, size=2), 5)


def test_world_from_the_environment():
    assert from_environment({}) == World()
    assert from_environment({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == World(rank=2, size=4, local_rank=0)
    for bad in ({"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "0"}):
        with pytest.raises(ArcliError, match="torchrun"):
            from_environment(bad)


def test_batch_shares():
    assert check_batch(World(rank=1, size=4), 16) == 4
    with pytest.raises(OptionError, match=r"--batch-size 2 does not divide among 4 processes: give a multiple of 4 \(e.g. 4\)"):
        check_batch(World(rank=0, size=4), 2)


def test_a_single_process_reduces_nothing():
    assert sum_over_ranks([1.5, 2], World(), torch.device("cpu")) == [1.5, 2.0]
    assert same_on_every_rank(12345, World(), torch.device("cpu"))
