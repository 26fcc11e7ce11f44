"""The text language models from the command line: train, sample with a prompt (sampling and
beam), score in bits per character and per byte with hand-computed figures, and bad input as one
line."""

import math
import os
import subprocess
import sys

import pytest
import torch
from clihelpers import one_line_error, run

from arcli.checkpoint import save_checkpoint
from arcli.decoding import Known, generate
from arcli.registry import get_family

LINES = ["the big dog ran home", "a small cat sat down", "the big cat ran home", "a small dog sat down"] * 10
TINY = {"tcn": ["--set", "channels=8", "--set", "levels=2"], "lstm-lm": ["--set", "hidden=8", "--set", "embed_dim=4", "--set", "cell=gru"]}


def ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(corpus):
    out = {}
    for name, settings in TINY.items():
        out[name] = corpus.parent / f"{name}.safetensors"
        ok(run("train", name, "--data", corpus, "-o", out[name], "--steps", 15, "--batch-size", 8, "--warmup-steps", 1,
               "--lr", 0.01, "--eval-every", 15, "--save-every", 15, "--device", "cpu", "--quiet", *settings))
    return out


def uniform(path, name="tcn"):
    """A byte model that gives every one of its 257 tokens the same probability."""
    family = get_family(name)
    config = family.config(overrides={"channels": "4", "levels": "1"} if name == "tcn" else {"hidden": "4"})
    model = family.build(config)
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.zero_()
    save_checkpoint(path, name, config, model.state_dict(), tokenizer={"type": "bytes"}, metrics={"valid_nll": math.log(257)})
    return path


@pytest.mark.parametrize("name", TINY)
def test_sample_with_a_prompt_and_beam(trained, name):
    base = ["sample", name, "-c", trained[name], "--device", "cpu", "--quiet", "--prompt", "the big"]
    result = ok(run(*base, "-n", 3, "--top-p", 0.9, "--seed", 1))
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("the big") for line in lines)
    assert ok(run(*base, "-n", 3, "--top-p", 0.9, "--seed", 1)).stdout.splitlines() == lines
    beam = ok(run(*base, "--strategy", "beam", "--beam-size", 3, "--nbest", 2)).stdout.splitlines()
    assert len(beam) == 2 and all(line.startswith("the big") for line in beam)


def test_score_of_a_uniform_model_by_hand(tmp_path):
    checkpoint = uniform(tmp_path / "u.safetensors")
    text = tmp_path / "t.txt"
    text.write_bytes("ab\ncé\n".encode())  # tokens: a b EOS | c 0xC3 0xA9 EOS = 7; characters 3 + 3; bytes 3 + 4
    result = ok(run("score-likelihood", "tcn", "-c", checkpoint, text, "--device", "cpu"))
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == [f"{text}:1", f"{text}:2"]
    assert float(rows[0][1]) == pytest.approx(3 * math.log(257), abs=1e-3) and rows[0][2] == "3"
    assert float(rows[1][4]) == pytest.approx(4 * math.log2(257) / 3, abs=1e-3)  # bits/char of line 2
    assert f"{7 * math.log2(257) / 6:.4f} bits/char" in result.stderr
    assert f"{math.log2(257):.4f} bits/byte" in result.stderr
    assert f"{math.log(257):.4f} nats/token" in result.stderr


def test_a_byte_model_scores_any_bytes(tmp_path):
    checkpoint = uniform(tmp_path / "u.safetensors", "lstm-lm")
    text = tmp_path / "latin1.txt"
    text.write_bytes(b"caf\xe9\n")
    result = ok(run("score-likelihood", "lstm-lm", "-c", checkpoint, text, "--device", "cpu"))
    assert result.stdout.split("\t")[4].strip() == "-"
    assert "bits/char undefined (not UTF-8)" in result.stderr and f"{math.log2(257):.4f} bits/byte" in result.stderr


def test_score_equals_the_engines_logprob(trained):
    model, _ = get_family("tcn").load(trained["tcn"], torch.device("cpu"))
    target = list(b"the big cat") + [256]
    values = torch.tensor([target])
    [[hyp]] = generate(model, "greedy", max_length=len(target), known=Known(values, torch.ones_like(values, dtype=torch.bool)))
    result = ok(run("score-likelihood", "tcn", "-c", trained["tcn"], "-", "--device", "cpu", input="the big cat\n"))
    assert -hyp.logprob == pytest.approx(float(result.stdout.split("\t")[1]), abs=1e-3)


def test_bad_input_is_one_line(trained, corpus, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    one_line_error(run("score-likelihood", "tcn", "-c", trained["tcn"], empty, "--device", "cpu"), "is empty")
    one_line_error(run("score-likelihood", "tcn", "-c", trained["tcn"], tmp_path / "none.txt"), "does not exist")
    one_line_error(run("train", "tcn", "--data", empty, "-o", tmp_path / "m.safetensors", "--steps", 1), "not enough text")
    one_line_error(run("sample", "tcn", "-c", trained["tcn"], "--seconds", 1), "--seconds does not apply")
    one_line_error(run("sample", "wavenet", "--prompt", "And God said", "--device", "cpu"), "--prompt")
    one_line_error(run("train", "tcn", "--data", corpus, "-o", tmp_path / "m.safetensors", "--set", "norm=batch"), "norm")


def test_non_utf8_to_a_bpe_model(corpus, tmp_path):
    out = tmp_path / "bpe.safetensors"
    ok(run("train", "tcn", "--data", corpus, "-o", out, "--steps", 2, "--batch-size", 4, "--device", "cpu", "--quiet",
           "--set", "tokenizer=bpe", "--set", "vocab_size=300", *TINY["tcn"]))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"the dog\nthe \xff cat\n")
    output = tmp_path / "scores.tsv"
    one_line_error(run("score-likelihood", "tcn", "-c", out, bad, "-o", output, "--device", "cpu"), "not UTF-8", "line 2")
    assert not output.exists()
    good = ok(run("score-likelihood", "tcn", "-c", out, corpus, "--device", "cpu"))
    assert len(good.stdout.splitlines()) == len(LINES) and "bits/char" in good.stderr


def test_a_prompt_longer_than_the_context_is_cut_and_said(tmp_path):
    family = get_family("transformer-lm")
    config = family.config(overrides={"tokenizer": "bytes", "vocab_size": "257", "eos_id": "256", "d_model": "8", "heads": "2",
                                      "decoder_layers": "1", "ff_dim": "8"})
    path = save_checkpoint(tmp_path / "t.safetensors", "transformer-lm", config, family.build(config).state_dict(), tokenizer={"type": "bytes"})
    prompt = "é" + "x" * 499  # 501 bytes; with 20 new tokens the 512-token context keeps the last 492
    result = ok(run("sample", "transformer-lm", "-c", path, "--prompt", prompt, "--max-length", 20, "--seed", 0, "--quiet", "--device", "cpu"))
    assert "the prompt is 501 tokens" in result.stderr and "keeping its last 492 tokens" in result.stderr
    assert result.stdout.startswith("x" * 492) and "é" not in result.stdout
    one_line_error(run("sample", "transformer-lm", "-c", path, "--prompt", "x", "--max-length", 600, "--device", "cpu"), "context of 512")


def test_the_shipped_lm_from_a_real_process():
    result = subprocess.run(
        [sys.executable, "-m", "arcli", "sample", "lstm-lm", "--prompt", "And God said", "-n", "3", "--top-p", "0.9",
         "--seed", "0", "--max-length", "40", "--quiet"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("And God said") for line in lines)
