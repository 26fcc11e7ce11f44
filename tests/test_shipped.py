"""The shipped checkpoints: present, loadable by their family, and working from the CLI (the
README's first command)."""

import io

import soundfile as sf
from clihelpers import run

from arcli.checkpoint import read_checkpoint
from arcli.registry import family_names, get_family


def test_every_shipped_checkpoint_loads_and_has_a_model_card_metric():
    for name in family_names():
        path = get_family(name).shipped_checkpoint()
        if path is None:
            continue
        stored = read_checkpoint(path, expected_model=name)
        assert stored.metrics.get("valid_nll") is not None, f"{path} lacks its held-out metric"
        assert stored.training.get("command", "").startswith("arcli train"), f"{path} lacks its training command"


def test_the_readme_command_samples_speech_from_the_shipped_wavenet(tmp_path):
    out = tmp_path / "out.wav"
    result = run("sample", "wavenet", "--seconds", "0.05", "-o", out, "--seed", "0", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    audio, rate = sf.read(out)
    assert rate == 16000 and audio.shape == (800,)
    streamed = run("sample", "wavenet", "--seconds", "0.05", "-o", "-", "--seed", "0", "--quiet", "--device", "cpu")
    again, _ = sf.read(io.BytesIO(streamed.stdout_bytes))
    assert (again == audio).all()  # same seed, same samples, to a file or to stdout


def test_the_shipped_translators_translate_english_into_spanish():
    text = "In the beginning, God created the heavens and the earth.\n\nJesus wept.\n"
    for name in ("transformer", "rnn-attention"):
        result = run("beam-translate", name, "--device", "cpu", "--quiet", input=text)
        assert result.exit_code == 0, result.output
        lines = result.stdout.split("\n")
        assert len(lines) == 4 and lines[1] == "" and lines[3] == "", result.stdout
        assert "Dios" in lines[0] and "tierra" in lines[0], lines[0]
        stored = read_checkpoint(get_family(name).shipped_checkpoint(), expected_model=name)
        assert {"test_bleu", "test_chrf", "test_bleu_signature"} <= set(stored.metrics)
