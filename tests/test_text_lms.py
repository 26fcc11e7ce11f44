"""The TCN and recurrent language models: the model contract (step == forward, reorder, causality),
hand-computed convolutions and weight norm, the TCN's receptive field, and a step whose cost does
not grow with position (counted in floating-point operations, not timed)."""

import math

import pytest
import torch
from contract import assert_reorder_continues, run_steps
from torch.utils.flop_counter import FlopCounterMode

from arcli.models.rnn_lm import RNNLM, RNNLMConfig
from arcli.models.tcn import TCN, CausalConv, TCNConfig

V = 12


def tcn(**changes):
    torch.manual_seed(0)
    settings = {"vocab_size": V, "eos_id": 1, "channels": 6, "levels": 3, "kernel_size": 3, "dropout": 0.0, **changes}
    model = TCN(TCNConfig(**settings)).eval()
    with torch.no_grad():  # the paper's N(0, 0.01) init leaves tiny activations: widen them so that the test sees something
        for block in model.blocks:
            for conv in (block.conv1, block.conv2):
                conv.weight_v.normal_(0, 0.5)
                conv.bias.normal_(0, 0.2)
                if conv.weight_g is not None:
                    conv.weight_g.uniform_(0.5, 2.0)
    return model


def rnn(cell, **changes):
    torch.manual_seed(0)
    return RNNLM(RNNLMConfig(vocab_size=V, eos_id=1, cell=cell, embed_dim=5, hidden=7, layers=2, dropout=0.0, **changes)).eval()


MODELS = {
    "tcn-weight-norm": lambda: tcn(norm="weight"),
    "tcn-layer-norm": lambda: tcn(norm="layer"),
    "tcn-no-norm-kernel-2": lambda: tcn(norm="none", kernel_size=2, levels=4),
    "rnn": lambda: rnn("rnn"),
    "gru": lambda: rnn("gru"),
    "lstm": lambda: rnn("lstm"),
}


@pytest.mark.parametrize("name", MODELS)
def test_step_equals_forward_and_reorder_continues(name):
    model = MODELS[name]()
    tokens = torch.randint(V, (3, 40), generator=torch.Generator().manual_seed(1))  # past the TCN's receptive field
    with torch.no_grad():
        parallel = model(tokens)
        stepped, _ = run_steps(model, model.start(3), tokens)
        torch.testing.assert_close(stepped, parallel, rtol=0, atol=1e-4)
        _, state = run_steps(model, model.start(3), tokens[:, :25])
        assert_reorder_continues(model, state, tokens[:, :25], tokens[:, 25:], parallel[:, 25:], torch.tensor([2, 0, 0, 1]))


@pytest.mark.parametrize("name", MODELS)
def test_causal(name):
    model = MODELS[name]()
    tokens = torch.randint(V, (1, 20), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[0, 9] = (changed[0, 9] + 1) % V
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=0)  # position t scores token t from tokens before it
    assert (a[:, 10] - b[:, 10]).abs().max() > 1e-4


def test_tcn_receptive_field_is_exact():
    # kernel 2, dilations 1 and 2, two convs each: 1 + 2 * (1 + 2) = 7 tokens
    model = tcn(kernel_size=2, levels=2, norm="none")
    assert model.receptive_field == 7
    tokens = torch.randint(2, V, (1, 30), generator=torch.Generator().manual_seed(3))
    changed = tokens.clone()
    changed[0, 10] = 0
    with torch.no_grad():
        moved = (model(tokens) - model(changed)).abs().amax(-1)[0]  # (T,)
    assert (moved[11:18] > 1e-6).all()  # positions 11 .. 10 + 7 see token 10
    assert (moved[18:] == 0).all() and (moved[:11] == 0).all()


def test_causal_conv_by_hand():
    conv = CausalConv(1, kernel=2, dilation=2, weight_norm=False)
    with torch.no_grad():
        conv.weight_v.copy_(torch.tensor([[[3.0, 10.0]]]))  # 3 x_{t-2} + 10 x_t
        conv.bias.fill_(0.5)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1)
    expected = torch.tensor([10.5, 20.5, 30 + 3 + 0.5, 40 + 6 + 0.5]).view(1, 4, 1)
    torch.testing.assert_close(conv(x), expected)


def test_weight_norm_by_hand():
    conv = CausalConv(2, kernel=2, dilation=1, weight_norm=True)
    torch.testing.assert_close(conv.weight(), conv.weight_v)  # g starts at ||v||: the same kernel
    with torch.no_grad():
        conv.weight_v.copy_(torch.tensor([[[3.0, 0.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]]))  # row norms 5 and 2
        conv.weight_g.copy_(torch.tensor([[[10.0]], [[1.0]]]))
    expected = torch.tensor([[[6.0, 0.0], [0.0, 8.0]], [[0.5, 0.5], [0.5, 0.5]]])
    torch.testing.assert_close(conv.weight(), expected)


def _step_flops(model, position):
    state = model.start(2)
    logits, state = model.step(state, None)
    for _ in range(position - 1):
        logits, state = model.step(state, logits.argmax(-1))
    counter = FlopCounterMode(display=False)
    with counter:
        model.step(state, logits.argmax(-1))
    return counter.get_total_flops(), sum(q.numel() for q in state.queues)


def test_tcn_step_cost_does_not_grow_with_position():
    model = tcn(levels=4)  # receptive field 61
    early, late = _step_flops(model, 3), _step_flops(model, 300)
    assert early == late and early[0] > 0
    # what one step multiplies: per conv, k taps of (2 x C) @ (C x C), then the output layer
    C, k, convs = 6, 3, 8
    assert early[0] == 2 * (convs * k * 2 * C * C + 2 * C * V)
    assert early[1] == 2 * C * sum(2 * (k - 1) * 2**i for i in range(4))  # the queues: (k-1) d inputs per conv


def test_start_token_and_config_checks():
    model = rnn("lstm")
    with pytest.raises(ValueError, match="first step"):
        state = model.start(1)
        _, state = model.step(state, None)
        model.step(state, None)
    with pytest.raises(ValueError, match="cell"):
        RNNLMConfig(cell="transformer")
    with pytest.raises(ValueError, match="norm"):
        TCNConfig(norm="batch")
    with pytest.raises(ValueError, match="kernel_size"):
        TCNConfig(kernel_size=1)
    with pytest.raises(ValueError, match="condition"):
        tcn()(torch.zeros(1, 3, dtype=torch.long), condition=torch.tensor([1]))


def test_untrained_lm_is_near_uniform():
    """A sanity figure, by hand: with zero output weights every model gives ln V nats per token."""
    for model in (tcn(), rnn("gru")):
        with torch.no_grad():
            model.out.weight.zero_()
            model.out.bias.zero_()
        tokens = torch.randint(V, (2, 9))
        logp = torch.log_softmax(model(tokens), -1).gather(-1, tokens.unsqueeze(-1))
        torch.testing.assert_close(-logp, torch.full_like(logp, math.log(V)))
