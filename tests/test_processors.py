"""History processors (min-length, n-gram blocking, repetition penalty) under every strategy, the one
road from decoding options to the engine, per-token scores, and no global random state touched."""

import math

import pytest
import torch
from fakes import TableModel, dict_table, random_table

from arcli.decoding import (
    DecodingOptions,
    Greedy,
    MinLength,
    NoRepeatNGram,
    RepetitionPenalty,
    Sample,
    generate,
    history_processors,
)
from arcli.errors import OptionError

STRATEGIES = ("greedy", "sample", "beam")


def ngrams(tokens, n):
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def test_no_repeat_ngram_bans_exactly_the_completing_tokens():
    history = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 4, 4]])
    scores = torch.zeros(2, 6)
    before = scores.clone()
    out = NoRepeatNGram(3)(scores, history)
    assert torch.equal(scores, before)  # pure
    assert torch.isinf(out[0]).tolist() == [False, False, False, True, False, False]  # "1 2" was followed by 3
    assert torch.isinf(out[1]).tolist() == [False, False, False, False, True, False]  # "4 4" by 4
    assert torch.equal(NoRepeatNGram(3)(scores, history[:, :2]), scores)  # no whole 3-gram held yet
    assert torch.isinf(NoRepeatNGram(1)(scores, history))[0].tolist() == [False, True, True, True, False, False]


def test_repetition_penalty_follows_the_ctrl_formula():
    scores = torch.tensor([[-1.0, -2.0, 0.5, -4.0]])
    history = torch.tensor([[1, 2, 1]])
    out = RepetitionPenalty(2.0)(scores, history)
    assert out.tolist() == [[-1.0, -4.0, 0.25, -4.0]]
    assert scores.tolist() == [[-1.0, -2.0, 0.5, -4.0]]
    assert torch.equal(RepetitionPenalty(1.0)(scores, history), scores)


def test_min_length_processor_counts_the_history():
    scores = torch.zeros(1, 3)
    assert torch.isinf(MinLength(2, eos_id=0)(scores, torch.zeros(1, 1, dtype=torch.long)))[0].tolist() == [True, False, False]
    assert torch.equal(MinLength(2, eos_id=0)(scores, torch.zeros(1, 2, dtype=torch.long)), scores)


@pytest.mark.parametrize("bad", [lambda: NoRepeatNGram(0), lambda: NoRepeatNGram(-2), lambda: RepetitionPenalty(0),
                                 lambda: RepetitionPenalty(-1.5), lambda: RepetitionPenalty(float("nan")), lambda: MinLength(-1, 0)])
def test_processor_arguments_are_checked_once(bad):
    with pytest.raises(OptionError):
        bad()


def repetitive_model():
    """Prefers token 1 after anything, then 2: left alone it repeats itself forever."""
    return TableModel(dict_table({}, [0.02, 0.5, 0.3, 0.18]), vocab_size=4, eos_id=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_repeat_ngram_holds_for_every_strategy(strategy):
    model = repetitive_model()
    rows = generate(model, strategy, max_length=12, batch_size=3, condition=[0, 1, 2], seed=5, beam_size=3,
                    no_repeat_ngram=3, token_scores=True)
    for row in rows:
        for hyp in row:
            grams = ngrams(hyp.tokens, 3)
            assert len(grams) == len(set(grams)), hyp.tokens
            assert sum(hyp.token_logprobs) == pytest.approx(hyp.logprob, abs=1e-4)
    [[plain]] = generate(model, "greedy", max_length=12)
    assert len(ngrams(plain.tokens, 3)) > len(set(ngrams(plain.tokens, 3)))  # without it: repeats


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_repetition_penalty_changes_the_search_not_the_logprob(strategy):
    model = TableModel(random_table(4), vocab_size=4, eos_id=0)
    [[hyp]] = generate(model, strategy, max_length=8, seed=2, beam_size=3, repetition_penalty=3.0)
    exact = sum(math.log(model.table(0, tuple(hyp.tokens[:i]))[tok]) for i, tok in enumerate(hyp.tokens))
    assert hyp.logprob == pytest.approx(exact, abs=1e-5)
    [[greedy]] = generate(repetitive_model(), "greedy", max_length=6, repetition_penalty=10.0)
    assert greedy.tokens[:2] == [1, 2]  # 1 is held after the first step, so 2 wins


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_token_scores_sum_to_the_logprob(strategy):
    model = TableModel(random_table(5), vocab_size=5, eos_id=0)
    known = (torch.tensor([[0, 3]] * 4), torch.tensor([[False, True]] * 4))
    rows = generate(model, strategy, max_length=9, batch_size=4, condition=range(4), seed=1, beam_size=3,
                    nbest=2 if strategy != "greedy" else 1, known=known, min_length=2, token_scores=True)
    for c, row in enumerate(rows):
        for hyp in row:
            assert len(hyp.token_logprobs) == len(hyp.tokens)
            assert math.fsum(hyp.token_logprobs) == pytest.approx(hyp.logprob, abs=1e-4)
            assert hyp.token_logprobs[1] == pytest.approx(math.log(model.table(c, tuple(hyp.tokens[:1]))[3]), abs=1e-6)
    assert generate(model, strategy, max_length=5, seed=1)[0][0].token_logprobs is None


def test_choosing_a_seed_touches_no_global_random_state():
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    strategy = Sample(seed=None)
    assert isinstance(strategy.seed, int)
    DecodingOptions(strategy="sample").build()
    generate(TableModel(random_table(3), vocab_size=3, eos_id=0), "sample", max_length=4, batch_size=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert Sample(seed=None).seed != Sample(seed=None).seed


def test_options_travel_one_road():
    search = DecodingOptions(strategy="beam", beam_size=3, nbest=2, no_repeat_ngram=2, repetition_penalty=1.2).build("greedy")
    assert search.strategy.width == 3 and search.strategy.nbest == 2
    assert [type(p) for p in search.processors] == [NoRepeatNGram, RepetitionPenalty]
    assert isinstance(DecodingOptions().build("greedy").strategy, Greedy)
    assert DecodingOptions(no_repeat_ngram=3, seed=4).given() == ["--no-repeat-ngram", "--seed"]
    assert history_processors() == []
    with pytest.raises(TypeError, match="beam_size"):  # an option beside a strategy object would be ignored: refused
        generate(repetitive_model(), search.strategy, max_length=4, beam_size=7)
    with pytest.raises(TypeError, match="prefix"):
        generate(repetitive_model(), "greedy", max_length=4, prefix="x")
    with pytest.raises(OptionError, match="no-repeat-ngram"):
        DecodingOptions(no_repeat_ngram=0).build()
    with pytest.raises(OptionError, match="repetition-penalty"):
        DecodingOptions(repetition_penalty=0.0).build()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_finished_hypothesis_finishes_once(strategy):
    # EOS is likely at every step: a sample that ended must not go on drawing and end again (which
    # gave [.., EOS, EOS] duplicates in place of other samples before the engine knew it was dead).
    model = TableModel(dict_table({}, [0.6, 0.2, 0.2]), vocab_size=3, eos_id=0)
    rows = generate(model, strategy, max_length=6, batch_size=8, condition=range(8), seed=3, beam_size=4,
                    nbest=1 if strategy == "greedy" else 4)
    for row in rows:
        for hyp in row:
            assert 0 not in hyp.tokens[:-1], hyp.tokens
