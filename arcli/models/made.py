"""MADE, the masked autoencoder for distribution estimation (Germain et al. 2015), on binary images.

An autoencoder x -> hidden layers -> one logit per pixel becomes autoregressive by masking its
weights. An ordering gives every pixel d a rank m(d) in 1..n (its position in the ordering); every
hidden unit k of layer l gets a degree m_l(k) in [min m_{l-1}, n-1] (its connectivity); then

    unit k of layer 1 sees pixel d        iff  m_1(k) >= m(d)
    unit k of layer l sees unit j of l-1  iff  m_l(k) >= m_{l-1}(j)
    pixel d's logit sees unit k of layer L iff  m(d) > m_L(k)

so the logit of pixel d depends only on pixels of lower rank: p(x) = prod_d p(x_d | x_{m < m(d)}).

`orderings = K` draws K (ordering, connectivity) pairs from `seed` (the first ordering is raster
order, the others random permutations) and stores them in the checkpoint. Training uses one of
them per batch, drawn at random (or, with `order_agnostic`, a new random pair per batch, so that
the model learns every ordering, not K of them); the model of the whole checkpoint is the uniform mixture
p(x) = (1/K) sum_k p_k(x), which is what `score-likelihood` reports (the log of the mean
probability over the K orderings). `forward(..., ordering=k)` gives one ordering's logits.

The incremental view is the exception DESIGN.md allows: no cheap cache covers the whole network,
since a new pixel changes every later hidden unit through the ReLUs. `step` keeps the first layer's
pre-activations and adds one column per pixel (the NADE recursion, O(H_1)), and recomputes the
layers after the first for the one pixel it predicts: O(H_1 + sum H_l H_{l-1} + H_L) per pixel
instead of a whole forward pass, O(n H_1 + ...). benchmarks/binary_generation.py measures it.

`in_order(k)` or `in_order(permutation)` gives a model whose sequence positions follow that
ordering (step t predicts pixel order[t]), so the engine can generate in any order: an ordering
that puts every known pixel first completes any mask exactly. A permutation that is not one of the
K takes the connectivity of the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arcli.image.binary import BinaryImageConfig, bernoulli_logits, check_step, check_tokens, class_labels


class Ordering(NamedTuple):
    order: Tensor  # (n,) long: order[t] is the pixel at position t
    degrees: list[Tensor]  # per hidden layer, (H_l,) long: each unit's connectivity in 1 .. n-1


def masks(ordering: Ordering, pixels: int) -> list[Tensor]:
    """The masks of one ordering, float: per hidden layer (H_l, H_{l-1} or n), then the output (n, H_L)."""
    rank = torch.empty_like(ordering.order)
    rank[ordering.order] = torch.arange(1, pixels + 1, device=rank.device)  # m(d): pixel d's position, 1-based
    found, previous = [], rank
    for degrees in ordering.degrees:
        found.append((degrees[:, None] >= previous[None, :]).float())
        previous = degrees
    found.append((rank[:, None] > previous[None, :]).float())
    return found


def draw_ordering(pixels: int, hidden: list[int], generator: torch.Generator, raster: bool = False) -> Ordering:
    """A random permutation (raster order if `raster`) and connectivity: degrees uniform in
    [min of the layer below, n-1] (1 for the first layer)."""
    device = generator.device
    order = torch.arange(pixels, device=device) if raster else torch.randperm(pixels, generator=generator, device=device)
    degrees, low = [], 1
    for size in hidden:
        layer = torch.randint(low, pixels, (size,), generator=generator, device=device)  # low .. n-1
        degrees.append(layer)
        low = int(layer.min())
    return Ordering(order, degrees)


def draw_orderings(count: int, pixels: int, hidden: list[int], seed: int) -> list[Ordering]:
    """`count` (ordering, connectivity) pairs from `seed`: raster order first, then random permutations."""
    generator = torch.Generator().manual_seed(seed)
    return [draw_ordering(pixels, hidden, generator, raster=k == 0) for k in range(count)]


@dataclass
class MADEConfig(BinaryImageConfig):
    hidden: list[int] = field(default_factory=lambda: [500])  # units per hidden layer (ReLU); the paper's small model
    orderings: int = 1  # K (ordering, connectivity) pairs, one drawn per training batch; 1 = raster order only
    seed: int = 0  # draws the orderings and connectivities (stored in the checkpoint too)
    order_agnostic: bool = False  # True: each training batch draws a new random ordering and connectivity instead of one of the K

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.hidden or any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"MADEConfig.hidden must be a non-empty list of layer sizes >= 1, got {self.hidden}")
        if self.orderings < 1:
            raise ValueError(f"MADEConfig.orderings must be >= 1 (the orderings trained on), got {self.orderings}")

    def training_ordering(self, generator: torch.Generator) -> int | Ordering | None:
        """What one training batch trains (the image task draws it with the data's generator): one
        of the K stored orderings, a fresh one (order-agnostic training, Uria et al. 2014: the model
        then works in any ordering, which exact completion uses), or None (raster order, K = 1)."""
        if self.order_agnostic:
            return draw_ordering(self.pixels, self.hidden, generator)
        if self.orderings > 1:
            return int(torch.randint(self.orderings, (), generator=generator, device=generator.device))
        return None

    def describe(self) -> dict[str, str]:
        layers = " -> ".join(str(h) for h in self.hidden)
        scored = "raster order" if self.orderings == 1 else \
            f"the uniform mixture of {self.orderings} orderings (raster + {self.orderings - 1} random): log of the mean probability"
        return {
            "architecture": f"MADE: masked autoencoder, hidden layers {layers} (ReLU)",
            "orderings": f"{self.orderings}, " + ("trained on a new random ordering per batch (order-agnostic)" if self.order_agnostic
                                                  else "one drawn per training batch") + f"; scored and sampled as {scored}",
            "sampling cost": "step keeps the first layer's pre-activations (O(H_1)) and recomputes the later layers for one pixel",
        }


class MADEState(NamedTuple):
    pre: Tensor  # (B, H_1): the first layer's pre-activations from the pixels given so far
    position: int  # pixels whose logits were given so far
    order: Tensor  # (n,) the ordering being generated in
    weights: list[Tensor]  # the masked weights of this ordering: per layer (H_l, ...), then the output (n, H_L)
    biases: list[Tensor]  # per layer after the first, (B, H_l), then the output's (B, n), labels included


class MADE(nn.Module):
    eos_id = None  # fixed-length output: height * width pixels
    vocab_size = 2

    def __init__(self, config: MADEConfig):
        super().__init__()
        self.config = config
        n, sizes = config.pixels, [config.pixels, *config.hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.out = nn.Linear(sizes[-1], n)
        c = config.num_classes
        self.labels = nn.ModuleList(nn.Embedding(c, size) for size in sizes[1:] + [n]) if c else None
        if self.labels is not None:
            for embedding in self.labels:
                nn.init.zeros_(embedding.weight)
        drawn = draw_orderings(config.orderings, n, config.hidden, config.seed)
        self.register_buffer("order", torch.stack([o.order for o in drawn]))  # (K, n)
        for layer in range(len(config.hidden)):
            self.register_buffer(f"degrees_{layer}", torch.stack([o.degrees[layer] for o in drawn]))  # (K, H_l)

    @property
    def sequence_length(self) -> int:
        return self.config.pixels

    @property
    def orderings(self) -> int:
        return self.config.orderings

    def ordering(self, which: int | Tensor | Ordering) -> Ordering:
        """Stored ordering k, a permutation (n,) with the first ordering's connectivity, or as given."""
        if isinstance(which, Ordering):
            return which
        first = 0 if isinstance(which, Tensor) else int(which)
        if not 0 <= first < self.config.orderings:
            raise ValueError(f"ordering {first} is out of range: this MADE has {self.config.orderings}")
        degrees = [getattr(self, f"degrees_{layer}")[first] for layer in range(len(self.config.hidden))]
        if isinstance(which, Tensor):
            order = which.to(self.order.device).long()
            if sorted(order.tolist()) != list(range(self.config.pixels)):
                raise ValueError(f"an ordering must be a permutation of the {self.config.pixels} pixels")
            return Ordering(order, degrees)
        return Ordering(self.order[first], degrees)

    def masked_weights(self, ordering: Ordering) -> list[Tensor]:
        found = masks(ordering, self.config.pixels)
        linears = [*self.layers, self.out]
        return [linear.weight * mask.to(linear.weight.dtype) for linear, mask in zip(linears, found, strict=True)]

    def _biases(self, labels: Tensor | None, batch_size: int) -> list[Tensor]:
        """Per layer and the output, (B, size): its bias plus the label's."""
        biases = [linear.bias.expand(batch_size, -1) for linear in [*self.layers, self.out]]
        if labels is not None:
            biases = [b + embedding(labels) for b, embedding in zip(biases, self.labels, strict=True)]
        return biases

    def forward(self, tokens: Tensor, condition: object = None, ordering: int | Tensor | Ordering = 0) -> Tensor:
        """tokens: (B, n) pixels 0/1 in raster order; condition: class labels (B,) or None ->
        logits (B, n, 2); logits[:, d] predict pixel d from the pixels before it in `ordering`."""
        check_tokens(tokens, self.config.pixels, self.config)
        B = tokens.shape[0]
        labels = class_labels(condition, B, self.config.num_classes, self.out.weight.device, "MADE")
        *hidden, out = self.masked_weights(self.ordering(ordering))
        *hidden_bias, out_bias = self._biases(labels, B)
        h = tokens.to(self.out.weight.dtype)
        for weight, bias in zip(hidden, hidden_bias, strict=True):
            h = F.relu(h @ weight.t() + bias)  # (B, H_l)
        return bernoulli_logits(h @ out.t() + out_bias)  # (B, n, 2)

    # --- incremental view ---

    def in_order(self, which: int | Tensor | Ordering) -> MADEInOrder:
        """This model with its sequence positions in the given ordering (see the module docstring)."""
        return MADEInOrder(self, self.ordering(which))

    @torch.inference_mode()
    def start(self, batch_size: int, condition: object = None, ordering: int | Tensor | Ordering = 0) -> MADEState:
        """Fresh state for generating in `ordering` (raster order by default)."""
        chosen = self.ordering(ordering)
        labels = class_labels(condition, batch_size, self.config.num_classes, self.out.weight.device, "MADE")
        first, *later = self._biases(labels, batch_size)
        return MADEState(first.clone(), 0, chosen.order, self.masked_weights(chosen), [b.contiguous() for b in later])

    @torch.inference_mode()
    def step(self, state: MADEState, tokens: Tensor | None) -> tuple[Tensor, MADEState]:
        """tokens: (B,) the previous pixel of each row (in the state's ordering), None at the first
        step -> logits (B, 2) of the next pixel, order[position], and the new state."""
        pre, t, order, weights, biases = state
        check_step(t, self.config.pixels, tokens, pre.shape[0])
        first, *hidden, out = weights
        if tokens is not None:
            pre = pre + tokens.to(pre.dtype)[:, None] * first[:, order[t - 1]]  # the new pixel's column
        h = F.relu(pre)
        for weight, bias in zip(hidden, biases[:-1], strict=True):
            h = F.relu(torch.addmm(bias, h, weight.t()))  # recomputed: no cheap cache past the first layer
        pixel = order[t]
        a = biases[-1][:, pixel] + h @ out[pixel]  # (B,)
        return bernoulli_logits(a), MADEState(pre, t + 1, order, weights, biases)

    @torch.inference_mode()
    def reorder(self, state: MADEState, index: Tensor) -> MADEState:
        index = index.to(state.pre.device)
        return state._replace(pre=state.pre.index_select(0, index), biases=[b.index_select(0, index) for b in state.biases])


class MADEInOrder(nn.Module):
    """A MADE whose sequence positions follow one ordering: position t is pixel order[t]. Tokens in
    and out are in that order; `to_raster` puts them back."""

    eos_id = None
    vocab_size = 2

    def __init__(self, made: MADE, ordering: Ordering):
        super().__init__()
        self.made, self.chosen = made, ordering
        self.config = made.config
        self.order = ordering.order  # (n,)
        self.inverse = torch.argsort(ordering.order)  # (n,): raster pixel d is at position inverse[d]

    @property
    def sequence_length(self) -> int:
        return self.made.sequence_length

    def to_raster(self, tokens: Tensor) -> Tensor:
        """(B, n) in this ordering -> (B, n) in raster order."""
        return tokens[:, self.inverse.to(tokens.device)]

    def from_raster(self, tokens: Tensor) -> Tensor:
        return tokens[:, self.order.to(tokens.device)]

    def forward(self, tokens: Tensor, condition: object = None) -> Tensor:
        """tokens (B, n) in this ordering -> logits (B, n, 2) in this ordering."""
        logits = self.made(self.to_raster(tokens), condition, ordering=self.chosen)  # (B, n, 2) raster
        return logits[:, self.order.to(logits.device)]

    def start(self, batch_size: int, condition: object = None) -> MADEState:
        return self.made.start(batch_size, condition, ordering=self.chosen)

    def step(self, state: MADEState, tokens: Tensor | None) -> tuple[Tensor, MADEState]:
        return self.made.step(state, tokens)

    def reorder(self, state: MADEState, index: Tensor) -> MADEState:
        return self.made.reorder(state, index)
