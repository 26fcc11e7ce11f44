"""VRNN and RNN-Gauss end to end through the real CLI: train tiny models on a tiny two-speaker
corpus made here, sample and score them, and check every user mistake is one line and exit code 1."""

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from clihelpers import one_line_error, run

from arcli.checkpoint import read_checkpoint
from arcli.registry import get_family
from arcli.tasks.continuous import clip_frames, importance_sampled

RATE = 8000
TINY = {"sample_rate": RATE, "frame_size": 40, "hidden": 16, "features": 16, "layers": 1, "crop_frames": 6}
CLIP_SECONDS = (0.1, 0.25, 0.2)  # 800 samples = 20 frames (shorter than a training sequence), 50, 40 frames
ROOT = Path(__file__).resolve().parent.parent


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def write_corpus(folder: Path) -> Path:
    """Two speakers (sub-folders), three clips each: a speaker's own tone plus a little noise."""
    rng = np.random.default_rng(0)
    for speaker, frequency in (("alice", 300.0), ("bob", 700.0)):
        (folder / speaker).mkdir(parents=True)
        for i, seconds in enumerate(CLIP_SECONDS):
            t = np.arange(round(RATE * seconds)) / RATE
            tone = 0.5 * np.sin(2 * math.pi * frequency * (1 + 0.1 * i) * t) + 0.05 * rng.standard_normal(len(t))
            sf.write(folder / speaker / f"{i}.wav", tone.astype(np.float32), RATE)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(corpus, {family: checkpoint}) of tiny conditional models trained for 3 steps."""
    folder = tmp_path_factory.mktemp("vrnn")
    corpus = write_corpus(folder / "corpus")
    checkpoints = {}
    for name, extra in (("vrnn", {"latent": 4}), ("rnn-gauss", {"mixtures": 2})):
        checkpoints[name] = folder / f"{name}.safetensors"
        settings = [arg for key, value in {**TINY, **extra}.items() for arg in ("--set", f"{key}={value}")]
        result = ok(run("train", name, "--data", corpus, "-o", checkpoints[name], *settings, "--steps", 3, "--batch-size", 2,
                        "--eval-every", 3, "--save-every", 3, "--warmup-steps", 1, "--device", "cpu", "--quiet"))
        assert "2 speakers (alice, bob)" in result.stderr and "nats/frame" in result.stderr
    return corpus, checkpoints


def test_training_stores_the_normalisation_speakers_and_held_out_metric(trained):
    corpus, checkpoints = trained
    stored = read_checkpoint(checkpoints["vrnn"], expected_model="vrnn")
    assert stored.config["num_speakers"] == 2 and stored.data["speakers"] == ["alice", "bob"]
    # without --valid every 20th file (of the sorted list) is held out: here alice/0.wav
    assert stored.data["valid_clips"] == 1 and stored.data["clips"] == 5
    kept = [p for p in sorted(corpus.glob("*/*.wav")) if p != corpus / "alice" / "0.wav"]
    train = torch.cat([torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in kept]).double()
    assert stored.config["data_mean"] == pytest.approx(float(train.mean()), abs=1e-7)
    assert stored.config["data_std"] == pytest.approx(float(train.std()), rel=1e-6)
    assert math.isfinite(stored.metrics["valid_nll"]) and "valid_nats_per_frame" in stored.metrics


def sample(checkpoint, *args):
    return run("sample", "vrnn", "-c", checkpoint, "--device", "cpu", "--quiet", *args)


def test_sample_writes_wavs_of_the_asked_length_repeatably_and_as_any_speaker(trained, tmp_path):
    _, checkpoints = trained
    ok(sample(checkpoints["vrnn"], "--seconds", 0.1, "--speaker", 1, "--seed", 3, "-n", 2, "-o", tmp_path / "a.wav",
              "--spectrogram", tmp_path / "a.png"))
    ok(sample(checkpoints["vrnn"], "--seconds", 0.1, "--speaker", 1, "--seed", 3, "-o", tmp_path / "b.wav"))
    first, rate = sf.read(tmp_path / "a-1.wav", dtype="int16")
    assert (rate, len(first)) == (RATE, 800) and (tmp_path / "a-2.wav").exists() and (tmp_path / "a.png").exists()
    assert (first == sf.read(tmp_path / "b.wav", dtype="int16")[0]).all()  # same seed, same row: alone or in a batch
    assert not (first == sf.read(tmp_path / "a-2.wav", dtype="int16")[0]).all()
    result = ok(run("sample", "rnn-gauss", "-c", checkpoints["rnn-gauss"], "--device", "cpu", "--quiet", "--seconds", 0.013,
                    "-o", tmp_path / "c.wav"))
    assert len(sf.read(tmp_path / "c.wav")[0]) == 104  # 2.6 frames: 3 drawn, cut to the length asked
    assert "no --speaker given: using speaker 0; speakers: 0=alice, 1=bob" in result.stderr
    assert "seed " in result.stderr


def test_sample_streams_one_wav_to_stdout_from_a_real_process(trained):
    _, checkpoints = trained
    process = subprocess.run(
        [sys.executable, "-m", "arcli", "sample", "vrnn", "-c", str(checkpoints["vrnn"]), "--seconds", "0.02", "--speaker", "0",
         "--seed", "4", "--device", "cpu", "--temperature", "0.5"],
        capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=120,
    )
    assert process.returncode == 0, process.stderr.decode()
    audio, rate = sf.read(io.BytesIO(process.stdout), dtype="int16")
    assert (rate, len(audio)) == (RATE, 160)
    assert b"ancestral sampling" in process.stderr


def test_score_gives_the_elbo_and_the_importance_sampled_estimate_per_frame_and_second(trained, tmp_path):
    corpus, checkpoints = trained
    result = ok(run("score-likelihood", "vrnn", "-c", checkpoints["vrnn"], corpus / "bob" / "1.wav", corpus / "alice",
                    "--samples", 30, "--device", "cpu"))
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [Path(line[0]).name for line in lines] == ["1.wav", "0.wav", "1.wav", "2.wav"]
    model, _ = get_family("vrnn").load(checkpoints["vrnn"], torch.device("cpu"))
    audio = torch.from_numpy(sf.read(corpus / "bob" / "1.wav", dtype="float32")[0])
    frames = clip_frames(audio, 40)
    with torch.no_grad():
        elbo, estimate = importance_sampled(model, frames, 1, 30)  # bob is speaker 1
    path, elbo_frame, is_frame, elbo_second, is_second, count = lines[0]
    assert int(count) == 50 and float(elbo_frame) == pytest.approx(elbo / 50, abs=0.01)
    assert float(is_frame) == pytest.approx(estimate / 50, abs=0.01)
    assert float(is_second) == pytest.approx(float(is_frame) * RATE / 40, rel=1e-3, abs=0.1)
    assert float(elbo_frame) <= float(is_frame)
    assert "ELBO" in result.stderr and "importance-sampled log p(x) with K=30" in result.stderr


def test_rnn_gauss_scores_the_exact_log_likelihood(trained):
    corpus, checkpoints = trained
    result = ok(run("score-likelihood", "rnn-gauss", "-c", checkpoints["rnn-gauss"], corpus / "alice" / "2.wav", "--device", "cpu"))
    path, per_frame, per_second, count = result.stdout.strip().split("\t")
    model, _ = get_family("rnn-gauss").load(checkpoints["rnn-gauss"], torch.device("cpu"))
    frames = clip_frames(torch.from_numpy(sf.read(corpus / "alice" / "2.wav", dtype="float32")[0]), 40)
    with torch.no_grad():
        exact = float(model(frames[None], torch.tensor([0])).log_lik.double().sum())
    assert int(count) == 40 and float(per_frame) == pytest.approx(exact / 40, abs=0.01)
    assert "exact log-likelihood" in result.stderr


@pytest.mark.parametrize("args, fragments", [
    (["--seconds", 0], ["--seconds must be > 0"]),
    (["--seconds", -1], ["--seconds must be > 0"]),
    (["--seconds", 1e6], ["at most 600"]),
    (["--seconds", 1e-6], ["less than one sample"]),
    (["--speaker", 2], ["--speaker 2 is out of range", "0=alice, 1=bob"]),
    (["--top-k", 5], ["only --temperature"]),
    (["--text", "hello"], ["--text does not apply"]),
    (["--temperature", 0], ["temperature"]),
])
def test_sample_mistakes(trained, tmp_path, args, fragments):
    _, checkpoints = trained
    one_line_error(sample(checkpoints["vrnn"], *args, "-o", tmp_path / "x.wav"), *fragments)
    assert not (tmp_path / "x.wav").exists()


def test_score_mistakes(trained, tmp_path):
    corpus, checkpoints = trained
    vrnn, rnn_gauss = checkpoints["vrnn"], checkpoints["rnn-gauss"]
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    one_line_error(run("score-likelihood", "vrnn", "-c", vrnn, bad), "cannot read audio file")
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(30, dtype=np.float32), RATE)
    one_line_error(run("score-likelihood", "vrnn", "-c", vrnn, short), "less than one frame of 40")
    clip = corpus / "bob" / "0.wav"
    one_line_error(run("score-likelihood", "vrnn", "-c", vrnn, clip, "--samples", 0), "--samples must be >= 1")
    one_line_error(run("score-likelihood", "rnn-gauss", "-c", rnn_gauss, clip, "--samples", 5), "scored exactly")
    one_line_error(run("score-likelihood", "wavenet", clip, "--samples", 5), "scored exactly")
    one_line_error(run("score-likelihood", "rnn-gauss", "-c", vrnn, clip), "vrnn")  # a checkpoint of another family
    one_line_error(run("sample", "vrnn", "-c", rnn_gauss, "-o", tmp_path / "y.wav"), "rnn-gauss")
    settings = ["--set", "frame_size=40", "--set", f"sample_rate={RATE}"]
    one_line_error(run("train", "vrnn", "--data", short, "-o", tmp_path / "z.safetensors", *settings, "--valid", short),
                   "shorter than one frame")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(400, dtype=np.float32), RATE)
    one_line_error(run("train", "vrnn", "--data", silent, "-o", tmp_path / "z.safetensors", *settings, "--valid", silent), "silent")
    assert not any(tmp_path.glob("[xyz]*"))


def test_the_shipped_vrnn_samples_two_seconds_as_a_speaker(tmp_path):
    out = tmp_path / "out.wav"
    result = ok(run("sample", "vrnn", "--seconds", 0.05, "--speaker", 3, "--seed", 0, "-o", out, "--quiet", "--device", "cpu"))
    audio, rate = sf.read(out)
    assert rate == 16000 and audio.shape == (800,) and np.abs(audio).max() > 0
    assert "ancestral sampling" in result.stderr
    stored = read_checkpoint(get_family("vrnn").shipped_checkpoint(), expected_model="vrnn")
    assert stored.config["num_speakers"] == 8 and stored.metrics["valid_nll"] < 0  # a density: -ELBO per frame below 0
