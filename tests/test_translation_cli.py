"""Translation end to end through the real CLI: tiny Transformer and RNN-attention models trained
here on a made-up parallel corpus, then beam-translate and score-likelihood, and every user mistake
as one line and exit code 1."""

import random

import pytest
import torch
from clihelpers import one_line_error, run

from arcli.checkpoint import read_checkpoint
from arcli.registry import get_family
from arcli.tasks.translation import Source, pad, pair_logprobs, source_batch, split_long
from arcli.text.tokenizers import SubwordTokenizer, tokenizer_from_json

WORDS = {"the": "el", "dog": "perro", "cat": "gato", "sees": "ve", "eats": "come", "big": "grande", "small": "pequeño", "and": "y"}
TINY = {"d_model": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ff_dim": 64, "vocab_size": 300, "dropout": 0.0}
TINY_RNN = {"embed_dim": 16, "hidden": 16, "vocab_size": 300, "dropout": 0.0}


def settings(values):
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def corpus(n, seed):
    rng = random.Random(seed)
    english = [" ".join(rng.choice(list(WORDS)) for _ in range(rng.randint(2, 7))) for _ in range(n)]
    return english, [" ".join(WORDS[w] for w in line.split()) for line in english]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parallel")
    for name, n, seed in (("train", 300, 0), ("valid", 20, 1)):
        en, es = corpus(n, seed)
        (folder / f"{name}.en").write_text("\n".join(en) + "\n", encoding="utf-8")
        (folder / f"{name}.es").write_text("\n".join(es) + "\n", encoding="utf-8")
    return folder


def train_args(model, data, out, extra):
    return ["train", model, "--src", data / "train.en", "--tgt", data / "train.es", "--valid-src", data / "valid.en",
            "--valid-tgt", data / "valid.es", "-o", out, "--steps", 120, "--batch-size", 16, "--lr", 1e-2, "--warmup-steps", 10,
            "--eval-every", 120, "--device", "cpu", "--quiet", *extra]


@pytest.fixture(scope="module")
def transformer(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    ok(run(*train_args("transformer", data, out, settings(TINY))))
    return out


def test_training_stores_tokenizer_and_bleu(transformer):
    stored = read_checkpoint(transformer, expected_model="transformer")
    assert stored.tokenizer["type"] == "bpe"
    tokenizer = tokenizer_from_json(stored.tokenizer)
    assert tokenizer.decode(tokenizer.encode("the big dog")) == "the big dog"
    assert stored.config["vocab_size"] == tokenizer.vocab_size <= 300
    assert "valid_bleu" in stored.metrics and "valid_perplexity" in stored.metrics
    assert stored.data["pairs"] == 300 and stored.data["valid_pairs"] == 20


def test_one_line_per_input_line_in_order(transformer, tmp_path):
    lines = ["the dog sees the cat", "", "the small cat eats", "   ", "the big dog and the cat"]
    source = tmp_path / "in.en"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    base = ["beam-translate", "transformer", "--checkpoint", transformer, "--device", "cpu", "--quiet"]
    by_file = ok(run(*base, source, "--batch-size", 2))
    out = by_file.stdout.split("\n")
    assert len(out) == len(lines) + 1 and out[-1] == ""
    assert out[1] == "" and out[3] == ""  # blank lines stay blank
    assert all(out[i] for i in (0, 2, 4))
    assert "translated 3 sentences" in by_file.stderr
    by_stdin = ok(run(*base, "--batch-size", 64, input="\n".join(lines) + "\n"))
    assert by_stdin.stdout == by_file.stdout  # batch size and input route change nothing
    alone = ok(run(*base, input=lines[2] + "\n"))
    assert alone.stdout == out[2] + "\n"


def test_nbest_lines(transformer, tmp_path):
    result = ok(run("beam-translate", "transformer", "--checkpoint", transformer, "--device", "cpu", "--quiet",
                    "--nbest", 3, "--beam-size", 4, input="the dog\n\nthe cat eats\n"))
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(len(r) == 3 for r in rows)
    scores = [float(r[1]) for r in rows[6:]]
    assert scores == sorted(scores, reverse=True)
    assert rows[3][2] == ""


def test_long_line_is_split_not_crashed(transformer, tmp_path):
    long_line = " ".join(["the big dog eats."] * 1250)  # 5,000 words
    result = ok(run("beam-translate", "transformer", "--checkpoint", transformer, "--device", "cpu", "--quiet",
                    "--beam-size", 1, "--batch-size", 64, input=f"the cat\n{long_line}\nthe dog\n"))
    lines = result.stdout.split("\n")
    assert len(lines) == 4 and all(lines[:3])
    assert "line 2 is long: translated in" in result.stderr


def test_split_long_keeps_every_word():
    tokenizer = SubwordTokenizer.train(["the big dog eats. the cat sees."] * 10, 300)
    text = " ".join(["the big dog eats."] * 200) + " " + " ".join(["cat"] * 500)
    pieces = split_long(text, tokenizer, limit=50)
    assert " ".join(pieces).split() == text.split()
    assert all(len(tokenizer.encode(p)) <= 50 for p in pieces)
    assert split_long("the dog", tokenizer, limit=50) == ["the dog"]


def test_sampling_strategies(transformer):
    base = ["beam-translate", "transformer", "--checkpoint", transformer, "--device", "cpu", "--quiet", "--strategy", "sample", "--seed", "3"]
    a = ok(run(*base, "--batch-size", 1, input="the dog\nthe cat\n"))
    b = ok(run(*base, "--batch-size", 8, input="the dog\nthe cat\n"))
    assert a.stdout == b.stdout and len(a.stdout.splitlines()) == 2


def test_score_equals_model_logprob(transformer, data, tmp_path):
    src, tgt = ["the dog sees the cat", "the cat", ""], ["el perro ve el gato", "el gato", ""]
    (tmp_path / "s").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "t").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    result = ok(run("score-likelihood", "transformer", "--checkpoint", transformer, "--device", "cpu", "--src", tmp_path / "s", "--tgt", tmp_path / "t"))
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    model, stored = get_family("transformer").load(transformer, torch.device("cpu"))
    tokenizer = tokenizer_from_json(stored.tokenizer)
    for row, s, t in zip(rows, src, tgt, strict=True):
        ids = tokenizer.encode(t) + [tokenizer.eos_id]
        tokens, lengths = pad([ids])
        with torch.no_grad():
            expected = float(pair_logprobs(model, source_batch([tokenizer.encode(s)], tokenizer.eos_id), tokens, lengths).sum())
        assert float(row[1]) == pytest.approx(expected, abs=1e-3)
        assert int(row[2]) == len(ids)
        assert float(row[3]) == pytest.approx(torch.exp(torch.tensor(-expected / len(ids))).item(), rel=1e-3)
    assert "nats/token" in result.stderr


@pytest.fixture(scope="module")
def rnn(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "rnn.safetensors"
    ok(run(*train_args("rnn-attention", data, out, settings(TINY_RNN))))
    return out


def test_rnn_attention_trains_and_translates(rnn):
    result = ok(run("beam-translate", "rnn-attention", "--checkpoint", rnn, "--device", "cpu", "--quiet", input="the dog\n\nthe cat\n"))
    assert len(result.stdout.split("\n")) == 4


SOURCES = ["the dog sees the cat", "", "the small cat eats the big dog and the cat"]


@pytest.mark.parametrize("family", ["transformer", "rnn-attention"])
@pytest.mark.parametrize("nbest", [1, 2])
def test_token_scores_and_alignment(family, nbest, transformer, rnn):
    checkpoint = transformer if family == "transformer" else rnn
    base = ["beam-translate", family, "--checkpoint", checkpoint, "--device", "cpu", "--quiet", "--nbest", nbest]
    plain = ok(run(*base, input="\n".join(SOURCES) + "\n")).stdout.splitlines()
    result = ok(run(*base, "--print-scores", "tokens", "--alignment", input="\n".join(SOURCES) + "\n"))
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == [i for i in range(len(SOURCES)) for _ in range(nbest)]
    for (index, text, score, token_scores, pairs), line in zip(rows, plain, strict=True):
        assert text == (line if nbest == 1 else line.split("\t")[2])  # the same translations as without the columns
        scores = [float(x) for x in token_scores.split()]
        assert sum(scores) == pytest.approx(float(score), abs=1e-4)
        if not SOURCES[int(index)]:
            assert (text, scores, pairs) == ("", [], "")
            continue
        assert all(x <= 0 for x in scores) and len(scores) >= len(text.split())
        links = [tuple(map(int, pair.split("-"))) for pair in pairs.split()]
        assert links and all(0 <= i < len(SOURCES[int(index)].split()) and 0 <= j < len(text.split()) for i, j in links)
        assert {j for _, j in links} == set(range(len(text.split())))  # every target word is aligned


def test_token_scores_are_the_model_logprob(transformer):
    model, stored = get_family("transformer").load(transformer, torch.device("cpu"))
    tokenizer = tokenizer_from_json(stored.tokenizer)
    result = ok(run("beam-translate", "transformer", "--checkpoint", transformer, "--device", "cpu", "--quiet", "--print-scores", "tokens",
                    input="the dog sees the cat\n"))
    _, text, score, _ = result.stdout.rstrip("\n").split("\t")
    tokens, lengths = pad([tokenizer.encode(text) + [tokenizer.eos_id]])
    with torch.no_grad():
        expected = float(pair_logprobs(model, source_batch([tokenizer.encode("the dog sees the cat")], tokenizer.eos_id), tokens, lengths).sum())
    assert float(score) == pytest.approx(expected, abs=1e-3)


def test_prefix_and_repetition_options(transformer, rnn):
    for family, checkpoint in (("transformer", transformer), ("rnn-attention", rnn)):
        base = ["beam-translate", family, "--checkpoint", checkpoint, "--device", "cpu", "--quiet"]
        out = ok(run(*base, "--prefix", "el gato", input="the dog sees the cat\n\nthe big dog\n")).stdout.split("\n")
        assert out[0].startswith("el gato") and out[1] == "" and out[2].startswith("el gato")
        for strategy in ("beam", "greedy", "sample"):
            lines = ok(run(*base, "--strategy", strategy, "--seed", 1, "--no-repeat-ngram", 1, "--repetition-penalty", 1.5,
                           input="the dog and the cat and the dog and the cat\n")).stdout.splitlines()
            words = lines[0].split()[1:]  # (the first word may be tokenized without its leading space)
            assert len(words) == len(set(words))  # no token twice: no word twice


def test_bad_decoding_input(transformer):
    base = ["beam-translate", "transformer", "--checkpoint", transformer, "--device", "cpu", "--quiet"]
    for option, message in ((["--no-repeat-ngram", "0"], "--no-repeat-ngram must be"), (["--no-repeat-ngram", "-2"], "--no-repeat-ngram must be"),
                            (["--repetition-penalty", "0"], "--repetition-penalty must be"), (["--repetition-penalty", "-1"], "> 0"),
                            (["--prefix", "el perro grande y el gato", "--max-length", "2"], "longer than --max-length 2")):
        one_line_error(run(*base, *option, input="the dog\n"), message)
    one_line_error(run("sample", "pixelcnn", "--no-repeat-ngram", "2"), "--no-repeat-ngram does not apply to the image model")
    assert run(*base, "--print-scores", "words", input="the dog\n").exit_code == 2  # a usage error, Typer's way


def test_alignment_needs_attention(transformer):
    from arcli.errors import OptionError
    from arcli.tasks import Loaded, TranslateRequest
    from arcli.tasks.translation import TRANSLATION

    _, stored = get_family("transformer").load(transformer, torch.device("cpu"))
    no_attention = Loaded(get_family("transformer"), torch.nn.Linear(2, 2), stored, torch.device("cpu"))
    with pytest.raises(OptionError, match="--alignment needs a model with cross-attention"):
        TRANSLATION.translate(no_attention, TranslateRequest(input=None, alignment=True))


def test_transformer_lm_prompt(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(corpus(200, 2)[0]) + "\n", encoding="utf-8")
    out = tmp_path / "lm.safetensors"
    lm = {k: v for k, v in TINY.items() if k != "encoder_layers"}
    ok(run("train", "transformer-lm", "--data", text, "-o", out, "--steps", 20, "--batch-size", 16, "--device", "cpu", "--quiet", *settings(lm)))
    result = ok(run("sample", "transformer-lm", "--checkpoint", out, "--prompt", "the big", "-n", 3, "--seed", 1, "--device", "cpu", "--quiet"))
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("the big") for line in lines)


def test_condition_reaches_the_decoder(transformer):
    model, stored = get_family("transformer").load(transformer, torch.device("cpu"))
    a = model(torch.tensor([[5, 6]]), Source(torch.tensor([[7, 1]]), torch.tensor([2])))
    b = model(torch.tensor([[5, 6]]), Source(torch.tensor([[9, 1]]), torch.tensor([2])))
    assert not torch.allclose(a, b)


def test_bad_input(transformer, data, tmp_path):
    base = ["beam-translate", "transformer", "--checkpoint", transformer, "--device", "cpu", "--quiet"]
    bad = tmp_path / "bad.en"
    bad.write_bytes(b"the dog\nthe \xff cat\n")
    one_line_error(run(*base, bad), "not UTF-8", "line 2")
    one_line_error(run(*base, tmp_path / "missing.en"), "does not exist")
    out = tmp_path / "exists.es"
    out.write_text("keep me")
    one_line_error(run(*base, data / "valid.en", "-o", out), "exists")
    assert out.read_text() == "keep me"
    short = tmp_path / "short.es"
    short.write_text("el perro\n", encoding="utf-8")
    one_line_error(run("score-likelihood", "transformer", "--checkpoint", transformer, "--src", data / "valid.en", "--tgt", short), "20 lines", "1")
    one_line_error(run("train", "transformer", "--src", data / "valid.en", "--tgt", short, "-o", tmp_path / "x.safetensors"), "20 lines")
    one_line_error(run("train", "transformer", "--data", data / "valid.en", "-o", tmp_path / "x.safetensors"), "--src")
    one_line_error(run("score-likelihood", "transformer", "--checkpoint", transformer, data / "valid.en"), "--src")
    one_line_error(run("beam-translate", "wavenet", input="hello\n"), "translate")
    one_line_error(run("beam-translate", "pixelcnn", "--checkpoint", transformer, input="hello\n"), "transformer")


def test_label_smoothed_objective_is_pytorchs():
    from arcli.models.transformer import Transformer, TransformerConfig
    from arcli.tasks.translation import TRANSLATION

    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=30, d_model=16, heads=2, encoder_layers=1, decoder_layers=1, ff_dim=32, dropout=0.0, label_smoothing=0.2))
    src, src_lengths = pad([[3, 4, 1], [5, 1]])
    tgt, tgt_lengths = pad([[6, 7, 8, 1], [9, 1]])
    logits = model(tgt, Source(src, src_lengths))
    targets = tgt.masked_fill(torch.arange(4) >= tgt_lengths.unsqueeze(1), -100).view(-1)
    model.train()
    out = TRANSLATION.loss(model, (src, src_lengths, tgt, tgt_lengths))
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 30), targets, ignore_index=-100, label_smoothing=0.2)
    assert out.objective.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.nll.item() == pytest.approx(torch.nn.functional.cross_entropy(logits.view(-1, 30), targets, ignore_index=-100, reduction="sum").item(), rel=1e-5)
    assert out.count == 6
    model.eval()
    assert TRANSLATION.loss(model, (src, src_lengths, tgt, tgt_lengths)).objective.item() == pytest.approx(out.nll.item() / 6, rel=1e-5)
