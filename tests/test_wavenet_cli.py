"""WaveNet end to end through the real CLI: train a tiny model on a tiny two-speaker corpus made
here, then sample, score and inspect it, and check every user mistake is one line and exit code 1."""

import io
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from clihelpers import one_line_error, run

from arcli import registry
from arcli.audio.io import load_audio
from arcli.audio.mulaw import mu_law_encode
from arcli.checkpoint import read_checkpoint, save_checkpoint
from arcli.errors import DataError
from arcli.registry import get_family
from arcli.tasks import TrainRequest
from arcli.tasks import audio as audio_task

RATE = 8000
RECEPTIVE_FIELD = 8  # 1 stack of dilations 1, 2, 4: 1 + 2 + 4 + 1
TINY = {
    "layers_per_stack": 3, "stacks": 1, "residual_channels": 8, "dilation_channels": 8,
    "skip_channels": 16, "end_channels": 16, "sample_rate": RATE,
}
TINY_SETTINGS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
CLIP_SECONDS = (0.3, 0.8, 0.6)  # 2400 samples (shorter than a training crop, 4000), 6400, 4800
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
    """(corpus folder, checkpoint) of a tiny conditional WaveNet trained for 3 steps."""
    folder = tmp_path_factory.mktemp("wavenet")
    corpus = write_corpus(folder / "corpus")
    checkpoint = folder / "tiny.safetensors"
    result = ok(run(
        "train", "wavenet", "--data", corpus, "-o", checkpoint, *TINY_SETTINGS, "--steps", 3, "--batch-size", 2,
        "--eval-every", 3, "--save-every", 3, "--warmup-steps", 1, "--device", "cpu", "--quiet",
    ))
    assert "2 speakers (alice, bob)" in result.stderr
    assert checkpoint.exists()
    return corpus, checkpoint


def sample(checkpoint, *args):
    return run("sample", "wavenet", "-c", checkpoint, "--device", "cpu", "--quiet", *args)


def read_wav(data) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data) if isinstance(data, bytes) else data, dtype="int16")
    return audio, rate


# -------------------------------------------------------------------------------------------------
# train


def test_training_stores_speakers_rate_and_held_out_metric(trained):
    _, checkpoint = trained
    stored = read_checkpoint(checkpoint, expected_model="wavenet")
    assert stored.config["num_speakers"] == 2  # set from the sub-folders
    assert stored.data["speakers"] == ["alice", "bob"]
    assert stored.data["sample_rate"] == RATE and stored.data["mu"] == 255
    assert (stored.data["clips"], stored.data["valid_clips"]) == (4, 2)  # the 1st file of each speaker is held out
    assert 5.0 < stored.metrics["valid_bits_per_sample"] < 9.0  # ~8 (uniform over 256) after 3 steps


def test_batches_follow_the_counting_rule(trained):
    """Random crops come only from the generator; a crop counts every position when it starts
    the clip, else only positions >= receptive field; padding never counts. Held-out batches cover
    each held-out sample exactly once, so their NLL equals a forward pass over each whole file."""
    corpus, checkpoint = trained
    family = get_family("wavenet")
    setup = family.task.prepare_training(family, family.config(TINY), TrainRequest(data=[corpus]))
    data = setup.data
    first = data.sample_batch(8, torch.Generator().manual_seed(5))
    again = data.sample_batch(8, torch.Generator().manual_seed(5))
    assert torch.equal(first.tokens, again.tokens) and torch.equal(first.counted, again.counted)
    assert first.tokens.shape == (8, 4000)
    clips = {(clip.speaker, bytes(clip.codes[:100].numpy())) for clip in data.train}
    for tokens, counted, speaker in zip(first.tokens, first.counted, first.speakers.tolist(), strict=True):
        start = int(counted.int().argmax())
        assert start in (0, RECEPTIVE_FIELD)
        if start == 0:  # a crop at the start of its clip
            assert (speaker, bytes(tokens[:100].to(torch.uint8).numpy())) in clips
        assert counted[start:].sum() == counted.sum()  # one counted run, then padding
        stop = start + int(counted.sum())
        assert stop == 4000 or not tokens[stop:].any()  # a short clip: zero padding, not counted

    model, _ = family.load(checkpoint, torch.device("cpu"))
    nll = count = 0
    with torch.no_grad():
        for batch in data.valid_batches(batch_size=1):  # the 6400-sample clips need two crops each
            out = family.task.loss(model, batch)
            nll, count = nll + float(out.nll), count + out.count
        whole = sum(float(file_nats(model, clip.codes.long(), clip.speaker)) for clip in data.valid)
    assert count == sum(len(clip.codes) for clip in data.valid)
    assert nll == pytest.approx(whole, rel=1e-5)


def test_held_out_files_given_by_name_take_their_speaker_from_their_folder(trained, tmp_path):
    corpus, _ = trained
    family = get_family("wavenet")
    prepare = lambda valid: family.task.prepare_training(family, family.config(TINY), TrainRequest(data=[corpus], valid=valid))  # noqa: E731
    setup = prepare([corpus / "bob" / "0.wav"])
    assert [(clip.path.name, clip.speaker) for clip in setup.data.valid] == [("0.wav", 1)]
    assert setup.data_meta["clips"] == 6  # nothing held out of --data
    (tmp_path / "carol").mkdir()
    shutil.copy(corpus / "bob" / "0.wav", tmp_path / "carol" / "0.wav")
    with pytest.raises(DataError, match="'.*carol/0.wav' is not in a folder named after a training speaker \\(alice, bob\\)"):
        prepare([tmp_path])


def file_nats(model, codes, speaker) -> torch.Tensor:
    """-log p(file) in nats from one forward pass over the whole file."""
    logits = model(codes[None], torch.tensor([speaker]))  # (1, T, V)
    return F.cross_entropy(logits[0], codes, reduction="sum")


# -------------------------------------------------------------------------------------------------
# sample


def test_sample_writes_count_wavs_of_the_right_length_and_rate(trained, tmp_path):
    _, checkpoint = trained
    result = ok(sample(checkpoint, "-n", 2, "--seconds", 0.05, "--speaker", 1, "--seed", 3, "-o", tmp_path / "out.wav",
                       "--spectrogram", tmp_path / "first.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png", "out-1.wav", "out-2.wav"]
    for name in ("out-1.wav", "out-2.wav"):
        info = sf.info(tmp_path / name)
        assert (info.samplerate, info.frames, info.channels) == (RATE, 400, 1)
    assert not np.array_equal(read_wav(tmp_path / "out-1.wav")[0], read_wav(tmp_path / "out-2.wav")[0])
    assert "generated 2 x 0.05 s of audio" in result.stderr and "real-time factor" in result.stderr
    assert "out-1.wav ... " in result.stderr
    assert (tmp_path / "first.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.stdout == ""


def test_a_seed_repeats_and_rows_do_not_depend_on_the_batch(trained, tmp_path):
    _, checkpoint = trained
    ok(sample(checkpoint, "-n", 2, "--seconds", 0.03, "--speaker", 0, "--seed", 11, "-o", tmp_path / "pair.wav"))
    ok(sample(checkpoint, "--seconds", 0.03, "--speaker", 0, "--seed", 11, "-o", tmp_path / "alone.wav"))
    ok(sample(checkpoint, "--seconds", 0.03, "--speaker", 0, "--seed", 12, "-o", tmp_path / "other.wav"))
    alone = read_wav(tmp_path / "alone.wav")[0]
    assert np.array_equal(alone, read_wav(tmp_path / "pair-1.wav")[0])
    assert not np.array_equal(alone, read_wav(tmp_path / "other.wav")[0])


def test_sample_streams_one_wav_to_stdout(trained):
    _, checkpoint = trained
    result = ok(sample(checkpoint, "--seconds", 0.02, "--speaker", 0, "--seed", 4, "-o", "-"))
    audio, rate = read_wav(result.stdout_bytes)
    assert (rate, len(audio)) == (RATE, 160)
    # a real process: the bytes on its stdout are the same WAV; progress and notes stay on stderr
    process = subprocess.run(
        [sys.executable, "-m", "arcli", "sample", "wavenet", "-c", str(checkpoint), "--seconds", "0.02", "--speaker", "0",
         "--seed", "4", "--device", "cpu"],
        capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=120,
    )
    assert process.returncode == 0, process.stderr.decode()
    assert process.stdout == result.stdout_bytes
    assert b"real-time factor" in process.stderr


def test_a_conditional_model_defaults_to_speaker_0_with_a_note(trained, tmp_path):
    _, checkpoint = trained
    result = ok(sample(checkpoint, "--seconds", 0.01, "--seed", 1, "-o", tmp_path / "a.wav"))
    assert "using speaker 0; speakers: 0=alice, 1=bob" in result.stderr
    ok(sample(checkpoint, "--seconds", 0.01, "--seed", 1, "--speaker", 0, "-o", tmp_path / "b.wav"))
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_a_checkpoint_may_carry_its_own_sampling_temperature(trained, tmp_path):
    """data["temperature"] (examples/speech/ship.py --temperature) is used when --temperature is absent."""
    _, checkpoint = trained
    stored = read_checkpoint(checkpoint)
    warm = tmp_path / "warm.safetensors"
    save_checkpoint(warm, stored.model_name, stored.config, stored.tensors, data={**stored.data, "temperature": 0.5},
                    training=stored.training, metrics=stored.metrics)
    common = ("--seconds", 0.03, "--speaker", 0, "--seed", 5)
    result = ok(run("sample", "wavenet", "-c", warm, "--device", "cpu", *common, "-o", tmp_path / "default.wav"))
    assert "temperature 0.5, the checkpoint's default" in result.stderr
    ok(sample(checkpoint, *common, "--temperature", 0.5, "-o", tmp_path / "explicit.wav"))
    ok(sample(checkpoint, *common, "-o", tmp_path / "plain.wav"))
    default = read_wav(tmp_path / "default.wav")[0]
    assert np.array_equal(default, read_wav(tmp_path / "explicit.wav")[0])
    assert not np.array_equal(default, read_wav(tmp_path / "plain.wav")[0])
    result = ok(run("sample", "wavenet", "-c", warm, "--device", "cpu", *common, "--temperature", 1, "-o", tmp_path / "one.wav"))
    assert "checkpoint's default" not in result.stderr
    assert np.array_equal(read_wav(tmp_path / "one.wav")[0], read_wav(tmp_path / "plain.wav")[0])
    result = ok(run("sample", "wavenet", "-c", warm, "--device", "cpu", *common, "--strategy", "greedy", "-o", tmp_path / "g.wav"))
    assert "checkpoint's default" not in result.stderr


def test_force_overwrites_and_nothing_is_written_when_one_output_exists(trained, tmp_path):
    _, checkpoint = trained
    (tmp_path / "out-2.wav").write_bytes(b"keep me")
    one_line_error(sample(checkpoint, "-n", 2, "--seconds", 0.01, "--speaker", 0, "-o", tmp_path / "out.wav"),
                   "out-2.wav", "already exists", "--force")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-2.wav"]  # out-1.wav was not written either
    assert (tmp_path / "out-2.wav").read_bytes() == b"keep me"
    ok(sample(checkpoint, "-n", 2, "--seconds", 0.01, "--speaker", 0, "-o", tmp_path / "out.wav", "--force"))
    assert sf.info(tmp_path / "out-2.wav").frames == 80


# -------------------------------------------------------------------------------------------------
# score


def parse_scores(stdout: str) -> dict[str, tuple[float, float, int]]:
    rows = {}
    for line in stdout.splitlines():
        path, bits, nats, samples = line.split("\t")
        rows[path] = (float(bits), float(nats), int(samples))
    return rows


def test_score_is_the_exact_log_likelihood_of_each_file(trained, tmp_path, monkeypatch):
    corpus, checkpoint = trained
    stray = tmp_path / "stray.wav"  # in no speaker folder: scored as speaker 0, with a note
    shutil.copy(corpus / "bob" / "2.wav", stray)
    result = ok(run("score-likelihood", "wavenet", "-c", checkpoint, "--device", "cpu", corpus, stray))
    rows = parse_scores(result.stdout)
    assert len(rows) == 7
    assert "1 of 7 files are not in a folder named after a speaker" in result.stderr
    assert "bits/sample overall" in result.stderr

    model, _ = get_family("wavenet").load(checkpoint, torch.device("cpu"))
    with torch.no_grad():
        for path, speaker in ((corpus / "alice" / "1.wav", 0), (corpus / "bob" / "1.wav", 1), (stray, 0)):
            codes = mu_law_encode(load_audio(path, RATE))
            bits, nats, samples = rows[str(path)]
            assert samples == len(codes)
            assert nats == pytest.approx(float(file_nats(model, codes, speaker)), rel=1e-5)
            assert bits == pytest.approx(nats / samples / math.log(2), abs=1e-4)
            assert 5.0 < bits < 9.0

    # long files are scored in chunks that overlap by the receptive field: the same numbers
    monkeypatch.setattr(audio_task, "SCORE_CHUNK", 100)
    chunked = parse_scores(ok(run("score-likelihood", "wavenet", "-c", checkpoint, "--device", "cpu", "--batch-size", 3,
                                  corpus, stray)).stdout)
    assert chunked.keys() == rows.keys()
    for path, (_, nats, samples) in rows.items():
        assert chunked[path][1] == pytest.approx(nats, rel=1e-5) and chunked[path][2] == samples


def test_score_writes_a_file_and_refuses_to_overwrite_it(trained, tmp_path):
    corpus, checkpoint = trained
    out = tmp_path / "scores.tsv"
    ok(run("score-likelihood", "wavenet", "-c", checkpoint, "--device", "cpu", corpus / "alice", "-o", out))
    assert len(out.read_text().splitlines()) == 3
    one_line_error(run("score-likelihood", "wavenet", "-c", checkpoint, corpus / "alice", "-o", out), "already exists")


# -------------------------------------------------------------------------------------------------
# models info, the shipped checkpoint


def test_models_info_and_the_shipped_checkpoint(trained, tmp_path, monkeypatch):
    _, checkpoint = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(registry, "checkpoints_dir", lambda: empty)  # an install that lost its checkpoint
    one_line_error(run("sample", "wavenet", "--seconds", 0.01, "-o", tmp_path / "x.wav"), "shipped checkpoint", "missing")
    shutil.copy(checkpoint, tmp_path / "wavenet-speech.safetensors")
    monkeypatch.setattr(registry, "checkpoints_dir", lambda: tmp_path)
    result = ok(run("models", "info", "wavenet"))
    assert "receptive field: 8 samples = 1.0 ms at 8000 Hz" in result.stdout
    assert "speakers: 2" in result.stdout
    ok(run("sample", "wavenet", "--seconds", 0.01, "--speaker", 1, "--quiet", "-o", tmp_path / "x.wav"))
    assert sf.info(tmp_path / "x.wav").frames == 80


# -------------------------------------------------------------------------------------------------
# user mistakes: one line, exit code 1, nothing written


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--seconds", "0"], ["--seconds must be > 0"]),
        (["--seconds", "-1"], ["--seconds must be > 0"]),
        (["--seconds", "100000"], ["at most 600"]),
        (["--seconds", "0.00001"], ["less than one sample"]),
        (["--speaker", "2"], ["--speaker 2 is out of range", "0=alice, 1=bob"]),
        (["--speaker", "-1"], ["out of range"]),
        (["--prompt", "hello"], ["--prompt does not apply to the audio model"]),
        (["--label", "3"], ["--label does not apply"]),
        (["--nbest", "2"], ["-n COUNT"]),
        (["--max-length", "100"], ["--seconds"]),
        (["-n", "2", "-o", "-"], ["cannot all go to stdout"]),
        (["-o", "{tmp}/out.mp3"], ["ending in .wav"]),
        (["-o", "{tmp}/missing/out.wav"], ["does not exist"]),
        (["--spectrogram", "{tmp}/s.jpg", "-o", "{tmp}/o.wav"], [".png"]),
    ],
)
def test_sample_mistakes(trained, tmp_path, args, fragments):
    _, checkpoint = trained
    args = [arg.format(tmp=tmp_path) for arg in args]
    one_line_error(sample(checkpoint, "--seconds", 0.01, *args), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_score_and_train_mistakes(trained, tmp_path):
    corpus, checkpoint = trained
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.wav").write_text("not audio at all")
    one_line_error(run("score-likelihood", "wavenet", "-c", checkpoint, tmp_path / "notes.wav"), "cannot read audio file", "notes.wav")
    one_line_error(run("score-likelihood", "wavenet", "-c", checkpoint, tmp_path / "empty"), "no audio files", "empty")
    one_line_error(run("score-likelihood", "wavenet", "-c", checkpoint, tmp_path / "nothing.wav"), "no such file")
    one_line_error(run("score-likelihood", "wavenet", "-c", checkpoint, corpus, "--heatmap", tmp_path / "h.png"), "--heatmap")

    out = tmp_path / "m.safetensors"
    train = ("train", "wavenet", "-o", out, *TINY_SETTINGS, "--steps", 1, "--quiet", "--device", "cpu")
    one_line_error(run(*train, "--data", tmp_path / "empty"), "no audio files")
    broken = tmp_path / "broken"
    shutil.copytree(corpus, broken)
    shutil.copy(tmp_path / "notes.wav", broken / "alice" / "notes.wav")
    one_line_error(run(*train, "--data", broken), "cannot read audio file", "notes.wav")
    one_line_error(run(*train, "--data", corpus, "--set", "num_speakers=3"), "num_speakers=3", "2 speaker sub-folders")
    short = tmp_path / "short"
    shutil.copytree(corpus, short)
    sf.write(short / "bob" / "tiny.wav", np.zeros(5, dtype=np.float32), RATE)
    one_line_error(run(*train, "--data", short), "1 clip(s) shorter than the receptive field of 8 samples", "tiny.wav' (5 samples)")
    (tmp_path / "single").mkdir()
    shutil.copy(corpus / "alice" / "1.wav", tmp_path / "single" / "only.wav")
    one_line_error(run(*train, "--data", tmp_path / "single"), "--valid")
    assert not out.exists()


def test_a_checkpoint_of_another_model_is_refused(trained, tmp_path, bigram_plugin):
    (tmp_path / "text.txt").write_text("the word was with god\nand the word was god\n" * 20)
    text_model = tmp_path / "bigram.safetensors"
    ok(run("train", "bigram", "--data", tmp_path / "text.txt", "-o", text_model, "--steps", 1, "--quiet", "--device", "cpu"))
    one_line_error(sample(text_model, "--seconds", 0.01, "-o", tmp_path / "x.wav"),
                   "'bigram' checkpoint, not a 'wavenet' checkpoint")
    one_line_error(run("score-likelihood", "wavenet", "-c", text_model, trained[0]), "'bigram' checkpoint")
    save_checkpoint(tmp_path / "odd.safetensors", "wavenet", {"layers_per_stack": 2, "no_such_field": 1}, {})
    one_line_error(sample(tmp_path / "odd.safetensors", "-o", tmp_path / "y.wav"), "unknown fields")


def test_init_fine_tunes_from_a_checkpoint_and_refuses_data_of_another_form(trained, tmp_path):
    corpus, checkpoint = trained
    tuned = tmp_path / "tuned.safetensors"
    base = ("train", "wavenet", "--data", corpus, "--steps", 1, "--batch-size", 2, "--warmup-steps", 0, "--quiet", "--device", "cpu")
    ok(run(*base, "--init", checkpoint, "--lr", 1e-12, "-o", tuned))  # a step too small to move the weights
    start, after = read_checkpoint(checkpoint), read_checkpoint(tuned)
    assert after.config == start.config and after.training["init"] == str(checkpoint)
    assert all(torch.allclose(after.tensors[k].float(), start.tensors[k].float(), atol=1e-6) for k in start.tensors)
    fresh = tmp_path / "fresh.safetensors"
    ok(run(*base, *TINY_SETTINGS, "--lr", 1e-12, "-o", fresh))
    fresh_tensors = read_checkpoint(fresh).tensors  # the same seed, but not the trained weights
    assert not all(torch.allclose(fresh_tensors[k].float(), start.tensors[k].float(), atol=1e-6) for k in start.tensors)

    out = tmp_path / "m.safetensors"
    one_line_error(run(*base, "--init", checkpoint, "--set", "residual_channels=4", "-o", out), "--set", "--init")
    one_line_error(run(*base, "--init", checkpoint, "--resume", tuned, "-o", out), "--init and --resume")
    one_line_error(run(*base, "--init", tmp_path / "none.safetensors", "-o", out), "none.safetensors")
    (tmp_path / "one" / "carol").mkdir(parents=True)
    for i in range(3):
        shutil.copy(corpus / "alice" / f"{i}.wav", tmp_path / "one" / "carol" / f"{i}.wav")
    one_line_error(run("train", "wavenet", "--data", tmp_path / "one", "--init", checkpoint, "--steps", 1, "--quiet", "--device", "cpu",
                       "-o", out), "does not fit the --init checkpoint", "num_speakers")
    assert not out.exists()
