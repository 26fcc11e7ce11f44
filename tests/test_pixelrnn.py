"""PixelRNN (Row LSTM, Diagonal BiLSTM): step == forward, causality of every output sub-pixel,
the receptive field (a triangle for the Row LSTM, the whole past for the Diagonal BiLSTM, each
direction of the BiLSTM on its own), reorder, and the cost of incremental generation."""

import itertools

import pytest
import torch
from contract import assert_reorder_continues, run_steps
from torch.utils.flop_counter import FlopCounterMode

from arcli.decoding import Known, generate
from arcli.errors import OptionError
from arcli.models.pixelrnn import DiagonalBiLSTMConfig, PixelRNN, PixelRNNConfig, RowLSTMConfig, receptive_field

L = 5  # tiny number of levels per sub-pixel
H, W = 4, 5  # tiny image: 4 rows of 5 pixels
KINDS = {"row": RowLSTMConfig, "diagonal": DiagonalBiLSTMConfig}


def tiny(kind="row", channels=1, num_classes=0, layers=2, first_kernel=3, dtype=torch.float32, seed=0, **shape) -> PixelRNN:
    """A tiny PixelRNN with weights large enough that every dependency shows in the logits."""
    config = KINDS[kind](height=shape.get("height", H), width=shape.get("width", W), channels=channels, levels=L, hidden=6,
                         layers=layers, first_kernel=first_kernel, num_classes=num_classes)
    torch.manual_seed(seed)
    model = PixelRNN(config)
    with torch.no_grad():
        for p in model.parameters():  # about unit-size activations and logits of a few units
            p.normal_(0.0, 1.5 / p[0].numel() ** 0.5 if p.dim() > 1 else 0.5)
    return model.to(dtype=dtype)


def random_tokens(model, batch_size, seed=1):
    return torch.randint(0, L, (batch_size, model.sequence_length), generator=torch.Generator().manual_seed(seed))


def dependence(model, label=None, images=4) -> torch.Tensor:
    """(T, T) bool: [t, s] is whether the logits of sub-pixel t depend on sub-pixel s (raster
    order, R G B within a pixel), from the exact Jacobian of the network in float64 at a few
    random images (one could hide a dependence where every ReLU of a group is off)."""
    c = model.config
    model = model.double()
    image = torch.randn(images, c.channels, c.height, c.width, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    labels = None if label is None else torch.full((images,), label)

    def logits(x):  # (N, C, H, W) -> (T, levels) summed over the images: rows do not mix
        out = model.network(x, labels).view(images, c.channels, c.levels, c.height, c.width)
        return out.permute(0, 3, 4, 1, 2).reshape(images, -1, c.levels).sum(0)

    jacobian = torch.autograd.functional.jacobian(logits, image, vectorize=True)  # (T, levels, N, C, H, W)
    jacobian = jacobian.permute(0, 1, 2, 4, 5, 3).reshape(model.sequence_length, c.levels * images, -1)  # inputs in raster order
    return (jacobian != 0).any(1)


VARIANTS = list(itertools.product(KINDS, [1, 3], [0, 3]))  # kind, channels, num_classes
VARIANT_IDS = [f"{k}-{'rgb' if c == 3 else 'grey'}-{'cond' if n else 'uncond'}" for k, c, n in VARIANTS]


@pytest.mark.parametrize("kind, channels, num_classes", VARIANTS, ids=VARIANT_IDS)
def test_step_matches_forward(kind, channels, num_classes):
    model = tiny(kind, channels, num_classes)
    tokens = random_tokens(model, 3)
    labels = torch.tensor([0, 2, 1]) if num_classes else None
    expected = model(tokens, labels)  # (B, T, L)
    got, state = run_steps(model, model.start(3, labels), tokens)
    assert got.shape == (3, H * W * channels, L) and state.position == H * W * channels
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert expected.abs().max() > 1  # the comparison is not between near-zero logits


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("first_kernel, layers, height, width", [(1, 1, 3, 6), (7, 3, 6, 3), (5, 1, 1, 4), (3, 2, 5, 1)])
def test_step_matches_forward_float64_other_shapes(kind, first_kernel, layers, height, width):
    """Tall and wide images (the skew has H + W - 1 columns), one row, one column."""
    model = tiny(kind, 3, first_kernel=first_kernel, layers=layers, dtype=torch.float64, height=height, width=width)
    tokens = random_tokens(model, 2, seed=2)
    got, _ = run_steps(model, model.start(2), tokens)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, model(tokens), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind, channels, num_classes", VARIANTS, ids=VARIANT_IDS)
def test_no_logit_depends_on_its_own_or_a_later_sub_pixel(kind, channels, num_classes):
    model = tiny(kind, channels, num_classes, first_kernel=3)
    seen = dependence(model, 1 if num_classes else None)
    T = model.sequence_length
    assert not seen.triu().any()  # [t, s] with s >= t: its own sub-pixel or a later one
    assert seen.tril(-1).sum() > T  # and it does depend on earlier ones
    if channels == 3:  # within a pixel: G sees R, B sees R and G (mask B after the mask-A first layer)
        for pixel in range(H * W):
            t = 3 * pixel
            assert seen[t + 1, t] and seen[t + 2, t] and seen[t + 2, t + 1]


def test_row_lstm_receptive_field_is_the_triangle():
    """Row LSTM, first kernel 3 (r = 1), one layer, logits of pixel (3, 6) of a 4x9 image, drawn by
    hand: the row above's j-1..j+1 per row up and j-1 through the input, widened by the first conv
    (X: a pixel the logits depend on, o: the pixel itself)."""
    model = tiny("row", first_kernel=3, layers=1, height=4, width=9)
    picture = [
        ".XXXXXXXX",
        "..XXXXXXX",
        "...XXXXX.",
        "....XXo..",
    ]
    expected = torch.tensor([[ch == "X" for ch in row] for row in picture]).flatten()
    got = dependence(model)[3 * 9 + 6]
    assert torch.equal(got, expected), "\n" + "\n".join("".join("X" if v else "." for v in row) for row in got.view(4, 9).tolist())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("first_kernel, layers, height, width", [(3, 1, 6, 9), (5, 2, 7, 8), (7, 3, 5, 11), (3, 3, 6, 6)])
def test_receptive_field_is_what_the_jacobian_reaches(kind, first_kernel, layers, height, width):
    """Row LSTM: the triangle; Diagonal BiLSTM: every earlier pixel (grey: nothing of the pixel itself)."""
    model = tiny(kind, first_kernel=first_kernel, layers=layers, height=height, width=width)
    seen = dependence(model)
    for i, j in [(height - 1, width // 2), (height // 2, 0), (height - 1, width - 1), (1, width - 2)]:
        field = receptive_field(model.config, i, j)
        got = {divmod(s, width) for s in seen[i * width + j].nonzero().flatten().tolist()}
        assert got == field, (i, j, sorted(field ^ got))
    if kind == "diagonal":
        assert receptive_field(model.config, height - 1, width - 1) == {divmod(s, width) for s in range(height * width - 1)}


@pytest.mark.parametrize("direction", ["left_to_right", "right_to_left"])
def test_each_diagonal_direction_alone(direction):
    """One layer, first kernel 3 (r = 1) on a grey image, the other direction's inputs zeroed.
    Left-to-right: the maps at every (i', j') with i' <= i, j' <= j, and the 3x3 mask-A conv
    widens that to the rows above up to column j+1 and the current row left of j. Right-to-left
    (shifted down a row): the maps and the image of rows above at columns >= j, widened to j-1;
    the residual path adds the first conv's own field (here the pixel to the left). Neither sees
    the current pixel or anything right of it in its row: that would be the future."""
    model = tiny("diagonal", first_kernel=3, layers=1, height=5, width=6)
    other = getattr(model.layers[0], "right_to_left" if direction == "left_to_right" else "left_to_right")
    with torch.no_grad():
        other.input_to_state.weight.zero_()
        if other.image_to_state is not None:
            other.image_to_state.weight.zero_()
    seen = dependence(model)
    for i, j in itertools.product(range(5), range(6)):
        if direction == "left_to_right":
            expected = {(a, b) for a in range(i) for b in range(min(j + 2, 6))} | {(i, b) for b in range(j)}
        else:
            expected = {(a, b) for a in range(i) for b in range(max(j - 1, 0), 6)} | {(i, b) for b in range(max(j - 1, 0), j)}
        assert {divmod(s, 6) for s in seen[i * 6 + j].nonzero().flatten().tolist()} == expected, (i, j)


def test_without_the_image_the_right_to_left_pass_misses_the_end_of_the_row_above():
    """Why the first layer's right-to-left LSTM reads the image: without it (the paper's layer as
    written), pixel (i-1, W-1) reaches no pixel of row i left of column W-1-r, with any number of layers."""
    model = tiny("diagonal", first_kernel=3, layers=3, height=4, width=6)
    with torch.no_grad():
        model.layers[0].right_to_left.image_to_state.weight.zero_()
    seen = dependence(model)
    assert not seen[3 * 6 + 3, 2 * 6 + 5] and seen[3 * 6 + 4, 2 * 6 + 5]
    assert {divmod(s, 6) for s in seen[3 * 6 + 2].nonzero().flatten().tolist()} == receptive_field(model.config, 3, 2) - {(2, 5)}


@pytest.mark.parametrize("kind", KINDS)
def test_reorder_selects_permutes_and_duplicates_rows(kind):
    model = tiny(kind, 3, num_classes=2)
    tokens = random_tokens(model, 3)
    labels = torch.tensor([1, 0, 1])
    expected = model(tokens, labels)
    split = 2 * W * 3 + 4  # mid-row, mid-pixel: the row buffers hold two rows
    _, state = run_steps(model, model.start(3, labels), tokens[:, :split])
    assert_reorder_continues(model, state, tokens[:, :split], tokens[:, split:], expected[:, split:], torch.tensor([2, 2, 0]))


@pytest.mark.parametrize("kind, channels", [("row", 1), ("row", 3), ("diagonal", 1), ("diagonal", 3)])
def test_generating_an_image_never_reruns_the_network(kind, channels, monkeypatch):
    """A step runs one pixel through the layers from cached row states: its work does not grow
    with the position, a whole image costs at most C forwards in FLOPs (a pixel is redone for each
    of its C sub-pixels), and the parallel network is never called."""
    model = tiny(kind, channels, height=8, width=8)
    tokens = random_tokens(model, 1)
    with FlopCounterMode(display=False) as counter:
        model(tokens)
    forward_flops = counter.get_total_flops()

    def no_network(*args):
        raise AssertionError("step ran the whole network")

    monkeypatch.setattr(model, "network", no_network)
    state, step_flops = model.start(1), []
    for t in range(model.sequence_length):
        with FlopCounterMode(display=False) as counter:
            _, state = model.step(state, None if t == 0 else tokens[:, t - 1])
        step_flops.append(counter.get_total_flops())
    per_row = 8 * channels
    assert 0 < step_flops[2 * per_row + 3 * channels] == step_flops[5 * per_row + 3 * channels]  # same column, later row
    assert sum(step_flops) <= channels * forward_flops


@pytest.mark.parametrize("kind", KINDS)
def test_engine_samples_and_completes_images(kind):
    model = tiny(kind, 3, num_classes=2)
    T = model.sequence_length
    rows = generate(model, "sample", max_length=T, batch_size=2, condition=torch.tensor([0, 1]), seed=0)
    assert [len(r[0].tokens) for r in rows] == [T, T]
    tokens = torch.tensor([r[0].tokens for r in rows])
    logprob = torch.log_softmax(model(tokens, torch.tensor([0, 1])), -1).gather(2, tokens[..., None]).sum((1, 2))
    torch.testing.assert_close(torch.tensor([r[0].logprob for r in rows], dtype=logprob.dtype), logprob, rtol=0, atol=1e-3)
    mask = torch.zeros(2, T, dtype=torch.bool)
    mask[:, : T // 2] = True
    done = generate(model, "sample", max_length=T, batch_size=2, condition=torch.tensor([1, 1]), known=Known(tokens, mask), seed=1)
    assert all(d[0].tokens[: T // 2] == tokens[b, : T // 2].tolist() for b, d in enumerate(done))


@pytest.mark.parametrize("kind", KINDS)
def test_conditional_model_depends_on_label_and_checks_it(kind):
    model = tiny(kind, 1, num_classes=3)
    tokens = random_tokens(model, 1)
    assert not torch.allclose(model(tokens, torch.tensor([0])), model(tokens, torch.tensor([2])))
    with pytest.raises(OptionError, match="class-conditional"):
        model(tokens)
    with pytest.raises(OptionError, match=r"must lie in \[0, 3\)"):
        model.start(1, torch.tensor([3]))
    with pytest.raises(OptionError, match="unconditional"):
        tiny(kind)(tokens, torch.tensor([0]))


def test_bad_arguments_and_configs():
    model = tiny("row")
    with pytest.raises(ValueError, match="expected tokens of shape"):
        model(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="must lie in"):
        model(torch.full((1, model.sequence_length), L))
    state = model.start(1)
    with pytest.raises(ValueError, match="None at the first step"):
        model.step(state, torch.tensor([0]))
    with pytest.raises(ValueError, match="multiple of channels"):
        RowLSTMConfig(channels=3, hidden=16)
    with pytest.raises(ValueError, match="odd"):
        DiagonalBiLSTMConfig(first_kernel=4)
    with pytest.raises(ValueError, match="RowLSTMConfig or a DiagonalBiLSTMConfig"):
        PixelRNN(PixelRNNConfig())


def test_forward_trains_and_step_does_not_track_gradients():
    for kind in KINDS:
        model = tiny(kind, 3)
        tokens = random_tokens(model, 2)
        loss = torch.nn.functional.cross_entropy(model(tokens).transpose(1, 2), tokens)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        logits, _ = model.step(model.start(1), None)
        assert not logits.requires_grad
