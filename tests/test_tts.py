"""wavenet-tts: espeak-ng's front end (phoneme events), the linguistic frames, the pitch tracker, text
splitting, and the CLI (train on clips with phoneme sidecars, speak --text / --text-file, score),
with its user mistakes."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from clihelpers import one_line_error, run
from test_wavenet_cli import RATE, TINY_SETTINGS, ok, write_corpus

from arcli.audio.espeak import Phone, render
from arcli.audio.linguistic import Inventory, pitch_contour
from arcli.checkpoint import read_checkpoint
from arcli.errors import OptionError
from arcli.tasks.conditioning import MAX_PIECE_WORDS, split_text

try:
    render("a")
except Exception as error:  # no libespeak-ng on this machine: .ci/run installs it
    pytest.skip(f"libespeak-ng unavailable ({error}): apt-get install espeak-ng", allow_module_level=True)

HOP = 50
TTS_SETTINGS = [*TINY_SETTINGS, "--set", "cond_hidden=8", "--set", f"cond_hop={HOP}"]
TEXTS = {"en-us": ["Speak to the priests.", "And say to them."], "en-gb": ["In the beginning.", "God said, let there be light."]}


def test_espeak_reports_every_phoneme_with_its_start():
    rendering = render("We see the sea.", "en-us")
    names = [phone.name for phone in rendering.phones]
    starts = [phone.start for phone in rendering.phones]
    assert rendering.rate == 22050 and len(rendering.audio) > rendering.rate // 2
    assert "s" in names and "i:" in names and names.count("i:") >= 2  # see, sea
    assert starts == sorted(starts) and starts[0] == 0.0 and starts[-1] <= len(rendering.audio) / rendering.rate
    # Within one process, espeak-ng's renderings of a text differ by a few samples (its state carries over).
    again = render("We see the sea.", "en-us")
    assert [phone.name for phone in again.phones] == names and abs(len(again.audio) - len(rendering.audio)) < 0.01 * len(rendering.audio)
    assert max(abs(a.start - b.start) for a, b in zip(again.phones, rendering.phones, strict=True)) < 0.002


def test_espeak_voices_and_their_errors():
    male, female = render("Hello there.", "en-us"), render("Hello there.", "en-us+f2")
    pitch = lambda r: float(pitch_contour(torch.from_numpy(r.audio), r.rate, 200).clamp(min=0).median())  # noqa: E731
    assert pitch(female) > 1.4 * pitch(male)  # the +f2 variant is applied
    with pytest.raises(OptionError, match="no voice"):
        render("Hello.", "xx-nowhere")
    with pytest.raises(OptionError, match="pitch"):
        render("Hello.", "en-us", pitch=120)


def test_linguistic_frames_by_hand():
    inventory = Inventory.fit([[Phone("b", 0.0), Phone("a", 0.05)]])
    assert inventory.phonemes == ("a", "b", "<sil>", "<unk>") and inventory.channels == 16
    f0 = torch.tensor([0.0, 150.0, 300.0, 0.0])  # frames at 0, 0.05, 0.1 and 0.15 s (hop 4 at 80 Hz)
    frames = inventory.frames([Phone("a", 0.0), Phone("b", 0.05)], f0, seconds=0.1, hop=4, rate=80)
    a, b, sil = 0, 1, 2
    expected = torch.zeros(4, 16)
    for row, (current, before, after, position, length) in enumerate(
        [(a, sil, b, 0.0, 0.5), (b, a, sil, 0.0, 0.5), (sil, sil, sil, 0.0, 0.0), (sil, sil, sil, 0.0, 0.0)]
    ):
        expected[row, current] = expected[row, 4 + before] = expected[row, 8 + after] = 1.0
        expected[row, 12], expected[row, 13] = position, length
    expected[:, 14] = torch.tensor([0.0, 1.0, 1.0, 0.0])  # voiced
    expected[:, 15] = torch.tensor([0.0, 0.0, 1.0, 0.0])  # log2(f0 / 150)
    torch.testing.assert_close(frames, expected)
    halfway = inventory.frames([Phone("a", 0.0), Phone("zz", 0.05)], torch.zeros(2), seconds=0.1, hop=2, rate=80)
    assert halfway[1, 0] == 1.0 and halfway[1, 12] == 0.5  # 0.025 s into `a`, 0.05 s long
    assert halfway[1, 8 + 3] == 1.0  # the next phone, `zz`, is <unk>


def test_pitch_contour_finds_a_tone_and_not_noise():
    rate = 16000
    t = torch.arange(rate) / rate
    f0 = pitch_contour(0.5 * torch.sin(2 * math.pi * 210.0 * t), rate, 200)
    assert len(f0) == rate // 200 + 1
    assert abs(float(f0[5:-5].median()) - 210.0) < 2.0 and bool((f0[5:-5] > 0).all())
    noise = pitch_contour(torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, rate).astype(np.float32)), rate, 200)
    assert float((noise > 0).float().mean()) < 0.1
    assert bool((pitch_contour(torch.zeros(rate), rate, 200) == 0).all())


def test_split_text_at_sentences_then_commas_then_words():
    assert split_text("One two. Three, four!  Five?") == ["One two.", "Three, four!", "Five?"]
    assert split_text(" ... !? ") == []
    words = " ".join(f"w{i}" for i in range(2 * MAX_PIECE_WORDS + 5))
    pieces = split_text(words)
    assert [len(p.split()) for p in pieces] == [MAX_PIECE_WORDS, MAX_PIECE_WORDS, 5] and " ".join(pieces) == words
    clauses = split_text(", ".join(["a b c d e f g h"] * 5))  # 40 words: cut at the commas
    assert len(clauses) == 5 and clauses[0] == "a b c d e f g h,"


def write_tts_corpus(folder):
    """Two voices, two clips each: espeak-ng renderings at 8 kHz with their phoneme sidecars."""
    for voice, texts in TEXTS.items():
        (folder / voice).mkdir(parents=True)
        for i, text in enumerate(texts):
            rendering = render(text, voice)
            audio = soxr.resample(rendering.audio, rendering.rate, RATE)
            sf.write(folder / voice / f"{i}.wav", audio, RATE, subtype="PCM_16")
            phones = [[phone.name, phone.start] for phone in rendering.phones]
            (folder / voice / f"{i}.json").write_text(json.dumps({"text": text, "voice": voice, "phones": phones}))
    return folder


@pytest.fixture(scope="module")
def tts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tts")
    corpus = write_tts_corpus(folder / "corpus")
    checkpoint = folder / "tts.safetensors"
    result = ok(run("train", "wavenet-tts", "--data", corpus, "-o", checkpoint, *TTS_SETTINGS, "--steps", 3,
                    "--batch-size", 2, "--eval-every", 3, "--warmup-steps", 1, "--device", "cpu", "--quiet"))
    assert "2 speakers (en-gb, en-us)" in result.stderr
    return corpus, checkpoint


def speak(checkpoint, *args):
    return run("sample", "wavenet-tts", "-c", checkpoint, "--device", "cpu", "--quiet", *args)


def test_tts_speaks_text_and_text_files_and_scores(tts, tmp_path):
    corpus, checkpoint = tts
    stored = read_checkpoint(checkpoint)
    features = stored.data["features"]
    assert features["kind"] == "linguistic" and features["voices"] == {"en-gb": "en-gb", "en-us": "en-us"}
    assert stored.config["cond_channels"] == 3 * len(features["phonemes"]) + 4
    for name in ("a.wav", "b.wav"):  # fresh processes: espeak-ng's state carries over between renderings in one
        command = [sys.executable, "-m", "arcli", "sample", "wavenet-tts", "-c", str(checkpoint), "--text", "Let there be light.",
                   "--speaker", "1", "--seed", "3", "--device", "cpu", "-q", "-o", str(tmp_path / name)]
        assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
    audio, rate = sf.read(tmp_path / "a.wav", dtype="int16")
    rendering = render("Let there be light.", "en-us")  # speaker 1 is en-us: its voice times the phonemes
    assert rate == RATE and abs(len(audio) - len(soxr.resample(rendering.audio, rendering.rate, RATE))) < 20
    assert np.array_equal(audio, sf.read(tmp_path / "b.wav", dtype="int16")[0])  # --seed repeats
    two = ok(speak(checkpoint, "--text", "First one. Second one.", "-o", tmp_path / "two.wav"))
    assert "speaker 0" in two.stderr  # no --speaker: the note names the choice
    firsts = [len(soxr.resample((r := render(t, "en-gb")).audio, r.rate, RATE)) for t in ("First one.", "Second one.")]
    assert abs(len(sf.read(tmp_path / "two.wav")[0]) - sum(firsts)) < 0.02 * sum(firsts)  # sentences made side by side, then joined
    (tmp_path / "lines.txt").write_text("Hello.\n\nGood morning, friend.\n")
    ok(speak(checkpoint, "--text-file", tmp_path / "lines.txt", "-o", tmp_path / "line.wav"))
    assert (tmp_path / "line-1.wav").is_file() and (tmp_path / "line-2.wav").is_file() and not (tmp_path / "line-3.wav").exists()
    scored = ok(run("score-likelihood", "wavenet-tts", "-c", checkpoint, corpus, "--device", "cpu"))
    assert len(scored.stdout.strip().splitlines()) == 4 and 0 < float(scored.stdout.split("\t")[1]) < 9


def test_tts_mistakes(tts, tmp_path):
    corpus, checkpoint = tts
    out = tmp_path / "out.wav"
    one_line_error(speak(checkpoint, "-o", out), "--text")
    one_line_error(speak(checkpoint, "--text", "", "-o", out), "no words")
    one_line_error(speak(checkpoint, "--text", "?! ...", "-o", out), "no words", "?! ...")
    one_line_error(speak(checkpoint, "--text", "Hi.", "--text-file", corpus / "x.txt", "-o", out), "one of them")
    one_line_error(speak(checkpoint, "--text", "Hi.", "--speaker", 2, "-o", out), "out of range", "0=en-gb, 1=en-us")
    one_line_error(speak(checkpoint, "--text", "Hi.", "--seconds", 1, "-o", out), "--seconds does not apply")
    one_line_error(speak(checkpoint, "--mel-from", corpus / "en-us" / "0.wav", "-o", out), "--mel-from is for wavenet-vocoder")
    one_line_error(speak(checkpoint, "--text-file", tmp_path / "none.txt", "-o", out), "no such file")
    (tmp_path / "bad.txt").write_text("Fine.\n...\n")
    one_line_error(speak(checkpoint, "--text-file", tmp_path / "bad.txt", "-o", out), "line 2", "no words")
    assert not out.exists() and not (tmp_path / "out-1.wav").exists()
    plain = write_corpus(tmp_path / "plain")  # clips without phoneme sidecars
    one_line_error(run("score-likelihood", "wavenet-tts", "-c", checkpoint, plain / "alice" / "0.wav"), "0.json", "make_tts_corpus.py")
    one_line_error(run("train", "wavenet-tts", "--data", plain, "-o", tmp_path / "t.safetensors", *TTS_SETTINGS, "--steps", 1), "make_tts_corpus.py")
    one_line_error(run("train", "wavenet-tts", "--data", corpus, "-o", tmp_path / "t.safetensors", *TTS_SETTINGS,
                       "--set", "cond_channels=7", "--steps", 1), "cond_channels=7")
    one_line_error(run("sample", "wavenet-vocoder", "-c", checkpoint, "--mel-from", corpus / "en-us" / "0.wav", "-o", out), "wavenet-tts")
