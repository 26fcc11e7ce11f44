import itertools

import pytest
import torch
from contract import assert_reorder_continues, run_steps
from torch.utils.flop_counter import FlopCounterMode

from arcli.decoding import generate
from arcli.models.pixelcnn import PixelCNN, PixelCNNConfig

L = 5  # tiny number of levels per sub-pixel
H, W = 4, 5  # tiny image: 4 rows of 5 pixels


def tiny(gated=True, channels=1, num_classes=0, layers=2, kernel=3, first_kernel=5, dtype=torch.float32, seed=0, **shape) -> PixelCNN:
    """A tiny PixelCNN with weights large enough that every dependency shows in the logits."""
    config = PixelCNNConfig(
        height=shape.get("height", H), width=shape.get("width", W), channels=channels, levels=L, hidden=12,
        layers=layers, kernel=kernel, first_kernel=first_kernel, num_classes=num_classes, gated=gated,
    )
    torch.manual_seed(seed)
    model = PixelCNN(config)
    with torch.no_grad():
        for p in model.parameters():  # about unit-size activations and logits of a few units
            p.normal_(0.0, 1.5 / p[0].numel() ** 0.5 if p.dim() > 1 else 0.5)
    return model.to(dtype=dtype)


def random_tokens(model, batch_size, seed=1):
    return torch.randint(0, L, (batch_size, model.sequence_length), generator=torch.Generator().manual_seed(seed))


VARIANTS = list(itertools.product([True, False], [1, 3], [0, 3]))  # gated, channels, num_classes
VARIANT_IDS = [f"{'gated' if g else 'plain'}-{'rgb' if c == 3 else 'grey'}-{'cond' if n else 'uncond'}" for g, c, n in VARIANTS]


@pytest.mark.parametrize("gated, channels, num_classes", VARIANTS, ids=VARIANT_IDS)
def test_step_matches_forward(gated, channels, num_classes):
    model = tiny(gated, channels, num_classes)
    tokens = random_tokens(model, 3)
    labels = torch.tensor([0, 2, 1]) if num_classes else None
    expected = model(tokens, labels)  # (B, T, L)
    got, state = run_steps(model, model.start(3, labels), tokens)
    assert got.shape == (3, H * W * channels, L) and state.position == H * W * channels
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert expected.abs().max() > 1  # the comparison is not between near-zero logits


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("kernel, first_kernel, layers", [(1, 1, 0), (5, 3, 1), (3, 7, 3)])
def test_step_matches_forward_float64_other_shapes(gated, kernel, first_kernel, layers):
    model = tiny(gated, 3, kernel=kernel, first_kernel=first_kernel, layers=layers, dtype=torch.float64, height=3, width=6)
    tokens = random_tokens(model, 2, seed=2)
    got, _ = run_steps(model, model.start(2), tokens)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, model(tokens), rtol=0, atol=1e-10)


def test_first_logits_do_not_depend_on_the_tokens():
    """Shift convention: position 0 sees only the padding."""
    for gated in (True, False):
        model = tiny(gated, 3)
        a, b = torch.zeros(1, model.sequence_length, dtype=torch.long), torch.full((1, model.sequence_length), L - 1)
        assert torch.equal(model(a)[:, 0], model(b)[:, 0])
        first, _ = model.step(model.start(1), None)
        torch.testing.assert_close(first, model(a)[:, 0], rtol=0, atol=1e-5)


def changed_logits(model, positions, images=4):
    """(P, T): which positions' logits change when token positions[k] alone changes (to each other
    value), in any of a few random images and labels (ReLUs can hide a dependency in one of them)."""
    T, classes = model.sequence_length, model.config.num_classes
    changed = torch.zeros(len(positions), T, dtype=torch.bool)
    rows = torch.arange(len(positions))
    for n, tokens in enumerate(random_tokens(model, images, seed=3)):
        label = n % classes if classes else None
        base = model(tokens[None], label)[0]  # (T, L)
        for shift in range(1, L):
            perturbed = tokens.repeat(len(positions), 1)  # row k perturbs positions[k]
            perturbed[rows, positions] = (perturbed[rows, positions] + shift) % L
            changed |= (model(perturbed, label) != base).any(dim=-1)  # (P, T)
    return changed


@pytest.mark.parametrize("gated, channels, num_classes", VARIANTS, ids=VARIANT_IDS)
def test_causality(gated, channels, num_classes):
    model = tiny(gated, channels, num_classes, dtype=torch.float64)
    T = model.sequence_length
    changed = changed_logits(model, torch.arange(T))  # (T, T)
    # x_t cannot inform its own logits or any before it ...
    assert not changed.tril().any(), f"changing x_t changed logits at positions <= t: {changed.tril().nonzero().tolist()}"
    # ... but informs the next sub-pixel of its pixel (G sees R, B sees R and G) and the pixel to its right.
    for t in range(T - 1):
        pixel, channel = divmod(t, channels)
        if channel < channels - 1:
            assert changed[t, t + 1], f"sub-pixel {channel + 1} of pixel {pixel} must depend on sub-pixel {channel}"
        if pixel % W < W - 1:
            assert changed[t, t + channels], f"pixel {pixel + 1} must depend on pixel {pixel}"


def pixels_reaching(model, target):
    """The earlier pixels (row, column) of a grey image whose value changes the logits of pixel `target`."""
    changed = changed_logits(model, torch.arange(target))  # (target, T)
    return {divmod(p, W) for p in range(target) if changed[p, target]}


def test_gated_pixelcnn_has_no_blind_spot_and_plain_pixelcnn_does():
    """With the same depth (5 layers of 3-wide kernels), every earlier pixel reaches the last pixel and
    pixel (3, 1) of the gated model; the plain model at (3, 1) misses exactly the pixels up-right of
    it that are more than one column right per row up (the blind spot), and sees all others."""
    gated = tiny(True, layers=4, kernel=3, first_kernel=3, dtype=torch.float64)
    plain = tiny(False, layers=4, kernel=3, first_kernel=3, dtype=torch.float64)
    last = H * W - 1
    i, j = 3, 1
    target = i * W + j
    everything_before = {divmod(p, W) for p in range(target)}
    assert pixels_reaching(gated, last) == {divmod(p, W) for p in range(last)}
    assert pixels_reaching(gated, target) == everything_before

    blind = {(a, b) for a, b in everything_before if a < i and b - j > (i - a)}  # kernel radius 1 per row up
    assert blind == {(2, 3), (2, 4), (1, 4)}
    assert pixels_reaching(plain, target) == everything_before - blind
    # Depth does not fix it: the pixel up-right two columns over stays out of reach with more layers.
    deeper = tiny(False, layers=8, kernel=3, first_kernel=3, dtype=torch.float64)
    assert (i - 1, j + 2) not in pixels_reaching(deeper, target)


@pytest.mark.parametrize("gated", [True, False])
def test_reorder_selects_permutes_and_duplicates_rows(gated):
    model = tiny(gated, 3, num_classes=3)
    labels = torch.tensor([0, 1, 2])
    tokens = random_tokens(model, 3, seed=5)
    split = 1 * W * 3 + 4  # mid-row, mid-pixel (row 1, pixel 1, G)
    prefix, suffix = tokens[:, :split], tokens[:, split:]
    _, state = run_steps(model, model.start(3, labels), prefix)
    index = torch.tensor([2, 0, 0, 1, 2])  # permute and duplicate, 3 rows -> 5
    expected = model(tokens, labels)[:, split:]  # (3, T - split, L)
    assert_reorder_continues(model, state, prefix, suffix, expected, index)


def test_duplicated_rows_diverge_independently():
    model = tiny(True, 3)
    _, state = run_steps(model, model.start(1), random_tokens(model, 1)[:, :8])
    state = model.reorder(state, torch.tensor([0, 0]))
    first, state = model.step(state, torch.tensor([3, 3]))
    torch.testing.assert_close(first[0], first[1], rtol=0, atol=1e-6)
    second, state = model.step(state, torch.tensor([1, 4]))
    assert not torch.allclose(second[0], second[1])


@pytest.mark.parametrize("gated", [True, False])
def test_conditional_model_depends_on_label(gated):
    model = tiny(gated, 3, num_classes=4)
    tokens = random_tokens(model, 1).expand(4, -1)
    logits = model(tokens, torch.arange(4))
    for a, b in itertools.combinations(range(4), 2):
        assert not torch.allclose(logits[a], logits[b])
    stepped, _ = run_steps(model, model.start(4, torch.arange(4)), tokens)
    torch.testing.assert_close(stepped, logits, rtol=0, atol=1e-4)
    # One label for every row, as an int or a 0-d tensor.
    torch.testing.assert_close(model(tokens, 2), logits[[2, 2, 2, 2]])
    torch.testing.assert_close(run_steps(model, model.start(4, torch.tensor(2)), tokens)[0], logits[[2, 2, 2, 2]], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "num_classes, condition, message",
    [
        (3, None, "class-conditional: give a class label"),
        (3, torch.tensor([0, 3]), r"class labels must lie in \[0, 3\)"),
        (3, torch.tensor([-1, 0]), r"class labels must lie in \[0, 3\)"),
        (3, 7, r"\[0, 3\), got \[7\]"),
        (3, torch.tensor([0, 1, 2]), "expected 2 class labels"),
        (3, torch.tensor([0.0, 1.0]), "must be integers"),
        (0, torch.tensor([0, 0]), "unconditional: it takes no class label"),
    ],
)
def test_bad_label_is_a_value_error(num_classes, condition, message):
    model = tiny(num_classes=num_classes)
    with pytest.raises(ValueError, match=message):
        model.start(2, condition)
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(2, model.sequence_length, dtype=torch.long), condition)


def test_bad_arguments():
    model = tiny(channels=3)
    T = model.sequence_length
    state = model.start(2)
    with pytest.raises(ValueError, match="None at the first step"):
        model.step(state, torch.tensor([1, 2]))
    model.step(state, None)
    with pytest.raises(ValueError, match="shape"):
        model.step(state, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="None at the first step"):
        model.step(state, None)
    _, full = run_steps(model, model.start(1), torch.zeros(1, T, dtype=torch.long))
    with pytest.raises(ValueError, match=f"complete: all {T} tokens"):
        model.step(full, torch.tensor([0]))
    with pytest.raises(ValueError, match=rf"\(B, {T}\) for 4x5x3 images"):
        model(torch.zeros(2, T - 1, dtype=torch.long))
    with pytest.raises(ValueError, match=rf"\[0, {L}\)"):
        model(torch.full((1, T), L))
    with pytest.raises(ValueError):
        model.start(0)
    with pytest.raises(ValueError, match="multiple of channels"):
        PixelCNNConfig(channels=3, hidden=64)
    with pytest.raises(ValueError, match="kernel must be odd"):
        PixelCNNConfig(kernel=4)


def test_default_config():
    model = PixelCNN(PixelCNNConfig())
    assert model.vocab_size == 256 and model.eos_id is None and model.sequence_length == 28 * 28
    tokens = torch.randint(0, 256, (1, model.sequence_length), generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(run_steps(model, model.start(1), tokens)[0], model(tokens), rtol=0, atol=1e-4)


def test_start_uses_the_current_weights():
    model = tiny(True, 3, num_classes=2)
    tokens, labels = random_tokens(model, 2), torch.tensor([0, 1])
    run_steps(model, model.start(2, labels), tokens)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.7).add_(0.05)
    torch.testing.assert_close(run_steps(model, model.start(2, labels), tokens)[0], model(tokens, labels), rtol=0, atol=1e-4)


@pytest.mark.parametrize("gated, channels", [(True, 1), (True, 3), (False, 1), (False, 3)])
def test_generating_an_image_costs_at_most_one_forward_per_sub_pixel_channel(gated, channels):
    """A step runs one pixel through the layers from cached rows: its work does not grow with the
    position, and a whole image costs at most C forwards (a pixel is redone for each of its C
    sub-pixels), not T forwards."""
    model = tiny(gated, channels, height=8, width=8)
    tokens = random_tokens(model, 1)
    with FlopCounterMode(display=False) as counter:
        model(tokens)
    forward_flops = counter.get_total_flops()
    state, step_flops = model.start(1), []
    for t in range(model.sequence_length):
        with FlopCounterMode(display=False) as counter:
            _, state = model.step(state, None if t == 0 else tokens[:, t - 1])
        step_flops.append(counter.get_total_flops())
    per_row = 8 * channels  # tokens per image row
    assert 0 < step_flops[2 * per_row + 7] == step_flops[5 * per_row + 7]  # same column, later row: same work
    assert forward_flops <= sum(step_flops) <= channels * forward_flops


def test_engine_samples_and_completes_images():
    model = tiny(True, 3, num_classes=2)
    T = model.sequence_length
    results = generate(model, "sample", max_length=T, batch_size=2, condition=torch.tensor([0, 1]), seed=0)
    tokens = torch.tensor([r[0].tokens for r in results])  # (2, T)
    logprobs = torch.log_softmax(model(tokens, torch.tensor([0, 1])), -1).gather(2, tokens[..., None]).sum((1, 2))
    torch.testing.assert_close(torch.tensor([r[0].logprob for r in results]), logprobs, rtol=0, atol=1e-3)
    # Completion: the top half given, the bottom half generated.
    known = torch.zeros(2, T, dtype=torch.bool)
    known[:, : T // 2] = True
    completed = generate(model, "greedy", max_length=T, batch_size=2, condition=1, known=(tokens, known))
    assert [r[0].tokens[: T // 2] for r in completed] == tokens[:, : T // 2].tolist()
    # Beam search reorders the state every step; its log-probs are still the model's.
    best = generate(model, "beam", beam_size=3, max_length=T, batch_size=1, condition=1)[0][0]
    tokens = torch.tensor([best.tokens])
    logprob = torch.log_softmax(model(tokens, 1), -1).gather(2, tokens[..., None]).sum()
    assert abs(best.logprob - logprob.item()) < 1e-3


def test_forward_trains_and_step_does_not_track_gradients():
    for gated in (True, False):
        model = tiny(gated, 3, num_classes=2)
        tokens = random_tokens(model, 2)
        loss = torch.nn.functional.cross_entropy(model(tokens, torch.tensor([0, 1])).reshape(-1, L), tokens.reshape(-1))
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        logits, _ = model.step(model.start(2, 0), None)
        assert not logits.requires_grad
