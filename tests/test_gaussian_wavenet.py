"""WaveNet's gaussian output head: step == forward, causality, the 16-bit discretisation of its
density on hand examples, and the vocoder with it through the real CLI (train, resynthesise, score)."""

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from clihelpers import one_line_error, run
from test_vocoder import VOCODER_SETTINGS, vocoder  # noqa: F401  (a categorical vocoder to start a gaussian one from)
from test_wavenet_cli import RATE, ok, write_corpus

from arcli.checkpoint import read_checkpoint
from arcli.models.wavenet import LocalCondition, WaveNet, WaveNetConfig, gaussian_16bit_nats

GAUSSIAN_VOCODER_SETTINGS = [*VOCODER_SETTINGS, "--set", "output=gaussian"]


def tiny_gaussian(**changes) -> WaveNet:
    config = WaveNetConfig(residual_channels=8, dilation_channels=8, skip_channels=16, end_channels=16, layers_per_stack=3,
                           stacks=2, cond_channels=5, cond_hidden=6, cond_hop=4, output="gaussian", **changes)
    return WaveNet(config).eval()


@pytest.mark.parametrize("offset", [0, 3])
def test_gaussian_step_matches_forward(offset):
    torch.manual_seed(0)
    model = tiny_gaussian()
    audio = torch.rand(3, 30) * 2 - 1
    condition = LocalCondition(torch.randn(3, 10, 5), torch.full((3,), offset))
    with torch.no_grad():
        full = model(audio, condition)  # (3, 30, 2)
    assert full.shape == (3, 30, 2) and model.vocab_size is None
    state, previous, steps = model.start(3, condition), None, []
    for t in range(30):
        params, state = model.step(state, previous)
        steps.append(params)
        previous = audio[:, t]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-4, atol=1e-4)


def test_gaussian_head_is_causal_and_floors_the_scale():
    torch.manual_seed(1)
    model = tiny_gaussian(min_log_scale=-3.0)
    with torch.no_grad():
        model.head[3].bias[1] = -20.0  # a log-scale far below the floor
        audio, frames = torch.rand(1, 20) * 2 - 1, LocalCondition(torch.randn(1, 6, 5))
        before = model(audio, frames)
        changed = audio.clone()
        changed[0, 9] = -changed[0, 9]
        after = model(changed, frames)
    assert torch.equal(before[:, :10], after[:, :10])  # x_9 changes nothing at positions <= 9
    assert (before[:, 10:] - after[:, 10:]).abs().max() > 0
    assert float(before[..., 1].min()) == -3.0


def test_16bit_masses_by_hand_and_summing_to_one():
    mean, sigma = 0.001, 0.01
    params = torch.tensor([[mean, math.log(sigma)]], dtype=torch.float64)
    phi = lambda x: 0.5 * (1 + math.erf((x - mean) / (sigma * math.sqrt(2))))  # noqa: E731
    for code in (0, 33, -1000):
        expected = -math.log(phi((code + 0.5) / 32768) - phi((code - 0.5) / 32768))
        assert float(gaussian_16bit_nats(params, torch.tensor([code]))) == pytest.approx(expected, rel=1e-7)  # the reference itself cancels
    # the end codes own the tails: a mean far outside [-1, 1] puts all its mass on the top code
    assert float(gaussian_16bit_nats(torch.tensor([[3.0, -4.0]]), torch.tensor([32767]))) == pytest.approx(0.0, abs=1e-12)
    codes = torch.arange(-32768, 32768)
    for mean, log_scale in ((0.3, -5.0), (-0.999, -7.0), (0.0, -12.0), (0.5, 1.0)):  # scales of 0.2 bins to 2.7
        nats = gaussian_16bit_nats(torch.tensor([[mean, log_scale]]).expand(len(codes), 2), codes)
        assert float(torch.exp(-nats).sum()) == pytest.approx(1.0, abs=1e-9)


@pytest.fixture(scope="module")
def gaussian_vocoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gaussian")
    corpus = write_corpus(folder / "corpus")
    checkpoint = folder / "teacher.safetensors"
    ok(run("train", "wavenet-vocoder", "--data", corpus, "-o", checkpoint, *GAUSSIAN_VOCODER_SETTINGS, "--steps", 3,
           "--batch-size", 2, "--eval-every", 3, "--warmup-steps", 1, "--device", "cpu", "--quiet"))
    return corpus, checkpoint


def test_gaussian_vocoder_trains_resynthesises_and_scores(gaussian_vocoder, tmp_path):
    corpus, checkpoint = gaussian_vocoder
    stored = read_checkpoint(checkpoint)
    assert stored.config["output"] == "gaussian" and stored.data["mu"] is None
    assert 0 < stored.metrics["valid_bits_per_sample"] < 17
    clip = corpus / "alice" / "1.wav"
    for name in ("a.wav", "b.wav"):
        ok(run("sample", "wavenet-vocoder", "-c", checkpoint, "--mel-from", clip, "--seed", 3, "-o", tmp_path / name, "--quiet"))
    audio, rate = sf.read(tmp_path / "a.wav", dtype="int16")
    assert rate == RATE and len(audio) == len(sf.read(clip)[0]) and np.abs(audio).max() > 0
    assert np.array_equal(audio, sf.read(tmp_path / "b.wav", dtype="int16")[0])  # --seed repeats
    scored = ok(run("score-likelihood", "wavenet-vocoder", "-c", checkpoint, clip, "--device", "cpu"))
    bits = float(scored.stdout.split("\t")[1])
    assert 0 < bits < 17
    one_line_error(run("sample", "wavenet-vocoder", "-c", checkpoint, "--mel-from", clip, "--top-k", 5, "-o", tmp_path / "c.wav"),
                   "--temperature and --seed")
    assert not (tmp_path / "c.wav").exists()


GAUSSIAN_INIT = Path(__file__).resolve().parents[1] / "examples" / "speech" / "gaussian_init.py"


def test_the_input_line_is_the_weighted_least_squares_fit():
    spec = importlib.util.spec_from_file_location("gaussian_init", GAUSSIAN_INIT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = torch.tensor([-1.0, 0.0, 0.5, 1.0], dtype=torch.float64)
    exact = torch.stack([3 * values + 1, -2 * values], 1)  # two columns on lines: recovered whatever the weights
    slope, intercept = module.fit_line(exact, values, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    assert torch.allclose(slope, torch.tensor([3.0, -2.0], dtype=torch.float64)) and torch.allclose(intercept, torch.tensor([1.0, 0.0], dtype=torch.float64))
    # Off a line: all the weight on codes 0 and 1 gives the line through those two points, (-1, 5) and (0, 2): slope -3, intercept 2.
    table = torch.tensor([[5.0], [2.0], [9.0], [-4.0]])
    slope, intercept = module.fit_line(table, values, torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64))
    assert slope.item() == pytest.approx(-3.0) and intercept.item() == pytest.approx(2.0)
    # Equal weights on (-1, 0), (0, 0), (1, 3): slope 1.5, intercept 1 (by hand: mean x 0, mean y 1, sum xy 3 / sum x^2 2).
    slope, intercept = module.fit_line(torch.tensor([[0.0], [0.0], [3.0]]), torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64),
                                       torch.ones(3, dtype=torch.float64))
    assert slope.item() == pytest.approx(1.5) and intercept.item() == pytest.approx(1.0)


def test_a_gaussian_vocoder_starts_from_a_categorical_ones_body(vocoder, tmp_path):  # noqa: F811
    corpus, categorical = vocoder
    out = tmp_path / "init.safetensors"
    script = lambda *args: subprocess.run([sys.executable, str(GAUSSIAN_INIT), *map(str, args)], capture_output=True, text=True)  # noqa: E731
    done = script(categorical, corpus, "-o", out)
    assert done.returncode == 0, done.stderr
    source, started = read_checkpoint(categorical), read_checkpoint(out)
    assert started.config["output"] == "gaussian" and started.data["mu"] is None
    body = [name for name in source.tensors if not name.startswith(("embed.", "head.3."))]
    assert body and all(torch.equal(started.tensors[name], source.tensors[name]) for name in body)
    assert started.tensors["embed.weight"].shape == (source.tensors["embed.weight"].shape[1], 1)
    assert started.tensors["head.3.weight"].shape[0] == 2
    # It fine-tunes as a gaussian teacher through --init, and the script refuses to overwrite or to convert twice.
    tuned = tmp_path / "tuned.safetensors"
    ok(run("train", "wavenet-vocoder", "--init", out, "--data", corpus, "-o", tuned, "--steps", 2, "--batch-size", 2,
           "--eval-every", 2, "--warmup-steps", 1, "--device", "cpu", "--quiet"))
    assert read_checkpoint(tuned).config["output"] == "gaussian"
    again = script(categorical, corpus, "-o", out)
    assert again.returncode == 1 and "exists" in again.stderr and again.stderr.count("\n") == 1
    twice = script(out, corpus, "-o", tmp_path / "twice.safetensors")
    assert twice.returncode == 1 and "already has a gaussian head" in twice.stderr and not (tmp_path / "twice.safetensors").exists()
