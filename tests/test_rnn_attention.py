import pytest
import torch
from contract import assert_reorder_continues, run_steps

from arcli.decoding import generate
from arcli.models.rnn_attention import RNNAttention, RNNAttentionConfig
from arcli.models.transformer import Source

V = 13  # tiny vocabulary
EOS = 1


def tiny(cell="lstm", encoder_layers=1, dtype=torch.float32, seed=0) -> RNNAttention:
    """A tiny model in eval mode with weights large enough that every dependency shows in the logits."""
    config = RNNAttentionConfig(vocab_size=V, embed_dim=6, hidden=5, encoder_layers=encoder_layers, cell=cell, eos_id=EOS)
    torch.manual_seed(seed)
    model = RNNAttention(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.7)
    return model.to(dtype).eval()


def random_source(lengths, seed=1, width=None) -> Source:
    """Right-padded random source tokens; the padding is pad_id (0)."""
    lengths = torch.tensor(lengths)
    width = width or int(lengths.max())
    tokens = torch.randint(2, V, (len(lengths), width), generator=torch.Generator().manual_seed(seed))
    tokens[torch.arange(width) >= lengths.unsqueeze(1)] = 0
    return Source(tokens, lengths)


def random_targets(batch, length, seed=2) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cell, encoder_layers", [("lstm", 1), ("gru", 1), ("lstm", 2), ("gru", 2)])
def test_step_matches_forward(cell, encoder_layers):
    model = tiny(cell, encoder_layers)
    source, tokens = random_source([4, 7, 1]), random_targets(3, 9)
    expected = model(tokens, source)  # (B, T, V)
    got, state = run_steps(model, model.start(3, source), tokens)
    assert got.shape == (3, 9, V) and state.position == 9
    assert (got - expected).abs().max() < 1e-5
    assert expected.abs().max() > 1  # the comparison is not between near-zero logits


def test_step_matches_forward_float64():
    model = tiny("gru", dtype=torch.float64)
    source, tokens = random_source([5, 2]), random_targets(2, 8)
    got, _ = run_steps(model, model.start(2, source), tokens)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, model(tokens, source), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_source_padding_changes_nothing(cell):
    model = tiny(cell)
    source, tokens = random_source([3, 6, 2]), random_targets(3, 7)
    garbage = torch.randint(2, V, (3, 4), generator=torch.Generator().manual_seed(5))
    padded = Source(torch.cat([source.tokens, garbage], dim=1), source.lengths)
    # Tokens past a row's length are garbage too, not only the extra columns.
    padded.tokens[0, 3:6] = torch.tensor([7, 8, 9])
    torch.testing.assert_close(model(tokens, padded), model(tokens, source), rtol=0, atol=1e-6)


def test_source_tokens_matter():
    """The attention and the bridge do read the source: a different real token changes the logits."""
    model = tiny()
    source, tokens = random_source([4, 4]), random_targets(2, 5)
    changed = Source(source.tokens.clone(), source.lengths)
    changed.tokens[0, 3] = (changed.tokens[0, 3] + 1) % V
    before, after = model(tokens, source), model(tokens, changed)
    assert not torch.allclose(before[0], after[0])
    assert torch.equal(before[1], after[1])


def test_first_logits_do_not_depend_on_the_tokens():
    """Position 0 sees the implicit start eos_id, whatever the targets are."""
    model = tiny()
    source = random_source([3])
    a, b = torch.zeros(1, 5, dtype=torch.long), torch.full((1, 5), V - 1)
    assert torch.equal(model(a, source)[:, 0], model(b, source)[:, 0])
    first, _ = model.step(model.start(1, source), None)
    assert (first - model(a, source)[:, 0]).abs().max() < 1e-5


@pytest.mark.parametrize("k", [0, 3, 7])
def test_causality(k):
    model = tiny(dtype=torch.float64)
    source, tokens = random_source([5, 3]), random_targets(2, 9)
    changed = tokens.clone()
    changed[:, k] = (tokens[:, k] + 1) % V
    before, after = model(tokens, source), model(changed, source)
    assert torch.equal(before[:, : k + 1], after[:, : k + 1])  # token k cannot inform its own logits
    assert not torch.allclose(before[:, k + 1], after[:, k + 1])  # ... but informs the next ones


def test_batch_independence():
    model = tiny()
    source, tokens = random_source([4, 6, 2]), random_targets(3, 6)
    other_source = random_source([6, 5, 1], seed=7)
    mixed = Source(torch.cat([source.tokens[:1], other_source.tokens[1:]]), torch.cat([source.lengths[:1], other_source.lengths[1:]]))
    mixed_tokens = torch.cat([tokens[:1], random_targets(2, 6, seed=8)])
    alone = model(tokens[:1], Source(source.tokens[:1, :4], source.lengths[:1]))
    torch.testing.assert_close(model(tokens, source)[:1], alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(model(mixed_tokens, mixed)[:1], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reorder_matches_fresh_starts(cell):
    model = tiny(cell)
    source, tokens = random_source([3, 5]), random_targets(2, 6)
    state = model.start(2, source)
    _, state = model.step(state, None)
    _, state = model.step(state, tokens[:, 0])
    index = torch.tensor([1, 1, 0])
    logits, reordered = model.step(model.reorder(state, index), tokens[index, 1])
    assert reordered.h.shape[0] == 3
    for i, row in enumerate(index.tolist()):
        fresh, _ = run_steps(model, model.start(1, Source(source.tokens[row : row + 1], source.lengths[row : row + 1])), tokens[row : row + 1, :3])
        torch.testing.assert_close(logits[i], fresh[0, 2], rtol=0, atol=1e-5)


def test_reorder_contract():
    """The shared contract check: reordered rows continue exactly, the old state stays usable."""
    model = tiny()
    source, tokens = random_source([4, 2, 6]), random_targets(3, 8)
    expected = model(tokens, source)
    _, state = run_steps(model, model.start(3, source), tokens[:, :4])  # has consumed tokens[:, :3]
    assert_reorder_continues(model, state, tokens[:, :4], tokens[:, 4:], expected[:, 4:], torch.tensor([2, 0, 0, 1]))


def test_states_are_not_mutated():
    model = tiny()
    source = random_source([3, 4])
    state = model.start(2, source)
    snapshot = [x.clone() for x in state[:-1]]
    model.step(state, torch.tensor([3, 4]))
    model.reorder(state, torch.tensor([1]))
    assert all(torch.equal(a, b) for a, b in zip(snapshot, state[:-1], strict=True)) and state.position == 0


def test_generate_beam_batch_equals_rows_alone():
    model = tiny(seed=2)
    with torch.no_grad():
        model.out_bias[0] -= 3  # the random weights favour pad; make room for varied hypotheses
    source = random_source([4, 7])
    batch = generate(model, "beam", max_length=10, batch_size=2, condition=source, beam_size=3, nbest=2)
    assert len(batch) == 2 and all(len(hyps) == 2 for hyps in batch)
    for row, hyps in enumerate(batch):
        length = int(source.lengths[row])
        alone = generate(
            model, "beam", max_length=10, batch_size=1, beam_size=3, nbest=2,
            condition=Source(source.tokens[row : row + 1, :length], source.lengths[row : row + 1]),
        )[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        for h, a in zip(hyps, alone, strict=True):
            assert h.logprob == pytest.approx(a.logprob, abs=1e-4)
            assert len(h.tokens) <= 10 and all(0 <= t < V for t in h.tokens)
    ends = [h.tokens[-1] == EOS for hyps in batch for h in hyps]
    assert any(ends) and not all(ends)  # both ways of finishing are exercised
    assert batch[0][0].tokens != batch[1][0].tokens


def test_generate_greedy_logprob_matches_forward():
    """Greedy's reported log-probability is the model's own score of the decoded tokens."""
    model = tiny()
    source = random_source([5])
    (hyp,) = generate(model, "greedy", max_length=8, condition=source)[0]
    tokens = torch.tensor([hyp.tokens])
    with torch.no_grad():
            lprobs = torch.log_softmax(model(tokens, source), dim=-1).gather(2, tokens.unsqueeze(-1)).sum()
    assert hyp.logprob == pytest.approx(float(lprobs), abs=1e-4)


def test_training_step_reaches_every_parameter():
    model = tiny().train()
    source, tokens = random_source([4, 3]), random_targets(2, 5)
    logits = model(tokens, source)
    torch.nn.functional.cross_entropy(logits.reshape(-1, V), tokens.reshape(-1), label_smoothing=0.1).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_errors():
    model = tiny()
    source = random_source([3, 2])
    with pytest.raises(ValueError, match="condition"):
        model(random_targets(2, 4))
    with pytest.raises(ValueError, match="condition"):
        model.start(2)
    with pytest.raises(ValueError, match="batch_size"):
        model.start(3, source)
    with pytest.raises(ValueError, match="lengths"):
        model(random_targets(2, 4), Source(source.tokens, torch.tensor([3, 0])))
    with pytest.raises(ValueError, match="lengths"):
        model(random_targets(2, 4), Source(source.tokens, torch.tensor([4, 2])))
    _, state = model.step(model.start(2, source), None)
    with pytest.raises(ValueError, match="first step"):
        model.step(state, None)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"hidden": 0}, "hidden"),
        ({"encoder_layers": 0}, "encoder_layers"),
        ({"cell": "rnn"}, "cell"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"vocab_size": 10, "eos_id": 10}, "eos_id"),
        ({"pad_id": -1}, "pad_id"),
    ],
)
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        RNNAttentionConfig(**changes)


def test_default_config_is_valid():
    config = RNNAttentionConfig(cell="gru", encoder_layers=2)
    assert config.vocab_size == 8000 and config.label_smoothing == 0.1
