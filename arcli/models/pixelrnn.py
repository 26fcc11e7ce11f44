"""PixelRNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks"): the Row LSTM and the
Diagonal BiLSTM over images of `levels`-valued sub-pixels, optionally class-conditional.

Tokens, shift convention and input scaling are PixelCNN's (arcli/models/pixelcnn.py): T = H*W*C
tokens in raster order, R G B within a pixel, `forward(x)[:, t]` scores x_t given x_<t, and the
image enters scaled to [-1, 1] with zeros for padding and for sub-pixels not yet generated.

Network: a 7x7 mask-A convolution (C -> 2h maps), `layers` LSTM layers of h units, each residual
(x + 1x1(h_out), 2h maps), then ReLU, 1x1, ReLU, 1x1 to C * levels logits. Every map and gate
belongs to one colour group (contiguous thirds for RGB); at the current pixel a masked weight lets
group g see input groups < g (mask A, first layer) or <= g (mask B, every later input-to-state and
1x1). The LSTM of one layer, with gates [i, f, o, g] from the input-to-state and state-to-state
convolutions (plus a label bias):

    c = sigmoid(f) * c_prev + sigmoid(i) * tanh(g),    h = sigmoid(o) * tanh(c)

The recurrence reads only states of pixels that come wholly before the current one, so the
state-to-state convolutions are unmasked.

- Row LSTM: row by row; the input-to-state is a masked 1-D conv along the row (taps j-1 and j of
  the paper's k=3 kernel; j+1 is masked), the state-to-state a k=3 1-D conv over the previous row's
  h at j-1, j, j+1, and c_prev is the cell of the pixel above. The receptive field is a triangle
  (`receptive_field`).
- Diagonal BiLSTM: the input-to-state is a 1x1 mask-B conv; the map is skewed (row i shifted right
  by i) so that each diagonal is a column, and an LSTM runs over the columns with a 2x1
  state-to-state conv: in image terms the pixel above and the pixel to the left, c_prev being the
  left one's. States left of column 0 are zero. A second, right-to-left LSTM (its own weights) runs
  on the mirrored map; its output is shifted down one row before the two are added, so that it
  brings only rows above. In the first layer it also reads the image itself (a 1x1 conv, unmasked:
  after the shift it brings only finished rows). Without that, the last pixel of the row above,
  (i-1, W-1), would reach no pixel of row i left of W-1-r: the mask-A first layer keeps a pixel out
  of its own position, so it enters the maps only to its right (there is none) and in the row
  below, which the right-to-left pass of row i-1 does not read. With it, the logits of every pixel
  see the whole past.

Incremental view: a step runs only the current pixel through the layers, from per-layer row
buffers (h, c, the layer's input row). At the start of each row the Row LSTM applies its
state-to-state conv to the finished row above, and the Diagonal BiLSTM runs its right-to-left LSTM
over the finished row above (its shifted output for the new row). Cost: O(layers * h^2) per pixel,
never a pass over the image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arcli.errors import OptionError
from arcli.image.binary import class_labels
from arcli.models.pixelcnn import MaskedConv2d, colour_groups

# -------------------------------------------------------------------------------------------------
# building blocks


def lstm_cell(gates: Tensor, c_prev: Tensor, dim: int = 1) -> tuple[Tensor, Tensor]:
    """gates (B, 4h, ...) = [i | f | o | g] along `dim`, c_prev (B, h, ...) -> (h, c), both (B, h, ...)."""
    i, f, o, g = gates.chunk(4, dim=dim)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def skew(x: Tensor) -> Tensor:
    """(B, F, H, W) -> (B, F, H, W+H-1): row i shifted right by i, so diagonal i+j is column i+j.
    Rows padded to W+H and read with a row length of W+H-1: element i*(W+H-1) + i+j is x[i, j]."""
    B, maps, H, W = x.shape
    return F.pad(x, (0, H)).flatten(2)[:, :, : H * (W + H - 1)].view(B, maps, H, W + H - 1)


def unskew(x: Tensor, width: int) -> Tensor:
    """The inverse of `skew`: (B, F, H, W+H-1) -> (B, F, H, W), read with a row length of W+H+1."""
    B, maps, H, _ = x.shape
    flat = F.pad(F.pad(x, (0, 1)).flatten(2), (0, H))  # (B, F, H*(W+H+1))
    return flat.view(B, maps, H, width + H + 1)[:, :, :, :width]


class _Layer(nn.Module):
    """What both LSTM layers share: groups, a label bias per gate set, the residual 1x1 out."""

    def __init__(self, config: PixelRNNConfig):
        super().__init__()
        C, h = config.channels, config.hidden
        self.units = h
        self.res_groups = colour_groups(2 * h, C)
        self.gate_groups = colour_groups(h, C).repeat(4)  # [i | f | o | g]: each gate map in its unit's group
        self.out = MaskedConv2d(colour_groups(h, C), self.res_groups, (1, 1), center=0, strict=False)

    def label_bias(self, n: int) -> nn.Embedding | None:
        return nn.Embedding(n, 4 * self.units) if n else None


class RowLSTMLayer(_Layer):
    def __init__(self, config: PixelRNNConfig, first: bool):
        super().__init__(config)
        h = self.units
        self.input_to_state = MaskedConv2d(self.res_groups, self.gate_groups, (1, 2), center=1, strict=False)  # taps j-1, j
        self.state_to_state = nn.Conv1d(h, 4 * h, 3, padding=1, bias=False)  # previous row, j-1 .. j+1
        self.label = self.label_bias(config.num_classes)

    def forward(self, x: Tensor, label: Tensor | None, image: Tensor) -> Tensor:
        """x: (B, 2h, H, W) (the image is not read: the triangle is the Row LSTM's field) -> (B, 2h, H, W)."""
        B, _, H, W = x.shape
        gates_in = self.input_to_state(F.pad(x, (1, 0, 0, 0)))  # (B, 4h, H, W)
        if self.label is not None:
            gates_in = gates_in + self.label(label)[:, :, None, None]
        h = c = x.new_zeros(B, self.units, W)
        rows = []
        for i in range(H):
            h, c = lstm_cell(gates_in[:, :, i] + self.state_to_state(h), c)  # (B, h, W)
            rows.append(h)
        return x + self.out(torch.stack(rows, 2))


class ColumnLSTM(nn.Module):
    """The weights of one direction of the Diagonal BiLSTM: a 1x1 mask-B input-to-state conv and a
    2x1 state-to-state conv (rows i-1 and i of the previous skewed column); `column_lstms` runs it."""

    def __init__(self, layer: _Layer, num_classes: int, image_channels: int = 0):
        super().__init__()
        h = layer.units
        self.units = h
        self.input_to_state = MaskedConv2d(layer.res_groups, layer.gate_groups, (1, 1), center=0, strict=False)
        self.image_to_state = nn.Conv2d(image_channels, 4 * h, 1, bias=False) if image_channels else None  # unmasked: see DiagonalBiLSTMLayer
        self.state_to_state = nn.Conv1d(h, 4 * h, 2, bias=False)  # taps: [0] the pixel above, [1] the pixel left
        self.label = layer.label_bias(num_classes)

    def gates(self, x: Tensor, label: Tensor | None, image: Tensor | None) -> Tensor:
        """The input-to-state part of the gates: x (B, 2h, H, W), image (B, C, H, W) -> (B, 4h, H, W)."""
        gates_in = self.input_to_state(x)
        if self.image_to_state is not None:
            gates_in = gates_in + self.image_to_state(image)
        if self.label is not None:
            gates_in = gates_in + self.label(label)[:, :, None, None]
        return gates_in


def column_lstms(gates_in: Tensor, state_to_state: Tensor) -> Tensor:
    """D column LSTMs side by side (the two directions of a layer, each its own weights).
    gates_in: (B, D, 4h, H, W) input-to-state gates; state_to_state: (D*4h, h, 2) -> h (B, D, h, H, W).
    Skewed, the LSTM runs over the W+H-1 columns; h at (i, j) sees (i', j') with i' <= i, j' <= j."""
    B, D, G, H, W = gates_in.shape
    skewed = skew(gates_in.flatten(1, 2)).view(B, D, G, H, -1).permute(4, 0, 1, 2, 3).contiguous()  # (W+H-1, B, D, 4h, H)
    rows = torch.arange(H, device=gates_in.device)
    h = c = gates_in.new_zeros(B, D, G // 4, H)
    columns = []
    for k in range(W + H - 1):
        recurrent = F.conv1d(F.pad(h.flatten(1, 2), (1, 0)), state_to_state, groups=D).view(B, D, G, H)  # rows i-1, i of column k-1
        h, c = lstm_cell(skewed[k] + recurrent, c, dim=2)  # (B, D, h, H)
        inside = ((k - rows >= 0) & (k - rows < W)).to(h.dtype)  # (H,): column k holds pixel (i, k-i)
        h, c = h * inside, c * inside  # a state left of column 0 is zero, as the step's
        columns.append(h)
    out = torch.stack(columns, -1)  # (B, D, h, H, W+H-1)
    return unskew(out.flatten(1, 2), W).view(B, D, G // 4, H, W)


class DiagonalBiLSTMLayer(_Layer):
    def __init__(self, config: PixelRNNConfig, first: bool):
        super().__init__(config)
        self.left_to_right = ColumnLSTM(self, config.num_classes)
        self.right_to_left = ColumnLSTM(self, config.num_classes, config.channels if first else 0)

    def forward(self, x: Tensor, label: Tensor | None, image: Tensor) -> Tensor:
        """x: (B, 2h, H, W), image (B, C, H, W) scaled -> (B, 2h, H, W)."""
        gates = torch.stack([self.left_to_right.gates(x, label, None), self.right_to_left.gates(x.flip(3), label, image.flip(3))], 1)
        weights = torch.cat([self.left_to_right.state_to_state.weight, self.right_to_left.state_to_state.weight])  # (2*4h, h, 2)
        forward, backward = column_lstms(gates, weights).unbind(1)  # (B, h, H, W) each; the second mirrored
        backward = F.pad(backward.flip(3), (0, 0, 1, 0))[:, :, :-1]  # sees rows <= i, columns >= j; shifted down: rows < i
        return x + self.out(forward + backward)


# -------------------------------------------------------------------------------------------------
# config


@dataclass
class PixelRNNConfig:
    height: int = 28  # image shape: 28 x 28 grey is (Fashion-)MNIST
    width: int = 28
    channels: int = 1  # 1 grey, 3 RGB (sub-pixel order R, G, B)
    levels: int = 256  # values per sub-pixel: 8 bits, a 256-way softmax (2: binary images)
    hidden: int = 32  # LSTM units per layer (a multiple of channels); the residual stream has 2*hidden maps (the table's models)
    layers: int = 2  # LSTM layers; the paper's MNIST models have 1 to 7, the CIFAR ones 12
    first_kernel: int = 7  # odd; the paper's 7x7 mask-A first convolution
    num_classes: int = 0  # 0 = unconditional; > 0 = class-conditional (a label bias on every layer's gates)

    kind: ClassVar[str] = ""  # "row" or "diagonal": which LSTM layer

    def __post_init__(self) -> None:
        name = type(self).__name__
        for key in ("height", "width", "channels", "hidden", "layers"):
            if getattr(self, key) < 1:
                raise ValueError(f"{name}.{key} must be >= 1, got {getattr(self, key)}")
        if self.levels < 2:
            raise ValueError(f"{name}.levels must be >= 2, got {self.levels}")
        if self.num_classes < 0:
            raise ValueError(f"{name}.num_classes must be >= 0, got {self.num_classes}")
        if self.first_kernel < 1 or self.first_kernel % 2 == 0:
            raise ValueError(f"{name}.first_kernel must be odd and >= 1, got {self.first_kernel}")
        if self.hidden % self.channels:
            raise ValueError(f"{name}.hidden ({self.hidden}) must be a multiple of channels ({self.channels})")

    # The image task's contract (arcli/image/contract.py).

    def describe(self) -> dict[str, str]:
        r = self.first_kernel // 2
        if self.kind == "row":
            kind = (f"Row LSTM: {self.first_kernel}x{self.first_kernel} mask-A conv, {self.layers} residual Row LSTM layers "
                    f"of {self.hidden} units (k=3 state-to-state over the row above)")
            seen = (f"a triangle: d rows up, columns -(d+{self.layers + r}) .. +(d+{r - 1}); in the current row "
                    f"{r + self.layers} pixels to the left")
        else:
            kind = (f"Diagonal BiLSTM: {self.first_kernel}x{self.first_kernel} mask-A conv, {self.layers} residual Diagonal "
                    f"BiLSTM layers of {self.hidden} units per direction")
            seen = "the whole past: every earlier pixel"
        return {"architecture": kind, "receptive field": seen,
                "sampling cost": "step keeps each layer's LSTM states per row: O(layers * hidden^2) per pixel"}

    def fit(self, shape: tuple[int, int, int], classes: int) -> tuple[PixelRNNConfig, list[str]]:
        """The config with the data's image shape and class count, `hidden` rounded up to a
        multiple of the channels (a value the user --set that disagrees with the data is refused)."""
        from arcli.image.contract import fit_fields

        channels, hidden, notes = shape[2], self.hidden, []
        if hidden % channels:
            rounded = hidden + channels - hidden % channels
            if hidden != type(self)().hidden:
                raise OptionError(f"--set hidden={hidden} is not a multiple of the {channels} colour channels of the images: use hidden={rounded}")
            notes.append(f"hidden={rounded}: the LSTM units split into {channels} colour groups (R, G, B), so {hidden} was rounded up")
            hidden = rounded
        return fit_fields(replace(self, hidden=hidden), shape, classes), notes


@dataclass
class RowLSTMConfig(PixelRNNConfig):
    kind: ClassVar[str] = "row"


@dataclass
class DiagonalBiLSTMConfig(PixelRNNConfig):
    kind: ClassVar[str] = "diagonal"


def receptive_field(config: PixelRNNConfig, i: int, j: int) -> set[tuple[int, int]]:
    """The pixels (i', j') other than (i, j) itself that the logits of pixel (i, j) depend on.
    Row LSTM, first-kernel radius r, L layers: each layer reaches d rows up at columns -d-1 .. +d
    (the row above's j-1..j+1 each step up, and j-1 through its input); composed with the first conv
    (r rows up at -r .. +r, the current row at -r .. -1), row i-d sees columns j-d-L-r .. j+d+r-1
    and row i the r+L pixels to the left. Diagonal BiLSTM: every earlier pixel. (A 1x1 first layer,
    r = 0, is left out: on a grey image its mask A sees nothing, so the Row LSTM sees nothing.)"""
    W, r, L = config.width, config.first_kernel // 2, config.layers
    if r == 0:
        raise ValueError("receptive_field: first_kernel must be >= 3")
    field = set()
    for a in range(i + 1):
        for b in range(W):
            if (a, b) >= (i, j):
                continue
            d = i - a
            if config.kind == "diagonal" or (d == 0 and b >= j - r - L) or (d > 0 and j - d - L - r <= b <= j + d + r - 1):
                field.add((a, b))
    return field


# -------------------------------------------------------------------------------------------------
# model


class PixelRNN(nn.Module):
    eos_id = None  # fixed-length output: height * width * channels tokens

    def __init__(self, config: PixelRNNConfig):
        super().__init__()
        if config.kind not in ("row", "diagonal"):
            raise ValueError("build a PixelRNN from a RowLSTMConfig or a DiagonalBiLSTMConfig")
        self.config = config
        self.vocab_size = config.levels
        C, res, r = config.channels, 2 * config.hidden, config.first_kernel // 2
        groups = colour_groups(res, C)
        self.first = MaskedConv2d(torch.arange(C), groups, (r + 1, config.first_kernel), center=r, strict=True)
        self.label = nn.Embedding(config.num_classes, res) if config.num_classes else None
        layer = RowLSTMLayer if config.kind == "row" else DiagonalBiLSTMLayer
        self.layers = nn.ModuleList(layer(config, first=n == 0) for n in range(config.layers))
        self.hidden_out = MaskedConv2d(groups, groups, (1, 1), center=0, strict=False)
        self.logits_out = MaskedConv2d(groups, colour_groups(C * config.levels, C), (1, 1), center=0, strict=False)

    @property
    def sequence_length(self) -> int:
        """Tokens per image: T = height * width * channels."""
        return self.config.height * self.config.width * self.config.channels

    def network(self, image: Tensor, label: Tensor | None) -> Tensor:
        """image: (B, C, H, W) scaled to [-1, 1] -> logits (B, C*levels, H, W); channel c's
        levels are maps c*levels .. (c+1)*levels - 1."""
        r = self.config.first_kernel // 2
        x = self.first(F.pad(image, (r, r, r, 0)))  # (B, 2h, H, W)
        if self.label is not None:
            x = x + self.label(label)[:, :, None, None]
        for layer in self.layers:
            x = layer(x, label, image)
        return self.logits_out(self.hidden_out(x.relu()).relu())

    def forward(self, tokens: Tensor, condition: object = None) -> Tensor:
        """tokens: (B, T) sub-pixel values in raster order, R G B within a pixel; condition: class
        labels (B,) or None -> logits (B, T, levels); logits[:, t] predict tokens[:, t] from tokens[:, :t]."""
        c = self.config
        if tokens.dim() != 2 or tokens.shape[1] != self.sequence_length:
            raise ValueError(f"expected tokens of shape (B, {self.sequence_length}) for {c.height}x{c.width}x{c.channels} images, got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= c.levels):
            raise ValueError(f"tokens must lie in [0, {c.levels})")
        B = tokens.shape[0]
        image = tokens.reshape(B, c.height, c.width, c.channels).permute(0, 3, 1, 2)  # (B, C, H, W)
        logits = self.network(self.scale(image), self._labels(condition, B))  # (B, C*levels, H, W)
        logits = logits.view(B, c.channels, c.levels, c.height, c.width).permute(0, 3, 4, 1, 2)  # (B, H, W, C, levels)
        return logits.reshape(B, self.sequence_length, c.levels)

    def scale(self, tokens: Tensor) -> Tensor:
        """Sub-pixel values 0 .. levels-1 -> [-1, 1], in the parameters' dtype."""
        return tokens.to(self.first.weight.dtype) * (2 / (self.config.levels - 1)) - 1

    def _labels(self, condition: object, batch_size: int) -> Tensor | None:
        return class_labels(condition, batch_size, self.config.num_classes, self.first.weight.device, "PixelRNN")

    # --- incremental view ---

    @torch.inference_mode()
    def start(self, batch_size: int, condition: object = None) -> PixelRNNState:
        """Fresh state for `batch_size` rows: an empty (all mid-grey) canvas and zero LSTM states."""
        if batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {batch_size}")
        c, labels = self.config, self._labels(condition, batch_size)
        r, h, W = c.first_kernel // 2, c.hidden, c.width
        canvas = self.first.weight.new_zeros(batch_size, c.channels, r + c.height, r + W + r)
        zeros = canvas.new_zeros

        def bias(conv: MaskedConv2d, embedding: nn.Embedding | None) -> Tensor:  # (B, maps): conv bias + label bias
            b = conv.bias.detach().expand(batch_size, -1)
            return (b if labels is None else b + embedding.weight.detach()[labels]).contiguous()

        caches: dict[str, list[Tensor]] = {"first": [bias(self.first, self.label)]}
        for layer in self.layers:
            names = {"h": (h, W), "c": (h, W)}  # this row's states so far (row above's further right)
            if c.kind == "row":
                names.update(x=(2 * h, W + 1), c_above=(h, W), state=(4 * h, W))  # x: column 0 pads column -1
                biases = {"bias": bias(layer.input_to_state, layer.label)}
            else:
                names.update(x=(2 * h, W), h_above=(h, W), h_back=(h, W))
                biases = {"bias": bias(layer.left_to_right.input_to_state, layer.left_to_right.label),
                          "bias_back": bias(layer.right_to_left.input_to_state, layer.right_to_left.label)}
            for name, shape in names.items():
                caches.setdefault(name, []).append(zeros(batch_size, *shape))
            for name, value in biases.items():
                caches.setdefault(name, []).append(value)
        w_logits = _flat(self.logits_out.masked_weight()).view(2 * h, c.channels, c.levels)
        head = (_flat(self.first.masked_weight()), _flat(self.hidden_out.masked_weight()), self.hidden_out.bias.detach(),
                [w.contiguous() for w in w_logits.unbind(1)], self.logits_out.bias.detach().view(c.channels, c.levels))
        weights = _StepWeights([_layer_weights(layer) for layer in self.layers], head)
        return PixelRNNState(canvas, labels, caches, 0, weights)

    @torch.inference_mode()
    def step(self, state: PixelRNNState, tokens: Tensor | None) -> tuple[Tensor, PixelRNNState]:
        """tokens: (B,) the previous sub-pixel of each row, None at the first step -> logits of the
        next sub-pixel (B, levels), and the state (updated in place)."""
        c, t = self.config, state.position
        if t >= self.sequence_length:
            raise ValueError(f"the image is complete: all {self.sequence_length} tokens have been given")
        if (tokens is None) != (t == 0):
            raise ValueError("step takes None at the first step, then the previous token of each row")
        r, B = c.first_kernel // 2, state.canvas.shape[0]
        if tokens is not None:
            if tokens.shape != (B,):
                raise ValueError(f"expected tokens of shape ({B},), got {tuple(tokens.shape)}")
            pixel, channel = divmod(t - 1, c.channels)
            state.canvas[:, channel, pixel // c.width + r, pixel % c.width + r] = self.scale(tokens)
        pixel, channel = divmod(t, c.channels)
        i, j = divmod(pixel, c.width)
        if j == 0 and channel == 0:
            (_begin_row if c.kind == "row" else _begin_diagonal_row)(state, i)
        w_first, w_hidden, b_hidden, w_logits, b_logits = state.weights.head
        patch = state.canvas[:, :, i : i + r + 1, j : j + 2 * r + 1].reshape(B, -1)  # (B, C*(r+1)*k): rows i-r..i
        x = torch.addmm(state.caches["first"][0], patch, w_first)  # (B, 2h); group g saw sub-pixels < g of (i, j)
        pixel_step = _row_pixel if c.kind == "row" else _diagonal_pixel
        for n, weights in enumerate(state.weights.layers):
            x = pixel_step(state, n, weights, x, j)
        hidden = torch.addmm(b_hidden, x.relu(), w_hidden).relu_()  # (B, 2h)
        state.position += 1
        return torch.addmm(b_logits[channel], hidden, w_logits[channel]), state  # (B, levels)

    @torch.inference_mode()
    def reorder(self, state: PixelRNNState, index: Tensor) -> PixelRNNState:
        """New state whose row i continues old row index[i] (keep, permute or duplicate rows)."""
        index = index.to(state.canvas.device)
        if index.dim() != 1 or index.numel() == 0:
            raise ValueError(f"reorder index must be a non-empty 1-d tensor, got shape {tuple(index.shape)}")
        caches = {name: [x.index_select(0, index) for x in tensors] for name, tensors in state.caches.items()}
        labels = None if state.labels is None else state.labels.index_select(0, index)
        return PixelRNNState(state.canvas.index_select(0, index), labels, caches, state.position, state.weights)


# -------------------------------------------------------------------------------------------------
# incremental state and the per-row / per-pixel updates of each layer kind


def _flat(weight: Tensor) -> Tensor:
    """A conv weight (O, I, kh, kw) as a matrix (I*kh*kw, O), for one pixel's patch (B, I*kh*kw)."""
    return weight.detach().flatten(1).t().contiguous()


def _layer_weights(layer: nn.Module) -> tuple:
    out = (_flat(layer.out.masked_weight()), layer.out.bias.detach())  # (h, 2h), (2h,)
    if isinstance(layer, RowLSTMLayer):
        return (_flat(layer.input_to_state.masked_weight()), layer.state_to_state.weight.detach(), *out)

    def direction(d: ColumnLSTM) -> tuple[Tensor, Tensor, Tensor]:  # input (2h, 4h), above (h, 4h), left (h, 4h)
        w = d.state_to_state.weight.detach()  # (4h, h, 2)
        return _flat(d.input_to_state.masked_weight()), w[:, :, 0].t().contiguous(), w[:, :, 1].t().contiguous()

    image = layer.right_to_left.image_to_state
    return (*direction(layer.left_to_right), *direction(layer.right_to_left), None if image is None else _flat(image.weight), *out)


def _begin_row(state: PixelRNNState, i: int) -> None:
    """Row LSTM, before row i: the state-to-state conv of the finished row above, its cells kept."""
    caches = state.caches
    for n, (_, w_state, *_) in enumerate(state.weights.layers):
        caches["c_above"][n].copy_(caches["c"][n])  # (B, h, W): row i-1 (zeros before row 0)
        caches["state"][n].copy_(F.conv1d(caches["h"][n], w_state, padding=1))  # (B, 4h, W): j-1 .. j+1 above


def _row_pixel(state: PixelRNNState, n: int, weights: tuple, x: Tensor, j: int) -> Tensor:
    """Row LSTM layer n at pixel (i, j): its input x (B, 2h) -> its output (B, 2h)."""
    w_in, _, w_out, b_out = weights
    caches, B = state.caches, x.shape[0]
    row = caches["x"][n]  # (B, 2h, W+1): column j+1 holds the input at pixel j
    row[:, :, j + 1] = x
    gates = torch.addmm(caches["bias"][n] + caches["state"][n][:, :, j], row[:, :, j : j + 2].reshape(B, -1), w_in)  # (B, 4h)
    h, c = lstm_cell(gates, caches["c_above"][n][:, :, j])  # (B, h)
    caches["h"][n][:, :, j], caches["c"][n][:, :, j] = h, c
    return x + torch.addmm(b_out, h, w_out)


def _begin_diagonal_row(state: PixelRNNState, i: int) -> None:
    """Diagonal BiLSTM, before row i: keep the row above's left-to-right states, and run the
    right-to-left LSTM over the finished row above (its output, shifted down, serves row i)."""
    caches, r = state.caches, (state.canvas.shape[3] - state.caches["x"][0].shape[2]) // 2
    for n, (*_, w_in, w_above, w_left, w_image, _, _) in enumerate(state.weights.layers):
        caches["h_above"][n].copy_(caches["h"][n])
        if i == 0:
            continue  # row -1 of the shifted right-to-left output is zero
        row, back = caches["x"][n], caches["h_back"][n]  # (B, 2h, W) the inputs of row i-1; (B, h, W) row i-2's states
        B, W = row.shape[0], row.shape[2]
        gates_in = (row.transpose(1, 2).reshape(B * W, -1) @ w_in).view(B, W, -1) + caches["bias_back"][n][:, None]  # (B, W, 4h)
        if w_image is not None:  # the first layer reads image row i-1 too
            pixels = state.canvas[:, :, i - 1 + r, r : r + W]  # (B, C, W)
            gates_in = gates_in + (pixels.transpose(1, 2).reshape(B * W, -1) @ w_image).view(B, W, -1)
        h = c = row.new_zeros(B, back.shape[1])  # right of column W-1: zero
        for j in reversed(range(W)):
            h, c = lstm_cell(gates_in[:, j] + back[:, :, j] @ w_above + h @ w_left, c)
            back[:, :, j] = h  # row i-1 now; row i-2's column j is no longer needed


def _diagonal_pixel(state: PixelRNNState, n: int, weights: tuple, x: Tensor, j: int) -> Tensor:
    """Diagonal BiLSTM layer n at pixel (i, j): its input x (B, 2h) -> its output (B, 2h)."""
    w_in, w_above, w_left, *_, w_out, b_out = weights
    caches = state.caches
    caches["x"][n][:, :, j] = x
    hs, cs = caches["h"][n], caches["c"][n]  # (B, h, W): columns < j hold row i
    gates = torch.addmm(caches["bias"][n], x, w_in) + caches["h_above"][n][:, :, j] @ w_above
    c_left = cs[:, :, j - 1] if j else torch.zeros_like(cs[:, :, 0])
    if j:
        gates = gates + hs[:, :, j - 1] @ w_left
    h, c = lstm_cell(gates, c_left)  # (B, h)
    hs[:, :, j], cs[:, :, j] = h, c
    return x + torch.addmm(b_out, h + caches["h_back"][n][:, :, j], w_out)


@dataclass
class _StepWeights:
    """The parameters as matrices for one-pixel steps, taken at `start()`; shared by all rows."""

    layers: list  # per layer, as _layer_weights lays them out
    head: tuple  # first conv (C*(r+1)*k, 2h), hidden (2h, 2h) and bias, per channel logits (2h, levels), their bias (C, levels)


@dataclass
class PixelRNNState:
    """Decoding state of B rows. `step` updates it in place and returns it, so a state must not be
    stepped twice; `reorder` returns a new, independent one. Every tensor but the weights has the
    batch first."""

    canvas: Tensor  # (B, C, r+H, r+W+r), r = first_kernel // 2: the image so far in [-1, 1], zero-padded
    labels: Tensor | None  # (B,) class labels of a conditional model
    caches: dict[str, list[Tensor]]  # per layer: row buffers of h, c and the layer input; label biases
    position: int  # tokens whose logits were given so far
    weights: _StepWeights
