import math

import pytest
import torch
from contract import assert_reorder_continues, run_steps
from torch.utils.flop_counter import FlopCounterMode

from arcli.models.wavenet import WaveNet, WaveNetConfig, smooth_code_embedding

V = 16  # tiny vocabulary


def tiny(layers_per_stack=3, stacks=2, num_speakers=0, dtype=torch.float32, device="cpu", seed=0) -> WaveNet:
    """A tiny WaveNet with weights large enough that every dependency shows in the logits."""
    config = WaveNetConfig(
        quantization_channels=V, residual_channels=8, dilation_channels=6, skip_channels=10, end_channels=12,
        layers_per_stack=layers_per_stack, stacks=stacks, num_speakers=num_speakers,
    )
    torch.manual_seed(seed)
    model = WaveNet(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.to(device=device, dtype=dtype)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "layers_per_stack, stacks, num_speakers",
    [(3, 3, 0), (4, 2, 3), (1, 1, 0), (1, 2, 3)],
)
def test_step_matches_forward(layers_per_stack, stacks, num_speakers, device):
    model = tiny(layers_per_stack, stacks, num_speakers, device=device)
    B = 3
    T = 2 * model.receptive_field + 5  # every ring buffer wraps around several times
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1)).to(device)
    speakers = torch.tensor([0, 2, 1], device=device) if num_speakers else None
    expected = model(tokens, speakers)  # (B, T, V)
    got, state = run_steps(model, model.start(B, speakers), tokens)
    assert got.shape == (B, T, V) and state.position == T
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert expected.abs().max() > 1  # the comparison is not between near-zero logits


def test_step_matches_forward_float64():
    model = tiny(dtype=torch.float64)
    tokens = torch.randint(0, V, (2, 40), generator=torch.Generator().manual_seed(2))
    got, _ = run_steps(model, model.start(2), tokens)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, model(tokens), rtol=0, atol=1e-10)


def test_first_logits_do_not_depend_on_the_tokens():
    """Shift convention: position 0 sees only the zero "nothing" input."""
    model = tiny()
    a, b = torch.zeros(1, 6, dtype=torch.long), torch.full((1, 6), V - 1)
    assert torch.equal(model(a)[:, 0], model(b)[:, 0])
    first, _ = model.step(model.start(1), None)
    torch.testing.assert_close(first, model(a)[:, 0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("t", [0, 5, 17])
def test_causality(t):
    model = tiny(dtype=torch.float64)
    tokens = torch.randint(0, V, (1, 30), generator=torch.Generator().manual_seed(3))
    changed = tokens.clone()
    changed[0, t] = (tokens[0, t] + 1) % V
    before, after = model(tokens), model(changed)
    assert torch.equal(before[:, : t + 1], after[:, : t + 1])  # x_t cannot inform its own logits
    assert not torch.allclose(before[:, t + 1], after[:, t + 1])  # ... but informs the next ones


@pytest.mark.parametrize("layers_per_stack, stacks", [(3, 2), (4, 1)])
def test_receptive_field_boundary(layers_per_stack, stacks):
    model = tiny(layers_per_stack, stacks, dtype=torch.float64)
    rf = model.receptive_field
    assert rf == stacks * (2**layers_per_stack - 1) + 1
    T = rf + 10
    t = T - 1  # a position with a full receptive field before it
    tokens = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(4))
    reference = model(tokens)[0, t]
    for past in range(1, t + 1):
        changed = tokens.clone()
        changed[0, t - past] = (tokens[0, t - past] + 1) % V
        logits = model(changed)[0, t]
        if past <= rf:
            assert not torch.allclose(logits, reference), f"logits at t must depend on x_(t-{past})"
        else:
            assert torch.equal(logits, reference), f"logits at t must not depend on x_(t-{past})"


def test_default_config():
    model = WaveNet(WaveNetConfig())
    assert model.receptive_field == 2047  # 2 stacks of dilations 1..512
    assert model.vocab_size == 256 and model.eos_id is None
    tokens = torch.randint(0, 256, (2, model.receptive_field + 100))  # past every ring's wrap-around
    torch.testing.assert_close(run_steps(model, model.start(2), tokens)[0], model(tokens), rtol=0, atol=1e-4)


def test_the_code_embedding_starts_smooth_in_the_code():
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig())
    for e in (model.embed.weight.detach(), smooth_code_embedding(256, 32)):  # (256, 32)
        assert_smooth(e)


def assert_smooth(e: torch.Tensor) -> None:
    assert e.abs().max() <= math.sqrt(2) + 1e-6
    # |d/du sqrt(2) cos(f u + phi)| <= sqrt(2) * 32 pi, and neighbouring codes are 2/255 apart in u.
    assert (e[1:] - e[:-1]).abs().max() <= math.sqrt(2) * 32 * math.pi * 2 / 255
    cosine = torch.nn.functional.cosine_similarity
    neighbours = cosine(e[1:], e[:-1]).mean()
    assert neighbours > 0.8  # a N(0, 1) init gives about 0 here
    assert neighbours > cosine(e[128:], e[:128]).mean() + 0.5  # codes half the range apart
    assert 0.7 < e.pow(2).mean().sqrt() < 1.3  # about nn.Embedding's scale


def test_a_default_embedding_init_is_not_smooth():  # the test above can fail
    torch.manual_seed(0)
    with pytest.raises(AssertionError):
        assert_smooth(torch.nn.Embedding(256, 32).weight.detach())


def test_reorder_selects_permutes_and_duplicates_rows():
    model = tiny(num_speakers=3)
    speakers = torch.tensor([0, 1, 2])
    prefix = torch.randint(0, V, (3, 20), generator=torch.Generator().manual_seed(5))
    suffix = torch.randint(0, V, (3, 25), generator=torch.Generator().manual_seed(6))
    _, state = run_steps(model, model.start(3, speakers), prefix)
    index = torch.tensor([2, 0, 0, 1, 2])  # permute and duplicate, 3 rows -> 5
    expected = model(torch.cat([prefix, suffix], 1), speakers)[:, prefix.shape[1] :]  # (3, 25, V)
    assert_reorder_continues(model, state, prefix, suffix, expected, index)


def test_duplicated_rows_diverge_independently():
    model = tiny()
    _, state = run_steps(model, model.start(1), torch.randint(0, V, (1, 9)))
    state = model.reorder(state, torch.tensor([0, 0]))
    first, state = model.step(state, torch.tensor([3, 3]))
    torch.testing.assert_close(first[0], first[1], rtol=0, atol=1e-6)  # equal up to BLAS rounding
    second, state = model.step(state, torch.tensor([1, 7]))
    assert not torch.allclose(second[0], second[1])


def test_conditional_model_depends_on_speaker():
    model = tiny(num_speakers=4)
    tokens = torch.randint(0, V, (1, 12)).expand(4, -1)
    logits = model(tokens, torch.arange(4))
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(logits[a], logits[b])
    stepped, _ = model.step(model.start(4, torch.arange(4)), None)
    assert not torch.allclose(stepped[0], stepped[1])
    # One id for every row, as an int or a 0-d tensor.
    torch.testing.assert_close(model(tokens, 2), logits[[2, 2, 2, 2]])
    torch.testing.assert_close(model.step(model.start(4, torch.tensor(2)), None)[0], stepped[[2, 2, 2, 2]])


@pytest.mark.parametrize(
    "num_speakers, condition, message",
    [
        (3, None, "conditioned on a speaker"),
        (3, torch.tensor([0, 3]), r"\[0, 3\)"),
        (3, torch.tensor([-1, 0]), r"\[0, 3\)"),
        (3, torch.tensor([0, 1, 2]), "expected 2 speaker ids"),
        (3, torch.tensor([0.0, 1.0]), "integers"),
        (0, torch.tensor([0, 0]), "unconditional"),
    ],
)
def test_bad_condition_is_a_value_error(num_speakers, condition, message):
    model = tiny(num_speakers=num_speakers)
    with pytest.raises(ValueError, match=message):
        model.start(2, condition)
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(2, 5, dtype=torch.long), condition)


def test_bad_arguments():
    model = tiny()
    with pytest.raises(ValueError, match="shape"):
        model.step(model.start(2), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError):
        model.start(0)
    with pytest.raises(ValueError, match="stacks"):
        WaveNetConfig(stacks=0)


def test_start_uses_the_current_weights():
    model = tiny()
    tokens = torch.randint(0, V, (2, 10))
    run_steps(model, model.start(2), tokens)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.7).add_(0.05)
    torch.testing.assert_close(run_steps(model, model.start(2), tokens)[0], model(tokens), rtol=0, atol=1e-4)


def test_step_cost_does_not_grow_with_position_or_receptive_field():
    """Fast WaveNet: a step's work is fixed (queues, not a recompute of the past)."""

    def step_flops(model, position):
        state = model.start(1)
        _, state = run_steps(model, state, torch.zeros(1, position, dtype=torch.long))
        with FlopCounterMode(display=False) as counter:
            model.step(state, torch.tensor([1]))
        return counter.get_total_flops()

    small, large = tiny(3, 1), tiny(3, 4)
    assert 0 < step_flops(small, 2) == step_flops(small, 50)
    # 4x the layers costs about 4x the work per step, not the receptive field's 4x of positions on
    # top; a forward over the receptive field costs two orders of magnitude more than a step.
    assert step_flops(large, 3) < 8 * step_flops(small, 3)
    with FlopCounterMode(display=False) as counter:
        large(torch.zeros(1, large.receptive_field + 1, dtype=torch.long))
    assert counter.get_total_flops() > 10 * step_flops(large, 3)


def test_forward_trains_and_step_does_not_track_gradients():
    model = tiny()
    tokens = torch.randint(0, V, (2, 10))
    loss = torch.nn.functional.cross_entropy(model(tokens).reshape(-1, V), tokens.reshape(-1))
    loss.backward()
    unused = "blocks.5.residual.weight"  # the last block's residual output goes nowhere
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for name, p in model.named_parameters() if name != unused)
    logits, _ = model.step(model.start(2), None)
    assert not logits.requires_grad


def test_forward_under_mixed_precision_keeps_float32_sums_and_trains():
    """Under autocast the blocks' products run in bfloat16 while the residual and skip sums stay
    float32 (ResidualBlock's mixed-precision branch; CUDA's autocast takes the same path): the
    logits stay close to full precision and every parameter gets a finite gradient."""
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(residual_channels=8, dilation_channels=8, skip_channels=16, end_channels=16,
                                  layers_per_stack=4, stacks=2, num_speakers=3))
    tokens, speakers = torch.randint(0, 256, (2, 50)), torch.tensor([0, 2])
    full = model(tokens, speakers)
    full.logsumexp(-1).mean().backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}  # not the last block's unused residual
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(tokens, speakers)
    assert mixed.dtype == torch.bfloat16
    assert (mixed.float() - full).abs().max() < 0.05 * full.abs().max()
    mixed.float().logsumexp(-1).mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == reference.keys() and len(grads) >= 40
    assert all(torch.isfinite(grads[name]).all() for name in grads)
