"""The CLI end to end on the example plugin's bigram model: real commands, exit codes, stdout,
stderr and the files written."""

import math
import os
import subprocess
import sys

import pytest
import torch
from clihelpers import one_line_error, run

from arcli import __version__
from arcli.decoding import Known, generate
from arcli.registry import get_family

COMMANDS = ["train", "sample", "complete-image", "beam-translate", "score-likelihood", "models"]
TEXT = [
    "in the beginning was the word",
    "the word was with god",
    "and the word was god",
    "the same was in the beginning with god",
] * 10


def test_help_lists_every_subcommand():
    result = run("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command):
    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"arcli {__version__}"


def test_models_lists_the_registry():
    result = run("models")
    assert result.exit_code == 0, result.output
    assert "wavenet" in result.stdout
    assert "audio" in result.stdout


def test_unknown_model_is_one_line():
    one_line_error(run("sample", "nosuchmodel"), "unknown model 'nosuchmodel'", "wavenet")
    one_line_error(run("models", "info", "nosuchmodel"), "unknown model")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--top-p", "1.5"], "top-p must be in (0, 1]"),
        (["--beam-size", "0", "--strategy", "beam"], "beam size must be"),
        (["--temperature", "-1"], "temperature must be a positive number"),
        (["--top-k", "0"], "top-k must be"),
        (["--strategy", "greedy", "--nbest", "3"], "greedy search gives one output"),
        (["-n", "0"], "--count must be >= 1"),
        (["--no-repeat-ngram", "0"], "--no-repeat-ngram must be a whole number >= 1"),
        (["--no-repeat-ngram", "-3"], "--no-repeat-ngram must be a whole number >= 1"),
        (["--repetition-penalty", "0"], "--repetition-penalty must be a number > 0"),
        (["--repetition-penalty", "-2"], "--repetition-penalty must be a number > 0"),
        (["--no-repeat-ngram", "3"], "--no-repeat-ngram does not apply to the audio model 'wavenet'"),
        (["--nbest", "2", "--prompt", "x"], "--prompt, --nbest do not apply to the audio model 'wavenet'"),
    ],
)
def test_bad_decoding_options_are_one_line(option, message):
    one_line_error(run("sample", "wavenet", *option), message)


def test_usage_error_exits_2():
    result = run("sample", "wavenet", "--strategy", "teleport")
    assert result.exit_code == 2


def test_missing_and_corrupt_checkpoints(tmp_path):
    one_line_error(run("sample", "wavenet", "-c", tmp_path / "nope.safetensors"), "does not exist")
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, I am not a checkpoint")
    one_line_error(run("sample", "wavenet", "-c", text), "not a safetensors file")
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickled)
    one_line_error(run("sample", "wavenet", "-c", pickled), "not a safetensors file")


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXT) + "\n")
    return path


@pytest.fixture
def bigram_checkpoint(bigram_plugin, tmp_path, corpus):
    out = tmp_path / "bigram.safetensors"
    result = run("train", "bigram", "--data", corpus, "-o", out, "--steps", "60", "--lr", "0.1",
                 "--warmup-steps", "0", "--eval-every", "30", "--save-every", "30", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert out.exists()
    return out


def test_plugin_registers_through_its_entry_point(bigram_plugin):
    result = run("models")
    assert result.exit_code == 0, result.output
    assert "bigram" in result.stdout
    assert get_family("bigram").modality == "text"


def test_train_sample_score_a_plugin_model(bigram_checkpoint, tmp_path, corpus):
    out = tmp_path / "samples.txt"
    result = run("sample", "bigram", "-c", bigram_checkpoint, "-n", "3", "--prompt", "the ", "--seed", "1", "-o", out, "--quiet")
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all(line.startswith("the ") for line in lines)
    again = run("sample", "bigram", "-c", bigram_checkpoint, "-n", "3", "--prompt", "the ", "--seed", "1", "--quiet")
    assert again.stdout.splitlines() == lines  # same seed, same text; stdout by default

    result = run("score-likelihood", "bigram", "-c", bigram_checkpoint, corpus)
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == len(TEXT)
    assert rows[0][0].endswith("corpus.txt:1") and int(rows[0][2]) == len(TEXT[0]) + 1
    assert "nats/token" in result.stderr
    # trained: far better than the uniform model's ln 257 nats per token
    assert float(rows[0][1]) / int(rows[0][2]) < 0.5 * math.log(257)


def test_score_equals_the_engines_logprob(bigram_checkpoint):
    family = get_family("bigram")
    model, _ = family.load(bigram_checkpoint, torch.device("cpu"))
    line = TEXT[1]
    target = list(line.encode()) + [256]
    values = torch.tensor([target])
    [[hyp]] = generate(model, "greedy", max_length=len(target), known=Known(values, torch.ones_like(values, dtype=torch.bool)))
    result = run("score-likelihood", "bigram", "-c", bigram_checkpoint, "-", input=line + "\n")
    nats = float(result.stdout.split("\t")[1])
    assert hyp.tokens == target
    assert -hyp.logprob == pytest.approx(nats, abs=1e-3)


def test_outputs_are_never_overwritten_by_surprise(bigram_checkpoint, tmp_path):
    out = tmp_path / "mine.txt"
    out.write_text("precious\n")
    one_line_error(run("sample", "bigram", "-c", bigram_checkpoint, "-o", out, "--quiet"), "already exists", "--force")
    assert out.read_text() == "precious\n"
    result = run("sample", "bigram", "-c", bigram_checkpoint, "-o", out, "--quiet", "--force")
    assert result.exit_code == 0
    assert out.read_text() != "precious\n"


def test_commands_a_model_does_not_serve(bigram_checkpoint, tmp_path):
    one_line_error(run("beam-translate", "bigram", "-c", bigram_checkpoint, input="hello\n"), "cannot translate")
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    one_line_error(run("complete-image", "bigram", image, "-c", bigram_checkpoint), "cannot complete images")
    one_line_error(run("sample", "bigram", "-c", bigram_checkpoint, "--seconds", "2"), "--seconds does not apply")


def test_checkpoint_of_another_family(bigram_checkpoint):
    one_line_error(run("sample", "wavenet", "-c", bigram_checkpoint), "'bigram'", "wavenet")


def test_a_real_subprocess(bigram_plugin, tmp_path, corpus):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([bigram_plugin, os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "sub.safetensors"
    train = subprocess.run(
        [sys.executable, "-m", "arcli", "train", "bigram", "--data", str(corpus), "-o", str(out), "--steps", "20",
         "--eval-every", "10", "--save-every", "10", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert train.returncode == 0, train.stderr
    assert train.stdout == ""  # progress and logs go to stderr
    sample = subprocess.run(
        [sys.executable, "-m", "arcli", "sample", "bigram", "-c", str(out), "-n", "2", "--seed", "0", "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert sample.returncode == 0, sample.stderr
    assert len(sample.stdout.splitlines()) == 2
    bad = subprocess.run(
        [sys.executable, "-m", "arcli", "sample", "bigram", "-c", str(out), "--top-p", "2"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == ["arcli: error: top-p must be in (0, 1], got 2.0"]


def test_a_setting_the_config_rejects_is_one_line(tmp_path):
    one_line_error(run("train", "wavenet", "--data", tmp_path, "-o", tmp_path / "m.safetensors", "--set", "stacks=-1"), "stacks")
    one_line_error(run("train", "wavenet", "--data", tmp_path, "-o", tmp_path / "m.safetensors", "--set", "stacks=two"), "stacks")
    one_line_error(run("train", "wavenet", "--data", tmp_path, "-o", tmp_path / "m.safetensors", "--set", "nosuch=1"), "no setting")
