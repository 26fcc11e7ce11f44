"""The Transformer (encoder-decoder and decoder-only) against the model contract: incremental
logits equal parallel ones, the decoder is causal, source padding changes nothing, beam search
gives the same hypotheses at batch size 1 and 64."""

import math

import pytest
import torch
from contract import assert_reorder_continues, run_steps

from arcli.decoding import generate
from arcli.models.transformer import Source, Transformer, TransformerConfig, TransformerLMConfig, sinusoids

V = 40


def tiny(encoder_layers=2, seed=0, **kw):
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=V, d_model=32, heads=4, encoder_layers=encoder_layers, decoder_layers=2, ff_dim=64, **kw)
    model = Transformer(config).eval()
    with torch.no_grad():  # a sharper output layer than at initialisation: EOS and lengths vary
        model.embed.weight.mul_(6.0)
    return model


def source(batch=3, length=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, V, (batch, length), generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length
    tokens[torch.arange(length) >= lengths.unsqueeze(1)] = 0
    return Source(tokens, lengths)


@pytest.mark.parametrize("encoder_layers", [2, 0])
def test_steps_match_forward(encoder_layers):
    model = tiny(encoder_layers)
    src = source() if encoder_layers else None
    tgt = torch.randint(2, V, (3, 9))
    logits, _ = run_steps(model, model.start(3, src), tgt)
    torch.testing.assert_close(logits, model(tgt, src), rtol=1e-5, atol=1e-4)  # logits are ~100 in size


@pytest.mark.parametrize("encoder_layers", [2, 0])
def test_decoder_is_causal(encoder_layers):
    model = tiny(encoder_layers)
    src = source() if encoder_layers else None
    tgt = torch.randint(2, V, (3, 8))
    changed = tgt.clone()
    changed[:, 5] = (changed[:, 5] + 1) % V
    a, b = model(tgt, src), model(changed, src)
    assert torch.equal(a[:, :6], b[:, :6])  # logits at t see tokens < t only
    assert not torch.allclose(a[:, 6], b[:, 6])


def test_source_padding_is_masked():
    model = tiny()
    src, tgt = source(), torch.randint(2, V, (3, 7))
    longer = Source(torch.cat([src.tokens, torch.randint(2, V, (3, 5))], dim=1), src.lengths)
    garbage = src.tokens.clone()
    garbage[torch.arange(src.tokens.shape[1]) >= src.lengths.unsqueeze(1)] = 7
    torch.testing.assert_close(model(tgt, longer), model(tgt, src), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(tgt, Source(garbage, src.lengths)), model(tgt, src), rtol=1e-5, atol=1e-5)
    other = src.tokens.clone()
    other[0, 0] = (other[0, 0] + 1) % V
    assert not torch.allclose(model(tgt, Source(other, src.lengths))[0], model(tgt, src)[0])


def test_rows_do_not_see_each_other():
    model, src, tgt = tiny(), source(), torch.randint(2, V, (3, 7))
    alone = model(tgt[1:2], Source(src.tokens[1:2, : int(src.lengths[1])], src.lengths[1:2]))
    torch.testing.assert_close(model(tgt, src)[1:2], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("encoder_layers", [2, 0])
def test_reorder(encoder_layers):
    model = tiny(encoder_layers)
    src = source() if encoder_layers else None
    tgt = torch.randint(2, V, (3, 8))
    expected = model(tgt, src)[:, 4:]
    _, state = run_steps(model, model.start(3, src), tgt[:, :4])
    assert_reorder_continues(model, state, tgt[:, :4], tgt[:, 4:], expected, torch.tensor([2, 2, 0, 1]))


def test_kv_cache_grows_by_one_per_step():
    model, src = tiny(), source()
    state = model.start(3, src)
    for t in range(1, 4):
        _, state = model.step(state, None if t == 1 else torch.zeros(3, dtype=torch.long))
        assert state["self"][0][0].shape == (3, 4, t, 8)  # (B, heads, positions, d/heads)
    assert state["cross"][0][0].shape == (3, 4, 6, 8)  # source keys: computed once, in start


def test_sinusoids_formula():
    table = sinusoids(5, 6)
    for pos in range(5):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert torch.equal(sinusoids(3, 6, offset=2), table[2:])


def test_beam_same_at_batch_1_and_64():
    model = tiny(seed=3)
    g = torch.Generator().manual_seed(5)
    lengths = torch.randint(1, 9, (64,), generator=g)
    tokens = torch.randint(2, V, (64, 8), generator=g) * (torch.arange(8) < lengths.unsqueeze(1))
    limits = (lengths * 2 + 3).tolist()
    kw = dict(beam_size=4, nbest=2, length_penalty=1.0)
    batched = generate(model, "beam", max_length=max(limits), batch_size=64, condition=Source(tokens, lengths), row_max_lengths=limits, **kw)
    ended = sum(h.tokens[-1] == model.eos_id for row in batched for h in row)
    assert 0 < ended < 128  # both endings occur: EOS and the row's own length limit
    for row in range(64):
        n = int(lengths[row])
        alone = generate(model, "beam", max_length=limits[row], batch_size=1, condition=Source(tokens[row : row + 1, :n], lengths[row : row + 1]), **kw)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[row]]
        for a, b in zip(alone, batched[row], strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert all(len(h.tokens) <= limits[row] for h in batched[row])


def test_engine_logprob_is_the_models():
    model, src = tiny(), source()
    hyps = generate(model, "greedy", max_length=12, batch_size=3, condition=src)
    for row, (hyp,) in enumerate(hyps):
        tokens = torch.tensor([hyp.tokens])
        one = Source(src.tokens[row : row + 1], src.lengths[row : row + 1])
        with torch.no_grad():
            logp = torch.log_softmax(model(tokens, one), -1).gather(2, tokens.unsqueeze(-1)).sum()
            assert hyp.logprob == pytest.approx(float(logp), abs=1e-4)


def test_condition_checks_and_config():
    with pytest.raises(ValueError, match="Source"):
        tiny()(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="no condition"):
        tiny(0)(torch.zeros(1, 2, dtype=torch.long), source(1))
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(d_model=30, heads=4)
    with pytest.raises(ValueError, match="dropout"):
        TransformerConfig(dropout=1.0)
    assert TransformerLMConfig().encoder_layers == 0
