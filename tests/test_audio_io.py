import io
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from arcli.audio.io import SPECTROGRAM_MARGINS, find_audio_files, load_audio, write_spectrogram_png, write_wav
from arcli.errors import ArcliError, DataError


def sine(frequency: float, sample_rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return (amplitude * np.sin(2 * math.pi * frequency * t)).astype(np.float32)


def peak_frequency(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * sample_rate / len(audio))


def test_stereo_is_downmixed_to_the_mean(tmp_path):
    left = sine(300, 16000, 0.25)
    right = np.full_like(left, 0.25)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    audio = load_audio(tmp_path / "stereo.wav", 16000)
    assert audio.shape == (len(left),)
    assert audio.dtype == torch.float32
    torch.testing.assert_close(audio, torch.from_numpy((left + right) / 2))


def test_resampling_keeps_the_frequency_of_a_sine(tmp_path):
    sf.write(tmp_path / "sine.flac", sine(440, 44100, 1.0), 44100)
    audio = load_audio(tmp_path / "sine.flac", 16000).numpy()
    assert abs(len(audio) - 16000) <= 1
    assert abs(peak_frequency(audio, 16000) - 440) <= 2  # FFT bins are 1 Hz apart
    assert 0.45 < np.abs(audio[1000:-1000]).max() < 0.55  # amplitude kept, no aliasing blow-up


def test_ogg_is_read(tmp_path):
    sf.write(tmp_path / "tone.ogg", sine(1000, 16000, 0.5), 16000, format="OGG", subtype="VORBIS")
    audio = load_audio(tmp_path / "tone.ogg", 16000).numpy()
    assert abs(peak_frequency(audio, 16000) - 1000) <= 4


def test_write_then_load_round_trips_at_16_bit_precision(tmp_path):
    audio = torch.rand(8000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    write_wav(tmp_path / "out.wav", audio, 16000)
    info = sf.info(tmp_path / "out.wav")
    assert (info.samplerate, info.channels, info.subtype, info.format) == (
        16000,
        1,
        "PCM_16",
        "WAV",
    )
    loaded = load_audio(tmp_path / "out.wav", 16000)
    assert loaded.shape == audio.shape
    assert (loaded - audio).abs().max() <= 1 / 32768 + 1e-7


def test_write_clips_out_of_range_samples(tmp_path):
    write_wav(tmp_path / "loud.wav", torch.tensor([2.0, -3.0, 0.5]), 8000)
    samples, _ = sf.read(tmp_path / "loud.wav", dtype="int16")
    assert samples.tolist() == [32767, -32768, 16384]


def test_dash_writes_a_wav_to_stdout(capfdbinary):
    audio = torch.from_numpy(sine(500, 8000, 0.1))
    write_wav("-", audio, 8000)
    out, err = capfdbinary.readouterr()
    assert err == b""
    assert out[:4] == b"RIFF" and out[8:12] == b"WAVE"
    samples, rate = sf.read(io.BytesIO(out), dtype="float32")
    assert rate == 8000
    np.testing.assert_allclose(samples, audio.numpy(), atol=1 / 32768 + 1e-7)


def test_text_file_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not audio\n")
    with pytest.raises(DataError, match=r"^cannot read audio file '.*notes\.txt': \S") as caught:
        load_audio(path, 16000)
    assert "\n" not in str(caught.value)


def test_missing_and_empty_audio_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav", 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match="contains no samples"):
        load_audio(tmp_path / "empty.wav", 16000)
    (tmp_path / "zero_bytes.wav").write_bytes(b"")
    with pytest.raises(DataError, match="cannot read audio file"):
        load_audio(tmp_path / "zero_bytes.wav", 16000)


def test_empty_folder_and_missing_path_are_data_errors(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    with pytest.raises(DataError, match=r"no audio files \(\.wav, \.flac, \.ogg\) under '.*empty'"):
        find_audio_files([tmp_path / "empty"])
    with pytest.raises(DataError, match="no such file or folder"):
        find_audio_files([tmp_path / "nowhere"])


def touch_audio(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(
        path, np.zeros(16, np.float32), 8000, format="WAV" if path.suffix != ".flac" else "FLAC"
    )


def test_first_level_subfolders_are_speaker_labels(tmp_path):
    root = tmp_path / "speech"
    for relative in [
        "bob/2.wav",
        "alice/1.WAV",
        "bob/session/3.flac",
        "alice/0.wav",
        "top.wav",
        ".hidden/x.wav",
        "alice/._junk.wav",
    ]:
        touch_audio(root / relative)
    (root / "alice" / "notes.txt").write_text("skip me")
    found = find_audio_files([root])
    assert [(path.relative_to(root).as_posix(), label) for path, label in found] == [
        ("alice/0.wav", "alice"),
        ("alice/1.WAV", "alice"),
        ("bob/2.wav", "bob"),
        ("bob/session/3.flac", "bob"),
        ("top.wav", None),
    ]
    assert find_audio_files([str(root)]) == found  # str or Path, same answer


def test_flat_folder_and_plain_files_have_no_label(tmp_path):
    for name in ["b.wav", "a.flac"]:
        touch_audio(tmp_path / "flat" / name)
    touch_audio(tmp_path / "single.wav")
    found = find_audio_files([tmp_path / "single.wav", tmp_path / "flat"])
    assert found == [
        (tmp_path / "single.wav", None),
        (tmp_path / "flat" / "a.flac", None),
        (tmp_path / "flat" / "b.wav", None),
    ]


def test_writes_are_atomic_and_leave_no_temp_file(tmp_path, monkeypatch):
    audio = torch.from_numpy(sine(300, 8000, 0.2))
    write_wav(tmp_path / "a.wav", audio, 8000)
    write_spectrogram_png(tmp_path / "a.png", audio, 8000)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "a.wav"]

    before = (tmp_path / "a.wav").read_bytes()

    def interrupted(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(ArcliError, match=r"cannot write .*a\.wav.*No space left"):
        write_wav(tmp_path / "a.wav", torch.zeros(100), 8000)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "a.wav"]
    assert (tmp_path / "a.wav").read_bytes() == before  # the old file is untouched


def test_write_into_a_missing_folder_is_an_arcli_error(tmp_path):
    with pytest.raises(ArcliError, match="does not exist"):
        write_wav(tmp_path / "no" / "out.wav", torch.zeros(10), 8000)


def test_spectrogram_puts_low_frequencies_at_the_bottom(tmp_path):
    sample_rate = 16000
    audio = torch.from_numpy(sine(2000, sample_rate, 0.5))
    write_spectrogram_png(tmp_path / "spec.png", audio, sample_rate)
    left, top, right, bottom = SPECTROGRAM_MARGINS  # the axes around the plot
    image = np.asarray(Image.open(tmp_path / "spec.png").convert("L"), dtype=np.float64)[top:-bottom, left:-right]
    height, width = image.shape
    assert height == 257  # 512-point FFT at 16 kHz
    assert width == len(audio) // 128 + 1
    brightest_row = int(image[:, width // 2].argmax())
    expected_row = round((height - 1) * (1 - 2000 / (sample_rate / 2)))
    assert abs(brightest_row - expected_row) <= 2


def test_spectrogram_of_a_very_short_clip(tmp_path):
    write_spectrogram_png(tmp_path / "short.png", torch.zeros(10), 16000)
    assert Image.open(tmp_path / "short.png").size[1] == 257 + SPECTROGRAM_MARGINS[1] + SPECTROGRAM_MARGINS[3]
