"""PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks") and Gated PixelCNN
(van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders") over images of
`levels`-valued sub-pixels, optionally class-conditional.

An image is a sequence of T = height * width * channels tokens in raster order, and within a pixel
R, then G, then B. Shift convention: `forward(x)[:, t]` are the logits of x_t given x_<t (and the
label), and the first `step(state, None)` gives x_0's.

Input: each token scaled to [-1, 1]. Zeros (mid-grey) pad the image and stand for sub-pixels not
yet generated; the masks never let those through.

Masks: every conv sees rows above and the current row only (its kernel's last row is the current
row: the always-masked lower half is not stored). In the current row a position sees the pixels to
its left, and at the current pixel the feature maps are split into `channels` groups (R, G, B, the
PixelRNN paper's split): group c sees the input groups before it (mask A, first layer: a sub-pixel
never sees itself) or up to and including it (mask B, later layers). A grey image is the one-group
case: mask A hides the current pixel, mask B shows it.

Two views of one distribution:
- `forward` runs the convolutions over whole images (training, scoring);
- `start`/`step`/`reorder` give one token's logits at a time. A step runs only the current pixel
  through every layer, reading per-layer windows of the rows that pixel's convs see, where earlier
  steps left their activations (Ramachandran et al. 2017, "Fast Generation for Convolutional
  Autoregressive Models"). The gated model's vertical stack sees only rows above, so it runs once
  per row, for the whole row.
"""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arcli.errors import OptionError

# -------------------------------------------------------------------------------------------------
# building blocks


def colour_groups(maps: int, colours: int) -> Tensor:
    """The sub-pixel (0 = R, 1 = G, 2 = B) each of `maps` feature maps belongs to: contiguous thirds."""
    return torch.arange(maps) // (maps // colours)


def gate(a: Tensor) -> Tensor:
    """Gated unit: a = [filter | gate] along dim 1 (2F) -> tanh(filter) * sigmoid(gate) (F)."""
    filt, g = a.chunk(2, dim=1)
    return torch.tanh(filt) * torch.sigmoid(g)


class MaskedConv2d(nn.Conv2d):
    """A conv whose kernel's last row is the current image row, with tap `center` on the current
    pixel: taps right of it are masked, and at it output group o sees input groups i < o (strict,
    mask A) or i <= o (mask B). Rows above are unmasked. Padding is the caller's."""

    def __init__(self, in_groups: Tensor, out_groups: Tensor, kernel_size: tuple[int, int], center: int, strict: bool):
        super().__init__(len(in_groups), len(out_groups), kernel_size)
        mask = torch.ones_like(self.weight)  # (O, I, kh, kw)
        mask[:, :, -1, center + 1 :] = 0  # right of the current pixel: not generated yet
        sees = out_groups[:, None] > in_groups if strict else out_groups[:, None] >= in_groups  # (O, I)
        mask[:, :, -1, center] = sees.to(mask.dtype)
        self.register_buffer("mask", mask, persistent=False)  # rebuilt from the config, not saved

    def masked_weight(self) -> Tensor:
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias)


def pointwise(config: "PixelCNNConfig", out_groups: Tensor | None = None) -> MaskedConv2d:
    """A 1x1 conv from the F hidden maps, mask B (a sub-pixel's maps feed its own and later groups)."""
    hidden = colour_groups(config.hidden, config.channels)
    return MaskedConv2d(hidden, hidden if out_groups is None else out_groups, (1, 1), center=0, strict=False)


class ResidualBlock(nn.Module):
    """Plain PixelCNN block: x + 1x1(ReLU(masked k x k conv(ReLU(x)) + label bias)), mask B."""

    def __init__(self, config: "PixelCNNConfig"):
        super().__init__()
        groups, r = colour_groups(config.hidden, config.channels), config.kernel // 2
        self.radius = r
        self.conv = MaskedConv2d(groups, groups, (r + 1, config.kernel), center=r, strict=False)
        self.out = pointwise(config)
        self.label = nn.Embedding(config.num_classes, config.hidden) if config.num_classes else None

    def forward(self, x: Tensor, label: Tensor | None) -> Tensor:
        """x: (B, F, H, W), label: (B,) or None -> (B, F, H, W)."""
        r = self.radius
        a = self.conv(F.pad(x.relu(), (r, r, r, 0)))  # (B, F, H, W): rows i-r..i, columns j-r..j+r
        if self.label is not None:
            a = a + self.label(label)[:, :, None, None]
        return x + self.out(a.relu())


class GatedLayer(nn.Module):
    """Gated PixelCNN layer. The vertical stack sees the rows above (a (r+1) x k conv over an input
    whose row i holds only image rows < i), the horizontal stack the pixels to the left in the row
    (a 1 x (r+1) masked conv) plus a 1x1 link from the vertical stack's pre-activations; both go
    through tanh * sigmoid gates with a label bias; the horizontal stack is residual."""

    def __init__(self, config: "PixelCNNConfig", first: bool):
        super().__init__()
        C, hidden = config.channels, config.hidden
        k = config.first_kernel if first else config.kernel
        self.radius, self.first = k // 2, first
        in_groups = torch.arange(C) if first else colour_groups(hidden, C)
        gate_groups = colour_groups(hidden, C).repeat(2)  # [filter | gate]: a gate pairs maps of one group
        self.vertical = nn.Conv2d(len(in_groups), 2 * hidden, (self.radius + 1, k))  # unmasked: rows above only
        self.horizontal = MaskedConv2d(in_groups, gate_groups, (1, self.radius + 1), center=self.radius, strict=first)
        self.link = nn.Conv2d(2 * hidden, 2 * hidden, 1, bias=False)  # the horizontal conv's bias serves both
        self.out = pointwise(config)
        n = config.num_classes
        self.label_vertical = nn.Embedding(n, 2 * hidden) if n else None
        self.label_horizontal = nn.Embedding(n, 2 * hidden) if n else None

    def forward(self, v: Tensor, h: Tensor, label: Tensor | None) -> tuple[Tensor, Tensor]:
        """v, h: (B, F, H, W) (C maps for the first layer), label (B,) or None -> next v, h."""
        r = self.radius
        a_v = self.vertical(F.pad(v, (r, r, r, 0)))  # (B, 2F, H, W)
        if self.label_vertical is not None:
            a_v = a_v + self.label_vertical(label)[:, :, None, None]
        a_h = self.horizontal(F.pad(h, (r, 0, 0, 0))) + self.link(a_v)  # (B, 2F, H, W)
        if self.label_horizontal is not None:
            a_h = a_h + self.label_horizontal(label)[:, :, None, None]
        out = self.out(gate(a_h))
        return gate(a_v), out if self.first else h + out


# -------------------------------------------------------------------------------------------------
# config


@dataclass
class PixelCNNConfig:
    height: int = 28  # image shape: 28 x 28 grey is (Fashion-)MNIST
    width: int = 28
    channels: int = 1  # 1 grey, 3 RGB (sub-pixel order R, G, B)
    levels: int = 256  # values per sub-pixel: 8 bits, a 256-way softmax
    hidden: int = 64  # feature maps per layer (a multiple of channels: split into R, G, B groups)
    layers: int = 8  # masked/gated layers after the first: with kernel 5 the logits see 2*8+3 = 19 rows up
    kernel: int = 5  # odd; layers after the first: each adds 2 rows and 2 columns of context
    first_kernel: int = 7  # odd; the first layer's 7x7 is the classic choice: a wide first look
    num_classes: int = 0  # 0 = unconditional; > 0 = class-conditional (a label bias in every layer)
    gated: bool = True  # True: Gated PixelCNN (no blind spot); False: plain PixelCNN (mask A, then B)

    def __post_init__(self) -> None:
        for name in ("height", "width", "channels", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"PixelCNNConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.levels < 2:
            raise ValueError(f"PixelCNNConfig.levels must be >= 2, got {self.levels}")
        if self.layers < 0 or self.num_classes < 0:
            raise ValueError(f"PixelCNNConfig.layers and num_classes must be >= 0, got {self.layers}, {self.num_classes}")
        for name in ("kernel", "first_kernel"):
            if getattr(self, name) < 1 or getattr(self, name) % 2 == 0:
                raise ValueError(f"PixelCNNConfig.{name} must be odd and >= 1, got {getattr(self, name)}")
        if self.hidden % self.channels:
            raise ValueError(f"PixelCNNConfig.hidden ({self.hidden}) must be a multiple of channels ({self.channels})")

    # The image task's contract (arcli/image/contract.py).

    def describe(self) -> dict[str, str]:
        """The architecture lines of `arcli models info`."""
        rows, columns = context(self)
        if self.gated:
            kind = "Gated PixelCNN: vertical + horizontal stacks of gated units, no blind spot"
            seen = f"{rows} rows above (columns -{columns} .. +{columns}) and {columns} pixels to the left, every one of them"
        else:
            kind = "PixelCNN: masked convolutions (mask A, then B) in residual blocks"
            seen = f"{rows} rows above (columns -{columns} .. +{columns}) and {columns} pixels to the left, less the blind spot up-right"
        return {"architecture": kind, "receptive field": seen}

    def fit(self, shape: tuple[int, int, int], classes: int) -> tuple["PixelCNNConfig", list[str]]:
        """The config with the image shape and class count of the data (a value the user --set that
        disagrees with the data is refused), and `hidden` rounded up to a multiple of the channels."""
        from arcli.image.contract import fit_fields

        channels, hidden, notes = shape[2], self.hidden, []
        if hidden % channels:
            rounded = hidden + channels - hidden % channels
            if hidden != PixelCNNConfig().hidden:
                raise OptionError(f"--set hidden={hidden} is not a multiple of the {channels} colour channels of the images: use hidden={rounded}")
            notes.append(f"hidden={rounded}: the feature maps split into {channels} colour groups (R, G, B), so {hidden} was rounded up")
            hidden = rounded
        return fit_fields(replace(self, hidden=hidden), shape, classes), notes


def context(config: PixelCNNConfig) -> tuple[int, int]:
    """(rows above, columns to either side) that the logits of a pixel see. The gated vertical
    stack starts one row up (its input is shifted down a row) and each layer widens the view by
    the kernel's radius; the plain stack's first conv already covers the current row."""
    r_first, r = config.first_kernel // 2, config.kernel // 2
    reach = r_first + config.layers * r
    return (1 if config.gated else 0) + reach, reach


# -------------------------------------------------------------------------------------------------
# the two stacks: whole images (forward), and one pixel at a time from cached rows (pixel)


def _flat(weight: Tensor) -> Tensor:
    """A conv weight (O, I, kh, kw) as a matrix (I*kh*kw, O), for one pixel's patch (B, I*kh*kw)."""
    return weight.detach().flatten(1).t().contiguous()


def _next_row(window: Tensor) -> None:
    """Move a window of rows (B, maps, rows, width) up by one row; the new last row is zeros."""
    window[:, :, :-1] = window[:, :, 1:].clone()
    window[:, :, -1] = 0


class PlainStack(nn.Module):
    """Mask-A k0 x k0 conv with a label bias, then `layers` residual blocks. Caches: per block, its
    ReLU'd input on the rows its conv sees, (B, F, r+1, W+2r); per row, each conv's bias plus its
    label bias, (B, L+1, F)."""

    def __init__(self, config: PixelCNNConfig):
        super().__init__()
        r, groups = config.first_kernel // 2, colour_groups(config.hidden, config.channels)
        self.radius = r
        self.first = MaskedConv2d(torch.arange(config.channels), groups, (r + 1, config.first_kernel), center=r, strict=True)
        self.label = nn.Embedding(config.num_classes, config.hidden) if config.num_classes else None
        self.blocks = nn.ModuleList(ResidualBlock(config) for _ in range(config.layers))

    def forward(self, x: Tensor, label: Tensor | None) -> Tensor:
        """x: (B, C, H, W) scaled image -> (B, F, H, W)."""
        r = self.radius
        h = self.first(F.pad(x, (r, r, r, 0)))  # (B, F, H, W)
        if self.label is not None:
            h = h + self.label(label)[:, :, None, None]
        for block in self.blocks:
            h = block(h, label)
        return h

    def step_weights(self) -> list:
        blocks = [(_flat(b.conv.masked_weight()), _flat(b.out.masked_weight()), b.out.bias.detach()) for b in self.blocks]
        return [_flat(self.first.masked_weight()), *blocks]

    def new_caches(self, labels: Tensor | None, canvas: Tensor) -> dict[str, list[Tensor]]:
        B, W = canvas.shape[0], canvas.shape[3] - 2 * self.radius
        convs, embeddings = [self.first] + [b.conv for b in self.blocks], [self.label] + [b.label for b in self.blocks]
        bias = torch.stack([conv.bias.detach() for conv in convs]).expand(B, -1, -1)  # (B, L+1, F)
        if labels is not None:  # each conv's bias plus its label bias
            bias = bias + torch.stack([e.weight.detach()[labels] for e in embeddings], 1)
        windows = [canvas.new_zeros(B, b.conv.out_channels, b.radius + 1, W + 2 * b.radius) for b in self.blocks]
        return {"bias": [bias.contiguous()], "windows": windows}

    def begin_row(self, state: "PixelCNNState", i: int) -> None:
        for window in state.caches["windows"]:
            _next_row(window)

    def pixel(self, state: "PixelCNNState", i: int, j: int) -> Tensor:
        """The last hidden maps (B, F) at pixel (i, j), from the canvas and the rows cached above."""
        r, B = self.radius, state.canvas.shape[0]
        w_first, *blocks = state.weights.stack
        bias = state.caches["bias"][0]  # (B, L+1, F)
        patch = state.canvas[:, :, i + 1 : i + r + 2, j : j + 2 * r + 1]  # (B, C, r+1, k0): image rows i-r..i
        h = torch.addmm(bias[:, 0], patch.reshape(B, -1), w_first)  # (B, F)
        for n, (window, block, (w_conv, w_out, b_out)) in enumerate(zip(state.caches["windows"], self.blocks, blocks, strict=True), 1):
            rb = block.radius
            window[:, :, rb, j + rb] = h.relu()  # the current pixel of this block's input
            patch = window[:, :, :, j : j + 2 * rb + 1].reshape(B, -1)  # (B, F*(r+1)*k)
            a = torch.addmm(bias[:, n], patch, w_conv).relu_()
            h = h + torch.addmm(b_out, a, w_out)
        return h


class GatedStack(nn.Module):
    """`layers` + 1 gated layers. Caches, per row: each layer's horizontal bias (conv + label +
    link from the vertical stack) at every column, (B, W, L+1, 2F); per layer after the first, its
    vertical input on rows i-r..i, (B, F, r+1, W+2r), and its horizontal input on row i, (B, F, W+r)."""

    def __init__(self, config: PixelCNNConfig):
        super().__init__()
        layers = [GatedLayer(config, first=True)] + [GatedLayer(config, first=False) for _ in range(config.layers)]
        self.layers = nn.ModuleList(layers)
        self.radius = layers[0].radius

    def forward(self, x: Tensor, label: Tensor | None) -> Tensor:
        """x: (B, C, H, W) scaled image -> (B, F, H, W)."""
        v, h = F.pad(x, (0, 0, 1, -1)), x  # shifted down one row: the vertical stack's row i sees rows < i
        for layer in self.layers:
            v, h = layer(v, h, label)
        return h

    def step_weights(self) -> list:
        return [
            (layer.vertical.weight.detach(), layer.link.weight.detach(), _flat(layer.horizontal.masked_weight()),
             _flat(layer.out.masked_weight()), layer.out.bias.detach())
            for layer in self.layers
        ]

    def new_caches(self, labels: Tensor | None, canvas: Tensor) -> dict[str, list[Tensor]]:
        B, W = canvas.shape[0], canvas.shape[3] - 2 * self.radius

        def bias(conv: str, embedding: str) -> Tensor:  # (B, L+1, 2F): each layer's conv bias plus its label bias
            b = torch.stack([getattr(layer, conv).bias.detach() for layer in self.layers]).expand(B, -1, -1)
            if labels is not None:
                b = b + torch.stack([getattr(layer, embedding).weight.detach()[labels] for layer in self.layers], 1)
            return b.contiguous()

        later, gates = self.layers[1:], 2 * self.layers[0].out.out_channels
        return {
            "vertical_bias": [bias("vertical", "label_vertical")],
            "horizontal_bias": [bias("horizontal", "label_horizontal")],
            "links": [canvas.new_zeros(B, W, len(self.layers), gates)],
            "vertical": [canvas.new_zeros(B, layer.out.out_channels, layer.radius + 1, W + 2 * layer.radius) for layer in later],
            "horizontal": [canvas.new_zeros(B, layer.out.out_channels, W + layer.radius) for layer in later],
        }

    def begin_row(self, state: "PixelCNNState", i: int) -> None:
        """Run the vertical stack over row i; keep, per layer, the horizontal stack's bias there."""
        r, caches = self.radius, state.caches
        v_bias, h_bias = caches["vertical_bias"][0], caches["horizontal_bias"][0]  # (B, L+1, 2F)
        x = state.canvas[:, :, i : i + r + 1]  # (B, C, r+1, W+2r): image rows i-r-1 .. i-1
        links = []
        for n, (w_vertical, w_link, *_) in enumerate(state.weights.stack):
            a = F.conv2d(x, w_vertical) + v_bias[:, n, :, None, None]  # (B, 2F, 1, W)
            links.append(F.conv2d(a, w_link)[:, :, 0] + h_bias[:, n, :, None])  # (B, 2F, W)
            if n + 1 < len(self.layers):  # the last layer's vertical output goes nowhere
                window, rv = caches["vertical"][n], self.layers[n + 1].radius  # next layer's input, rows i-rv..i
                _next_row(window)
                window[:, :, -1, rv : window.shape[3] - rv] = gate(a)[:, :, 0]
                x = window
        caches["links"][0].copy_(torch.stack(links, 1).permute(0, 3, 1, 2))  # (B, W, L+1, 2F)

    def pixel(self, state: "PixelCNNState", i: int, j: int) -> Tensor:
        """The last hidden maps (B, F) at pixel (i, j), from the canvas and the cached rows."""
        r, B = self.radius, state.canvas.shape[0]
        links = state.caches["links"][0][:, j]  # (B, L+1, 2F)
        x = state.canvas[:, :, i + r + 1, j : j + r + 1].reshape(B, -1)  # (B, C*(r+1)): row i, columns j-r..j
        h = None
        for n, (*_, w_horizontal, w_out, b_out) in enumerate(state.weights.stack):
            out = torch.addmm(b_out, gate(torch.addmm(links[:, n], x, w_horizontal)), w_out)  # (B, F)
            h = out if h is None else h + out
            if n + 1 < len(self.layers):  # h is the next layer's horizontal input at column j
                window, rh = state.caches["horizontal"][n], self.layers[n + 1].radius  # (B, F, rh+W)
                window[:, :, j + rh] = h
                x = window[:, :, j : j + rh + 1].reshape(B, -1)  # (B, F*(rh+1)): columns j-rh..j
        return h


# -------------------------------------------------------------------------------------------------
# model


class PixelCNN(nn.Module):
    eos_id = None  # fixed-length output: height * width * channels tokens

    def __init__(self, config: PixelCNNConfig):
        super().__init__()
        self.config = config
        self.vocab_size = config.levels
        self.stack = GatedStack(config) if config.gated else PlainStack(config)
        C, levels = config.channels, config.levels
        self.head = nn.Sequential(nn.ReLU(), pointwise(config), nn.ReLU(), pointwise(config, colour_groups(C * levels, C)))

    @property
    def sequence_length(self) -> int:
        """Tokens per image: T = height * width * channels."""
        return self.config.height * self.config.width * self.config.channels

    def forward(self, tokens: Tensor, condition: object = None) -> Tensor:
        """tokens: (B, T) sub-pixel values in raster order, R G B within a pixel; condition: class
        labels (B,) or None -> logits (B, T, levels); logits[:, t] predict tokens[:, t] from tokens[:, :t]."""
        c = self.config
        if tokens.dim() != 2 or tokens.shape[1] != self.sequence_length:
            raise ValueError(f"expected tokens of shape (B, {self.sequence_length}) for {c.height}x{c.width}x{c.channels} images, got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= c.levels):
            raise ValueError(f"tokens must lie in [0, {c.levels})")
        B = tokens.shape[0]
        label = self._labels(condition, B)
        image = tokens.reshape(B, c.height, c.width, c.channels).permute(0, 3, 1, 2)  # (B, C, H, W)
        logits = self.head(self.stack(self._scale(image), label))  # (B, C*levels, H, W)
        logits = logits.view(B, c.channels, c.levels, c.height, c.width).permute(0, 3, 4, 1, 2)  # (B, H, W, C, levels)
        return logits.reshape(B, self.sequence_length, c.levels)

    def _scale(self, tokens: Tensor) -> Tensor:
        """Sub-pixel values 0 .. levels-1 -> [-1, 1], in the parameters' dtype."""
        return tokens.to(self.head[1].weight.dtype) * (2 / (self.config.levels - 1)) - 1

    def _labels(self, condition: object, batch_size: int) -> Tensor | None:
        """Check `condition` -> class labels (B,) on the model's device, or None (unconditional)."""
        n = self.config.num_classes
        if n == 0:
            if condition is not None:
                raise OptionError("this PixelCNN is unconditional: it takes no class label")
            return None
        if condition is None:
            raise OptionError(f"this PixelCNN is class-conditional: give a class label in [0, {n})")
        labels = torch.as_tensor(condition, device=self.head[1].weight.device)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise OptionError(f"class labels must be integers, got {labels.dtype}")
        if labels.dim() == 0 or labels.shape == (1,):
            labels = labels.reshape(1).expand(batch_size)  # one label for every row
        if labels.shape != (batch_size,):
            raise OptionError(f"expected {batch_size} class labels, got shape {tuple(labels.shape)}")
        if int(labels.min()) < 0 or int(labels.max()) >= n:
            raise OptionError(f"class labels must lie in [0, {n}), got {sorted(set(labels.tolist()))}")
        return labels.long()

    # --- incremental view ---

    @torch.inference_mode()
    def start(self, batch_size: int, condition: object = None) -> "PixelCNNState":
        """Fresh state for `batch_size` rows: an empty (all mid-grey) canvas and zero caches."""
        if batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {batch_size}")
        c, labels = self.config, self._labels(condition, batch_size)
        r = c.first_kernel // 2
        canvas = self.head[1].weight.new_zeros(batch_size, c.channels, r + 1 + c.height, r + c.width + r)
        hidden, out = self.head[1], self.head[3]
        w_out = [w.contiguous() for w in _flat(out.masked_weight()).view(c.hidden, c.channels, c.levels).unbind(1)]  # (F, levels) each
        head = (_flat(hidden.masked_weight()), hidden.bias.detach(), w_out, out.bias.detach().view(c.channels, c.levels))
        weights = _StepWeights(self.stack.step_weights(), head)
        return PixelCNNState(canvas, labels, self.stack.new_caches(labels, canvas), 0, weights)

    @torch.inference_mode()
    def step(self, state: "PixelCNNState", tokens: Tensor | None) -> tuple[Tensor, "PixelCNNState"]:
        """tokens: (B,) the previous sub-pixel of each row, None at the first step -> logits of the
        next sub-pixel (B, levels), and the state (updated in place)."""
        c, t = self.config, state.position
        if t >= self.sequence_length:
            raise ValueError(f"the image is complete: all {self.sequence_length} tokens have been given")
        if (tokens is None) != (t == 0):
            raise ValueError("step takes None at the first step, then the previous token of each row")
        r = c.first_kernel // 2
        if tokens is not None:
            if tokens.shape != state.canvas.shape[:1]:
                raise ValueError(f"expected tokens of shape {tuple(state.canvas.shape[:1])}, got {tuple(tokens.shape)}")
            pixel, channel = divmod(t - 1, c.channels)
            state.canvas[:, channel, pixel // c.width + r + 1, pixel % c.width + r] = self._scale(tokens)
        pixel, channel = divmod(t, c.channels)
        i, j = divmod(pixel, c.width)
        if j == 0 and channel == 0:
            self.stack.begin_row(state, i)
        h = self.stack.pixel(state, i, j)  # (B, F); group `channel` saw sub-pixels < channel of (i, j)
        w_hidden, b_hidden, w_out, b_out = state.weights.head
        hidden = torch.addmm(b_hidden, h.relu(), w_hidden).relu_()  # (B, F)
        state.position += 1
        return torch.addmm(b_out[channel], hidden, w_out[channel]), state  # (B, levels)

    @torch.inference_mode()
    def reorder(self, state: "PixelCNNState", index: Tensor) -> "PixelCNNState":
        """New state whose row i continues old row index[i] (keep, permute or duplicate rows)."""
        index = index.to(state.canvas.device)
        if index.dim() != 1 or index.numel() == 0:
            raise ValueError(f"reorder index must be a non-empty 1-d tensor, got shape {tuple(index.shape)}")
        caches = {name: [x.index_select(0, index) for x in tensors] for name, tensors in state.caches.items()}
        labels = None if state.labels is None else state.labels.index_select(0, index)
        return PixelCNNState(state.canvas.index_select(0, index), labels, caches, state.position, state.weights)


# -------------------------------------------------------------------------------------------------
# incremental state


@dataclass
class _StepWeights:
    """The parameters as matrices for one-pixel steps, taken at `start()`; shared by all rows."""

    stack: list  # per layer, as the stack's step_weights() lays them out
    head: tuple  # hidden (F, F), its bias, per sub-pixel c the output (F, levels), its bias (C, levels)


@dataclass
class PixelCNNState:
    """Decoding state of B rows. `step` updates it in place and returns it, so a state must not be
    stepped twice; `reorder` returns a new, independent one. Every tensor but the weights has the
    batch first."""

    canvas: Tensor  # (B, C, r+1+H, r+W+r), r = first_kernel // 2: the image so far in [-1, 1], zero-padded
    labels: Tensor | None  # (B,) class labels of a conditional model
    caches: dict[str, list[Tensor]]  # per-row label biases and the rows each layer's convs see (see the stacks)
    position: int  # tokens whose logits were given so far
    weights: _StepWeights
