import math

import pytest
import torch
from fakes import TableModel, all_sequences, dict_table, random_table

from arcli.decoding import Known, Temperature, TopK, TopP, generate, make_strategy
from arcli.errors import ArcliError, OptionError

EOS, A, B = 0, 1, 2

# Greedy is not optimal here: greedy takes A (0.6) and then A (0.55): p = 0.33;
# the best sequence is B A (0.4 * 0.9 = 0.36). Every two-token prefix ends with EOS.
TRAP = dict_table(
    {(): [0.0, 0.6, 0.4], (A,): [0.0, 0.55, 0.45], (B,): [0.0, 0.9, 0.1]},
    default=[1.0, 0.0, 0.0],
)


def trap_model():
    return TableModel(TRAP, vocab_size=3, eos_id=EOS)


def test_greedy_takes_the_locally_best_token():
    [[hyp]] = generate(trap_model(), "greedy", max_length=10)
    assert hyp.tokens == [A, A, EOS]
    assert hyp.logprob == pytest.approx(math.log(0.6) + math.log(0.55), abs=1e-6)
    assert hyp.score == hyp.logprob


def test_beam_search_finds_what_greedy_misses():
    [hyps] = generate(trap_model(), "beam", beam_size=2, nbest=2, length_penalty=0.0, max_length=10)
    assert [h.tokens for h in hyps] == [[B, A, EOS], [A, A, EOS]]
    assert hyps[0].logprob == pytest.approx(math.log(0.36), abs=1e-6)
    assert hyps[1].logprob == pytest.approx(math.log(0.33), abs=1e-6)


def test_length_penalty_formula():
    [hyps] = generate(trap_model(), "beam", beam_size=2, nbest=2, length_penalty=1.0, max_length=10)
    for hyp in hyps:
        assert hyp.score == pytest.approx(hyp.logprob / len(hyp.tokens))
    [hyps] = generate(trap_model(), "beam", beam_size=2, length_penalty=2.0, max_length=10)
    assert hyps[0].score == pytest.approx(math.log(0.36) / 9)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("condition", [0, 1, 2])
def test_exhaustive_beam_equals_brute_force(length_penalty, condition):
    model = TableModel(random_table(3), vocab_size=3, eos_id=EOS)
    max_length = 4
    expected = all_sequences(model, max_length, condition)  # 15 end in EOS, 16 are cut at max length
    assert len(expected) == 31
    strategy = make_strategy("beam", beam_size=32, nbest=31, length_penalty=length_penalty)
    [hyps] = generate(model, strategy, max_length=max_length, condition=[condition])
    assert len(hyps) == 31

    def score(seq, lp):
        return lp / len(seq) ** length_penalty

    best = max(expected, key=lambda e: score(*e))
    assert hyps[0].tokens == best[0]
    assert hyps[0].logprob == pytest.approx(best[1], abs=1e-5)
    by_tokens = {tuple(h.tokens): h for h in hyps}
    for seq, logprob in expected:
        assert by_tokens[tuple(seq)].logprob == pytest.approx(logprob, abs=1e-5)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_beam_of_one_is_greedy():
    model = TableModel(random_table(4), vocab_size=4, eos_id=EOS)
    [[greedy]] = generate(model, "greedy", max_length=6)
    [[beam]] = generate(model, "beam", beam_size=1, max_length=6)
    assert beam.tokens == greedy.tokens
    assert beam.logprob == pytest.approx(greedy.logprob)


def test_sampling_frequencies_match_the_table():
    probs = [0.1, 0.2, 0.0, 0.7]
    model = TableModel(dict_table({}, probs), vocab_size=4, eos_id=None)
    n = 4000
    results = generate(model, "sample", max_length=1, batch_size=n, seed=123)
    counts = torch.bincount(torch.tensor([r[0].tokens[0] for r in results]), minlength=4).double()
    expected = torch.tensor(probs, dtype=torch.float64) * n
    assert counts[2] == 0  # probability 0: never drawn
    nonzero = expected > 0
    chi2 = (((counts - expected) ** 2)[nonzero] / expected[nonzero]).sum()
    assert chi2 < 13.8  # 99.9% point of chi-square with 2 degrees of freedom


def test_temperature_sharpens_sampling_by_the_formula():
    probs = torch.tensor([0.2, 0.8], dtype=torch.float64)
    model = TableModel(dict_table({}, probs.tolist()), vocab_size=2, eos_id=None)
    n = 4000
    results = generate(model, "sample", temperature=0.5, max_length=1, batch_size=n, seed=7)
    freq1 = sum(r[0].tokens[0] for r in results) / n
    sharpened = probs**2 / (probs**2).sum()  # p^(1/T), T = 0.5
    assert abs(freq1 - sharpened[1].item()) < 4 * math.sqrt(0.06 / n)
    # logprob stays the model's own, not the tempered one
    for r in results[:20]:
        assert r[0].logprob == pytest.approx(math.log(probs[r[0].tokens[0]].item()), abs=1e-6)


def test_top_k_one_equals_greedy():
    model = TableModel(random_table(5), vocab_size=5, eos_id=EOS)
    greedy = generate(model, "greedy", max_length=8, batch_size=3, condition=[0, 1, 2])
    sampled = generate(model, "sample", top_k=1, max_length=8, batch_size=3, condition=[0, 1, 2], seed=3)
    assert [g[0].tokens for g in greedy] == [s[0].tokens for s in sampled]
    assert [g[0].logprob for g in greedy] == pytest.approx([s[0].logprob for s in sampled])


def test_top_p_truncation_is_exact():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: torch.isfinite(TopP(p)(logits))[0].tolist()  # noqa: E731
    assert kept(0.45) == [True, False, False, False]
    assert kept(0.75) == [True, True, False, False]
    assert kept(0.85) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isfinite(TopP(0.75)(shuffled))[0].tolist() == [False, True, False, True]


def test_top_p_sampling_never_leaves_the_nucleus():
    model = TableModel(dict_table({}, [0.5, 0.3, 0.15, 0.05]), vocab_size=4, eos_id=None)
    results = generate(model, "sample", top_p=0.75, max_length=1, batch_size=500, seed=1)
    assert {r[0].tokens[0] for r in results} == {0, 1}


def test_processors_are_pure_and_validated():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    before = logits.clone()
    assert TopK(2)(logits)[0].tolist() == [float("-inf"), 3.0, 2.0, float("-inf")]
    Temperature(0.5)(logits)
    TopP(0.5)(logits)
    assert torch.equal(logits, before)
    for bad in (lambda: TopK(0), lambda: TopP(1.5), lambda: TopP(0), lambda: Temperature(-1), lambda: Temperature(0)):
        with pytest.raises(OptionError):
            bad()
    with pytest.raises(ValueError):
        make_strategy("beam", beam_size=0)
    with pytest.raises(OptionError, match="nbest"):
        make_strategy("beam", beam_size=2, nbest=3)
    with pytest.raises(OptionError, match="unknown strategy"):
        make_strategy("nucleus")
    with pytest.raises(OptionError, match="sample only"):
        make_strategy("beam", top_k=3)


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_known_positions_are_fed_and_counted(strategy):
    model = trap_model()
    values = torch.tensor([[0, B]])
    mask = torch.tensor([[False, True]])
    [[hyp]] = generate(model, strategy, max_length=10, known=Known(values, mask), seed=0, beam_size=2)
    assert hyp.tokens[1] == B
    table = [TRAP(0, tuple(hyp.tokens[:i])) for i in range(len(hyp.tokens))]
    assert hyp.logprob == pytest.approx(sum(math.log(p[t]) for p, t in zip(table, hyp.tokens, strict=True)), abs=1e-6)


def test_known_value_of_probability_zero_gives_minus_infinity_not_nan():
    model = trap_model()
    known = Known(torch.tensor([[EOS]]), torch.tensor([[True]]))  # p(EOS first) = 0
    [[hyp]] = generate(model, "greedy", max_length=5, known=known)
    assert hyp.tokens == [EOS]
    assert hyp.logprob == float("-inf")


def test_probability_zero_tokens_are_never_chosen():
    model = TableModel(random_table(4, zero_token=3), vocab_size=4, eos_id=EOS)
    for strategy in ("greedy", "sample", "beam"):
        results = generate(model, strategy, max_length=6, batch_size=50, condition=list(range(50)), seed=2, beam_size=3)
        for row in results:
            for hyp in row:
                assert 3 not in hyp.tokens
                assert math.isfinite(hyp.logprob)


def test_min_length_holds_back_eos():
    model = TableModel(random_table(3), vocab_size=3, eos_id=EOS)
    for strategy in ("greedy", "sample", "beam"):
        rows = generate(model, strategy, max_length=6, min_length=4, batch_size=20, condition=range(20), seed=4)
        assert all(EOS not in hyp.tokens[:4] for row in rows for hyp in row)


def test_min_length_the_model_cannot_meet_is_an_error():
    model = trap_model()  # after two tokens only EOS has probability
    with pytest.raises(ArcliError, match="no possible output"):
        generate(model, "greedy", max_length=4, min_length=3)
    [[hyp]] = generate(model, "greedy", max_length=4, min_length=2)
    assert hyp.tokens == [A, A, EOS]


def test_max_length_cuts_hypotheses():
    model = TableModel(random_table(3), vocab_size=3, eos_id=None)
    for strategy in ("greedy", "sample", "beam"):
        rows = generate(model, strategy, max_length=5, seed=0, beam_size=3, batch_size=2)
        assert all(len(h.tokens) == 5 for row in rows for h in row)


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_batch_invariance(strategy):
    model = TableModel(random_table(5), vocab_size=5, eos_id=EOS)
    conditions = list(range(8))
    batched = generate(model, strategy, max_length=7, batch_size=8, condition=conditions, seed=11, beam_size=3, nbest=2 if strategy != "greedy" else 1)
    for r, c in enumerate(conditions):
        alone = generate(model, strategy, max_length=7, batch_size=1, condition=[c], seed=11, row_offset=r, beam_size=3, nbest=2 if strategy != "greedy" else 1)
        assert [h.tokens for h in alone[0]] == [h.tokens for h in batched[r]]
        assert [h.logprob for h in alone[0]] == pytest.approx([h.logprob for h in batched[r]])


def test_seed_repeats_and_differs():
    model = TableModel(random_table(5), vocab_size=5, eos_id=None)
    run = lambda seed: [r[0].tokens for r in generate(model, "sample", max_length=20, batch_size=2, seed=seed)]  # noqa: E731
    assert run(5) == run(5)
    assert run(5) != run(6)
    first, second = run(5)
    assert first != second  # rows draw from different streams


def test_sampling_nbest_returns_independent_samples_best_first():
    model = TableModel(random_table(4), vocab_size=4, eos_id=EOS)
    [hyps] = generate(model, "sample", nbest=5, max_length=6, seed=9)
    assert len(hyps) == 5
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_finished_rows_are_dropped_from_the_batch():
    model = TableModel(TRAP, vocab_size=3, eos_id=EOS)
    generate(model, "greedy", max_length=50, batch_size=4)
    assert model.rows_stepped == 4 * 3  # three steps, then every row has ended


def test_progress_reports_steps():
    model = TableModel(random_table(3), vocab_size=3, eos_id=None)
    seen = []
    generate(model, "greedy", max_length=4, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_bad_lengths_are_option_errors():
    with pytest.raises(OptionError):
        generate(trap_model(), "greedy", max_length=0)
    with pytest.raises(OptionError):
        generate(trap_model(), "greedy", max_length=3, min_length=4)


def test_known_values_of_any_integer_dtype():
    model = TableModel(random_table(256), vocab_size=256, eos_id=None)
    values = torch.tensor([[255, 7]], dtype=torch.uint8)  # images arrive as uint8
    [[hyp]] = generate(model, "greedy", max_length=3, known=(values, torch.tensor([[1, 1]])))
    assert hyp.tokens[:2] == [255, 7]
    with pytest.raises(ValueError, match="token ids"):
        generate(model, "greedy", max_length=3, known=(torch.tensor([[256, 7]]), torch.tensor([[True, True]])))


def test_beam_eos_outside_the_best_w_goes_no_further():
    # W = 2. After step 1 the 2W = 4 candidates are (1,EOS) .30, (1,1) .15, (2,EOS) .14, (2,1) .10:
    # (1,EOS) finishes; (2,EOS) is outside the best W, so it neither finishes nor lives on (fairseq,
    # Hugging Face). The live beams are (1,1) and (2,1); at step 2, (2,1,EOS) = .09 is the best
    # candidate and finishes the row. Were (2,EOS) kept alive, (2,EOS,EOS) = .1386 would win.
    table = dict_table({
        (): [0.05, 0.5, 0.4, 0.05],
        (1,): [0.6, 0.3, 0.05, 0.05],
        (2,): [0.35, 0.25, 0.2, 0.2],
        (1, 1): [0.1, 0.5, 0.3, 0.1],
        (2, 0): [0.99, 0.0033, 0.0033, 0.0034],
    }, default=[0.9, 0.05, 0.03, 0.02])
    model = TableModel(table, vocab_size=4, eos_id=0)
    (hyps,) = generate(model, "beam", beam_size=2, nbest=2, length_penalty=0.0, max_length=6)
    assert [h.tokens for h in hyps] == [[1, 0], [2, 1, 0]]
    assert [h.logprob for h in hyps] == pytest.approx([math.log(0.5 * 0.6), math.log(0.4 * 0.25 * 0.9)])


def test_beam_at_the_length_limit_keeps_the_best_of_what_ends_there():
    # W = 2, max length 2. Step 0: [EOS] (.4) finishes, beams 1 (.35) and 2 (.2). Step 1 is the
    # limit: (1,EOS) = .105 ends with EOS and (1,1) = .21 is cut there; one slot is left, and the
    # better of the two, (1,1), takes it.
    table = dict_table({(): [0.4, 0.35, 0.2, 0.05], (1,): [0.3, 0.6, 0.05, 0.05]}, default=[0.1, 0.3, 0.3, 0.3])
    model = TableModel(table, vocab_size=4, eos_id=0)
    (hyps,) = generate(model, "beam", beam_size=2, nbest=2, length_penalty=0.0, max_length=2)
    assert [h.tokens for h in hyps] == [[0], [1, 1]]
    assert hyps[1].logprob == pytest.approx(math.log(0.35 * 0.6))


@pytest.mark.parametrize("strategy,nbest", [("greedy", 1), ("sample", 1), ("sample", 3)])
def test_the_fixed_length_fast_path_gives_what_the_general_loop_gives(strategy, nbest):
    # No EOS, nothing known, one length: generate takes its fast path. An all-False known mask
    # changes nothing but sends the same request through the general loop.
    model = TableModel(random_table(5), vocab_size=5, eos_id=None)
    conditions = [0, 1, 2, 3]
    nothing_known = (torch.zeros(4, 6, dtype=torch.long), torch.zeros(4, 6, dtype=torch.bool))
    fast = generate(model, strategy, max_length=6, batch_size=4, condition=conditions, seed=3, nbest=nbest)
    general = generate(model, strategy, max_length=6, batch_size=4, condition=conditions, seed=3, nbest=nbest, known=nothing_known)
    assert [[h.tokens for h in row] for row in fast] == [[h.tokens for h in row] for row in general]
    assert [h.logprob for row in fast for h in row] == pytest.approx([h.logprob for row in general for h in row])
    assert all(len(row) == nbest and len(h.tokens) == 6 for row in fast for h in row)


@pytest.mark.parametrize("strategy", ["greedy", "sample"])
def test_nan_logits_are_an_error_on_the_fixed_length_path(strategy):
    probs = lambda condition, prefix: [0.5, 0.5, 0.0] if len(prefix) < 3 else [float("nan")] * 3  # noqa: E731
    model = TableModel(probs, vocab_size=3, eos_id=None)
    with pytest.raises(ArcliError, match="NaN"):
        generate(model, strategy, max_length=6, seed=0)
