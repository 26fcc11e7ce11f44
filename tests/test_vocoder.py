"""The WaveNet vocoder: log-mel features, local conditioning (step == forward), and the CLI
(train, resynthesise a clip or frames, score), with its user mistakes."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from clihelpers import one_line_error, run
from test_wavenet_cli import RATE, TINY_SETTINGS, ok, write_corpus

from arcli.audio.features import MelSpec, interpolation, log_mel, mel_filters
from arcli.checkpoint import read_checkpoint
from arcli.models.wavenet import LocalCondition, WaveNet, WaveNetConfig

SPEC = MelSpec(sample_rate=8000, n_mels=16, hop=50, window=200, n_fft=256, fmin=40.0, fmax=4000.0)
VOCODER_SETTINGS = [*TINY_SETTINGS, "--set", "cond_channels=16", "--set", "cond_hidden=8", "--set", "cond_hop=50"]


def test_mel_filters_are_unit_area_triangles_in_order():
    filters = mel_filters(SPEC).double()  # (16, 129)
    assert filters.shape == (16, 129) and bool((filters >= 0).all())
    step = SPEC.sample_rate / SPEC.n_fft  # Hz per bin
    areas = filters.sum(1) * step
    torch.testing.assert_close(areas[2:], torch.ones(14, dtype=torch.float64), rtol=0.15, atol=0)  # coarse bins: near 1
    peaks = filters.argmax(1)
    assert bool((peaks[1:] >= peaks[:-1]).all())  # centres rise with the filter index


def test_a_tone_lights_the_mel_band_of_its_frequency():
    t = torch.arange(8000) / 8000
    frames = log_mel(0.5 * torch.sin(2 * math.pi * 1000.0 * t), SPEC)  # 1 s at 8 kHz
    assert frames.shape == (8000 // 50 + 1, 16)
    band = int(mel_filters(SPEC)[:, round(1000 / (8000 / 256))].argmax())  # the filter strongest at 1 kHz
    assert int(frames[40].argmax()) == band


def test_interpolation_between_centred_frames():
    below, above, fraction = interpolation(torch.tensor([0, 25, 49, 50, 149, 150, 400]), 50, 4)
    assert below.tolist() == [0, 0, 0, 1, 2, 3, 3] and above.tolist() == [1, 1, 1, 2, 3, 3, 3]
    torch.testing.assert_close(fraction, torch.tensor([0.0, 0.5, 0.98, 0.0, 0.98, 0.0, 0.0]))


@pytest.mark.parametrize("offset", [0, 3])
def test_locally_conditioned_step_matches_forward(offset):
    torch.manual_seed(0)
    config = WaveNetConfig(residual_channels=8, dilation_channels=8, skip_channels=16, end_channels=16, layers_per_stack=3,
                           stacks=2, num_speakers=2, cond_channels=5, cond_hidden=6, cond_hop=4)
    model = WaveNet(config).eval()
    for block in model.blocks:  # make the conditioning matter
        torch.nn.init.normal_(block.local.weight, std=1.0)
    tokens = torch.randint(0, 256, (3, 30))
    condition = LocalCondition(torch.randn(3, 10, 5), torch.full((3,), offset), torch.tensor([0, 1, 1]))
    with torch.no_grad():
        full = model(tokens, condition)
        other = model(tokens, condition._replace(frames=torch.randn(3, 10, 5)))
    assert (full - other).abs().max() > 0.1  # the frames change the logits
    state, previous, steps = model.start(3, condition), None, []
    for t in range(30):
        logits, state = model.step(state, previous)
        steps.append(logits)
        previous = tokens[:, t]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_reorder_keeps_each_rows_conditioning():
    torch.manual_seed(1)
    config = WaveNetConfig(residual_channels=8, dilation_channels=8, skip_channels=16, end_channels=16, layers_per_stack=2,
                           stacks=1, cond_channels=5, cond_hidden=6, cond_hop=4)
    model = WaveNet(config).eval()
    tokens = torch.randint(0, 256, (2, 12))
    condition = LocalCondition(torch.randn(2, 4, 5))
    with torch.no_grad():
        swapped = model(tokens.flip(0), LocalCondition(condition.frames.flip(0)))
    state, previous, steps = model.start(2, condition), None, []
    for t in range(12):
        if t == 5:
            state = model.reorder(state, torch.tensor([1, 0]))
            previous = previous.flip(0)
        logits, state = model.step(state, previous)
        steps.append(logits)
        previous = tokens[:, t] if t < 5 else tokens.flip(0)[:, t]  # after the swap, each row goes on as the other
    torch.testing.assert_close(torch.stack(steps[5:], 1), swapped[:, 5:], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def vocoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocoder")
    corpus = write_corpus(folder / "corpus")
    checkpoint = folder / "voc.safetensors"
    result = ok(run("train", "wavenet-vocoder", "--data", corpus, "-o", checkpoint, *VOCODER_SETTINGS, "--steps", 3,
                    "--batch-size", 2, "--eval-every", 3, "--warmup-steps", 1, "--device", "cpu", "--quiet"))
    assert "no speaker labels" in result.stderr  # a vocoder hears the voice in its frames
    return corpus, checkpoint


def vocode(checkpoint, *args):
    return run("sample", "wavenet-vocoder", "-c", checkpoint, "--device", "cpu", "--quiet", *args)


def test_vocoder_resynthesises_a_clip_or_frames_and_scores(vocoder, tmp_path):
    corpus, checkpoint = vocoder
    stored = read_checkpoint(checkpoint)
    assert stored.data["features"]["kind"] == "log-mel" and stored.data["features"]["n_mels"] == 16
    clip = corpus / "alice" / "1.wav"
    ok(vocode(checkpoint, "--mel-from", clip, "--seed", 1, "-o", tmp_path / "a.wav"))
    ok(vocode(checkpoint, "--mel-from", clip, "--seed", 1, "-o", tmp_path / "b.wav"))
    audio, rate = sf.read(tmp_path / "a.wav", dtype="int16")
    assert rate == RATE and len(audio) == len(sf.read(clip)[0])  # the clip's own length
    assert np.array_equal(audio, sf.read(tmp_path / "b.wav", dtype="int16")[0])  # --seed repeats
    np.save(tmp_path / "frames.npy", np.random.default_rng(0).standard_normal((9, 16)).astype(np.float32))
    ok(vocode(checkpoint, "--mel-from", tmp_path / "frames.npy", "-o", tmp_path / "c.wav"))
    assert len(sf.read(tmp_path / "c.wav")[0]) == 8 * 50  # (frames - 1) * hop
    scored = ok(run("score-likelihood", "wavenet-vocoder", "-c", checkpoint, clip, "--device", "cpu"))
    bits = float(scored.stdout.split("\t")[1])
    assert 0 < bits < 9


def test_vocoder_mistakes(vocoder, tmp_path):
    corpus, checkpoint = vocoder
    (tmp_path / "notes.txt").write_text("not audio")
    np.save(tmp_path / "wide.npy", np.zeros((9, 80), dtype=np.float32))
    out = tmp_path / "out.wav"
    one_line_error(vocode(checkpoint, "-o", out), "--mel-from CLIP.wav")
    one_line_error(vocode(checkpoint, "--mel-from", tmp_path / "notes.txt", "-o", out), "notes.txt")
    one_line_error(vocode(checkpoint, "--mel-from", tmp_path / "wide.npy", "-o", out), "x 16 log-mel", "(9, 80)")
    one_line_error(vocode(checkpoint, "--mel-from", tmp_path / "missing.npy", "-o", out), "no such file")
    one_line_error(vocode(checkpoint, "--mel-from", corpus / "bob" / "0.wav", "--seconds", 1, "-o", out), "--seconds does not apply")
    assert not out.exists()
