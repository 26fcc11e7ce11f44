"""The fused WaveNet step (arcli/models/wavenet_fused.c): the same logits as `forward`, the same
samples as the engine for the same seed, and the reference path when no compiler is found."""

import numpy as np
import pytest
import torch

from arcli.decoding import Greedy, Sample, generate
from arcli.decoding.processors import Temperature
from arcli.models import wavenet_fused
from arcli.models.wavenet import LocalCondition, WaveNet, WaveNetConfig

pytestmark = pytest.mark.skipif(wavenet_fused.library() is None, reason="no C compiler for the fused step")


def model(half: bool = False, std: float = 0.3, **extra) -> WaveNet:
    """A small WaveNet with random weights N(0, std); half: rounded to float16 values (as the
    shipped checkpoints' are), which the fused step then stores as float16."""
    torch.manual_seed(0)
    sizes = dict(residual_channels=8, dilation_channels=6, skip_channels=10, end_channels=12, layers_per_stack=4, stacks=2)
    config = WaveNetConfig(**(sizes | extra))
    net = WaveNet(config).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, std)  # far from the initialisation, so that every path matters
            if half:
                parameter.copy_(parameter.half().float())
    return net


@pytest.mark.parametrize("half", [False, True], ids=["float32", "float16"])
@pytest.mark.parametrize("conditioned", [False, True])
def test_fused_logits_equal_forward(conditioned, half):
    net = model(half, num_speakers=3, cond_channels=5, cond_hidden=7, cond_hop=4) if conditioned else model(half)
    weights = wavenet_fused.FusedWeights(net)
    assert weights.half == (half and bool(wavenet_fused.library().wavenet_half()))  # float16 storage only where exact
    frames = torch.randn(20, 5) if conditioned else None
    tokens = torch.randint(0, 256, (70,), generator=torch.Generator().manual_seed(1))
    condition = LocalCondition(frames[None], None, torch.tensor([2])) if conditioned else None
    with torch.inference_mode():
        expected = net(tokens[None], condition)[0]
    row = wavenet_fused.FusedRow(net, 2 if conditioned else None, frames, weights=weights)
    logits = []
    for t in range(len(tokens)):  # teacher forcing: each step is fed the true previous sample
        _, out = row.run(1, greedy=True, logits=True)
        logits.append(out[0])
        row.previous[0] = tokens[t]
    torch.testing.assert_close(torch.from_numpy(np.stack(logits)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("half", [False, True], ids=["float32", "float16"])
def test_fused_logits_equal_forward_wide(half):
    """Widths over 128 outputs (two column blocks at a time in the AVX-512 kernel, then one) and not
    multiples of the block (padding). Smaller weights than model()'s, for logits of a few units like
    the narrower models' (at N(0, 0.3) they reach 60, where the reference step itself is 4e-5 from
    forward)."""
    net = model(half, 0.15, residual_channels=20, dilation_channels=70, skip_channels=130, end_channels=200, layers_per_stack=3, stacks=1)
    tokens = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = net(tokens[None])[0]
    row = wavenet_fused.FusedRow(net)
    assert row.w.half == (half and bool(wavenet_fused.library().wavenet_half()))
    logits = []
    for t in range(len(tokens)):
        _, out = row.run(1, greedy=True, logits=True)
        logits.append(out[0])
        row.previous[0] = tokens[t]
    torch.testing.assert_close(torch.from_numpy(np.stack(logits)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("half", [False, True], ids=["float32", "float16"])
@pytest.mark.parametrize("strategy", [Sample(seed=5), Sample([Temperature(0.7)], seed=9), Greedy()], ids=["T1", "T0.7", "greedy"])
def test_fused_samples_equal_the_engine(strategy, half):
    net = model(half, num_speakers=2, cond_channels=3, cond_hidden=4, cond_hop=5)
    frames = torch.randn(2, 90, 3)
    condition = LocalCondition(frames, None, torch.tensor([1, 0]))
    engine = generate(net, strategy, max_length=400, batch_size=2, condition=condition)
    plan = wavenet_fused.plan(net, strategy, 2, torch.device("cpu"))
    assert plan is not None
    fused = wavenet_fused.generate(net, strategy, [400, 250], [1, 0], list(frames), *plan)
    assert np.array_equal(fused[0], engine[0][0].tokens)
    assert np.array_equal(fused[1], engine[1][0].tokens[:250])  # a shorter row is the same prefix


def test_reference_path_without_a_compiler(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(wavenet_fused, "_library", None)
    monkeypatch.setattr(wavenet_fused, "_failure", None)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("ARCLI_CACHE", str(tmp_path))
    assert wavenet_fused.plan(model(), Sample(seed=1), 1, torch.device("cpu")) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without the fused WaveNet step" in err[0]


def test_not_used_where_it_cannot_match():
    net = model()
    cpu = torch.device("cpu")
    assert wavenet_fused.plan(net, Sample(nbest=2, seed=1), 1, cpu) is None
    assert wavenet_fused.plan(net, Sample(seed=1), wavenet_fused.FUSED_MAX_ROWS + 1, cpu) is None
    from arcli.decoding.processors import TopK
    assert wavenet_fused.plan(net, Sample([TopK(5)], seed=1), 1, cpu) is None


def test_weights_laid_out_once_and_again_after_a_change():
    net = model()
    first = wavenet_fused.weights_of(net)
    assert wavenet_fused.weights_of(net) is first
    with torch.no_grad():
        net.blocks[0].conv.weight[0, 0, 0] += 1.0  # in place, as an optimizer step or load_state_dict
    again = wavenet_fused.weights_of(net)
    assert again is not first and not np.array_equal(again.conv, first.conv)


@pytest.mark.parametrize("half", [False, True], ids=["float32", "float16"])
def test_rows_run_together_as_each_alone(half):
    """Up to wavenet_group() rows share each weight load (the AVX-512 kernel takes 6): each row's
    samples and logits are those it gets alone -- the same products, summed in the same order."""
    net = model(half, 0.15, residual_channels=20, dilation_channels=70, skip_channels=130, end_channels=200, layers_per_stack=3,
                stacks=1, num_speakers=3, cond_channels=5, cond_hidden=7, cond_hop=4)
    weights = wavenet_fused.weights_of(net)
    frames = [torch.randn(30, 5, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    draws = [np.random.default_rng(i).random(100).astype(np.float32) for i in range(8)]
    together = [wavenet_fused.FusedRow(net, i % 3, frames[i], weights=weights) for i in range(8)]
    results = wavenet_fused.run_rows(together, 60, [d[:60] for d in draws], logits=True)
    results = [(np.concatenate([a, b]), np.concatenate([x, y])) for (a, x), (b, y)
               in zip(results, wavenet_fused.run_rows(together, 40, [d[60:] for d in draws], logits=True), strict=True)]
    for i in range(8):  # with AVX-512 a group of 6 and one of 2
        alone = wavenet_fused.FusedRow(net, i % 3, frames[i], weights=weights)
        tokens, logits = alone.run(100, draws[i], logits=True)
        assert np.array_equal(results[i][0], tokens)
        assert np.array_equal(results[i][1], logits)
