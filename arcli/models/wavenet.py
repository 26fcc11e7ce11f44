"""WaveNet (van den Oord et al. 2016) over 8-bit mu-law audio, with Fast WaveNet generation.

Two views of one distribution p(x_t | x_<t, speaker):
- `forward` runs the causal dilated convolutions over a whole sequence (training, scoring);
- `start`/`step`/`reorder` generate one sample at a time with per-layer ring buffers of past layer
  inputs (Paine et al. 2016, "Fast WaveNet"), so a step costs the same whatever the receptive field.

Shift convention: the network's input at position t is x_{t-1} (a zero vector at t = 0), so
`forward(x)[:, t]` are the logits of x_t given x_<t, and the first `step(state, None)` gives x_0's.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arcli.errors import OptionError

# -------------------------------------------------------------------------------------------------
# building blocks


class ResidualBlock(nn.Module):
    """Dilated causal conv (kernel 2) -> gated tanh*sigmoid unit -> 1x1 residual and 1x1 skip."""

    def __init__(self, config: "WaveNetConfig", dilation: int, last: bool = False):
        super().__init__()
        R, D, S = config.residual_channels, config.dilation_channels, config.skip_channels
        self.dilation = dilation
        # weight[:, :, 0] multiplies x_{t-dilation}, weight[:, :, 1] multiplies x_t.
        self.conv = nn.Conv1d(R, 2 * D, kernel_size=2, dilation=dilation)
        # Global conditioning: a per-speaker bias on the filter and gate pre-activations.
        self.speaker = nn.Embedding(config.num_speakers, 2 * D) if config.num_speakers else None
        # No bias: a constant on the residual stream is absorbed by the next conv's bias (all but
        # the zero padding before the start). The last block's residual output would go unused.
        self.residual = None if last else nn.Conv1d(D, R, kernel_size=1, bias=False)
        self.skip = nn.Conv1d(D, S, kernel_size=1)

    def forward(self, x: Tensor, speaker: Tensor | None) -> tuple[Tensor, Tensor]:
        """x: (B, R, T), speaker: (B,) or None -> next block's input (B, R, T), skip (B, S, T)."""
        a = self.conv(F.pad(x, (self.dilation, 0)))  # (B, 2D, T), causal: left zero padding
        if self.speaker is not None:
            a = a + self.speaker(speaker).unsqueeze(-1)  # (B, 2D, 1)
        filt, gate = a.chunk(2, dim=1)  # (B, D, T) each
        z = torch.tanh(filt) * torch.sigmoid(gate)
        return (x if self.residual is None else x + self.residual(z)), self.skip(z)


# -------------------------------------------------------------------------------------------------
# config


@dataclass
class WaveNetConfig:
    quantization_channels: int = 256  # vocabulary: 8-bit mu-law codes
    residual_channels: int = 32  # residual stream width; 32 keeps a CPU step near 10k samples/s
    dilation_channels: int = 32  # gated units per layer (filter and gate each)
    skip_channels: int = 128  # skips are summed over all layers, so wider than one layer
    end_channels: int = 128  # hidden width of the ReLU-1x1-ReLU-1x1 output head
    layers_per_stack: int = 10  # dilations 1,2,...,512 -> receptive field 1024 per stack (kernel 2)
    stacks: int = 2  # receptive field 2047 samples = 128 ms at 16 kHz
    num_speakers: int = 0  # 0 = unconditional; >0 = global conditioning on a speaker id
    sample_rate: int = 16000  # the data's rate; informational (receptive field in ms)

    def __post_init__(self) -> None:
        for name in ("quantization_channels", "residual_channels", "dilation_channels", "skip_channels",
                     "end_channels", "layers_per_stack", "stacks", "sample_rate"):
            if getattr(self, name) < 1:
                raise ValueError(f"WaveNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_speakers < 0:
            raise ValueError(f"WaveNetConfig.num_speakers must be >= 0, got {self.num_speakers}")


# -------------------------------------------------------------------------------------------------
# model


class WaveNet(nn.Module):
    eos_id = None  # fixed-length output: the caller says how many samples

    def __init__(self, config: WaveNetConfig):
        super().__init__()
        self.config = config
        self.vocab_size = config.quantization_channels
        # An embedding is a 1x1 conv over one-hot mu-law codes, without building the one-hots.
        self.embed = nn.Embedding(config.quantization_channels, config.residual_channels)
        n = config.stacks * config.layers_per_stack
        self.blocks = nn.ModuleList(
            ResidualBlock(config, dilation=2 ** (i % config.layers_per_stack), last=i == n - 1) for i in range(n)
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(config.skip_channels, config.end_channels, kernel_size=1),
            nn.ReLU(),
            nn.Conv1d(config.end_channels, config.quantization_channels, kernel_size=1),
        )

    @property
    def receptive_field(self) -> int:
        """Samples the logits at position t depend on: x_{t-receptive_field} .. x_{t-1}."""
        return sum(block.dilation for block in self.blocks) + 1

    def forward(self, tokens: Tensor, condition: object = None) -> Tensor:
        """tokens: (B, T) mu-law codes, condition: speaker ids (B,) or None -> logits (B, T, V);
        logits[:, t] predict tokens[:, t] from tokens[:, :t]."""
        B, T = tokens.shape
        speaker = self._speakers(condition, B)
        x = self.embed(tokens[:, :-1]).transpose(1, 2)  # (B, R, T-1)
        x = F.pad(x, (1, 0))  # (B, R, T): the input at t is x_{t-1}, "nothing" (zeros) at t = 0
        skip = 0
        for block in self.blocks:
            x, s = block(x, speaker)
            skip = skip + s  # (B, S, T)
        return self.head(skip).transpose(1, 2)  # (B, T, V)

    def _speakers(self, condition: object, batch_size: int) -> Tensor | None:
        """Check `condition` -> speaker ids (B,) on the model's device, or None (unconditional)."""
        n = self.config.num_speakers
        if n == 0:
            if condition is not None:
                raise OptionError("this WaveNet is unconditional: it takes no speaker id")
            return None
        if condition is None:
            raise OptionError(f"this WaveNet is conditioned on a speaker: give a speaker id in [0, {n})")
        ids = torch.as_tensor(condition, device=self.embed.weight.device)
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise OptionError(f"speaker ids must be integers, got {ids.dtype}")
        if ids.dim() == 0 or ids.shape == (1,):
            ids = ids.reshape(1).expand(batch_size)  # one speaker for every row
        if ids.shape != (batch_size,):
            raise OptionError(f"expected {batch_size} speaker ids, got shape {tuple(ids.shape)}")
        if int(ids.min()) < 0 or int(ids.max()) >= n:
            raise OptionError(f"speaker ids must lie in [0, {n}), got {sorted(set(ids.tolist()))}")
        return ids.long()

    # --- incremental view (Fast WaveNet); the fast path's internals are at the end of the file ---

    @torch.no_grad()
    def start(self, batch_size: int, condition: object = None) -> "WaveNetState":
        """Fresh state for `batch_size` rows: zero queues, as the convolutions' zero padding."""
        if batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {batch_size}")
        speaker = self._speakers(condition, batch_size)
        weights = _StepWeights(self)  # from the parameters as they are now
        bias = weights.bias[:, None, :].expand(-1, batch_size, -1)  # (L, B, 2D+R)
        if speaker is not None:
            bias = bias + weights.speaker[:, speaker]  # (L, B, 2D+R)
        queue = weights.first.new_zeros(weights.queue_length, batch_size, self.config.residual_channels)
        return WaveNetState(queue, bias.contiguous(), 0, weights, _Scratch(weights, batch_size))

    @torch.no_grad()
    def step(self, state: "WaveNetState", tokens: Tensor | None) -> tuple[Tensor, "WaveNetState"]:
        """tokens: (B,) the previous sample of each row, None at the first step -> logits of the
        next sample (B, V), and the state (updated in place)."""
        w, s = state.weights, state.scratch
        slots = w.slots[state.position % w.period]  # (L,) queue rows holding x_{t-dilation}
        torch.index_select(state.queue, 0, slots, out=s.past)  # (L, B, R)
        torch.baddbmm(state.bias, s.past, w.past, out=s.preact)  # (L, B, 2D+R)
        if tokens is None:
            s.first_a_x.copy_(s.first_preact)  # "nothing" (zeros) before x_0, as in forward
        else:
            if tokens.shape != s.batch_shape:
                raise ValueError(f"expected tokens of shape {tuple(s.batch_shape)}, got {tuple(tokens.shape)}")
            torch.index_select(w.first, 0, tokens, out=s.first)  # (B, 2D+R)
            torch.add(s.first_preact, s.first, out=s.first_a_x)
        for act, filt, gate, gated, x_z, fused, preact, a_x in s.layers:
            act.tanh_()
            torch.addcmul(filt, filt, gate, out=gated)  # 2 tanh(f) sigmoid(g): (B, D)
            torch.addmm(preact, x_z, fused, out=a_x)  # the next layer's [a | x]: (B, 2D+R)
        act, filt, gate, gated = s.last_layer
        act.tanh_()
        torch.addcmul(filt, filt, gate, out=gated)
        state.queue.index_copy_(0, slots, s.inputs)  # x_t replaces x_{t-dilation}
        state.position += 1
        s.gated.copy_(s.gated_rows)  # (B, L, D)
        torch.addmm(w.skip_bias, s.gated_flat, w.skip, out=s.skip).relu_()  # (B, S)
        torch.addmm(w.hidden_bias, s.skip, w.hidden, out=s.hidden).relu_()  # (B, E)
        return torch.addmm(w.out_bias, s.hidden, w.out), state  # (B, V)

    @torch.no_grad()
    def reorder(self, state: "WaveNetState", index: Tensor) -> "WaveNetState":
        """New state whose row i continues old row index[i] (keep, permute or duplicate rows)."""
        index = index.to(state.queue.device)
        if index.dim() != 1 or index.numel() == 0:
            raise ValueError(f"reorder index must be a non-empty 1-d tensor, got shape {tuple(index.shape)}")
        # The scratch holds nothing from one step to the next, so rows of the same count share it.
        same = index.shape[0] == state.queue.shape[1]
        scratch = state.scratch if same else _Scratch(state.weights, index.shape[0])
        return WaveNetState(
            state.queue.index_select(1, index), state.bias.index_select(1, index), state.position, state.weights, scratch
        )


# -------------------------------------------------------------------------------------------------
# Fast WaveNet internals: the state, the parameters laid out for steps, the per-step buffers


@dataclass
class WaveNetState:
    """Decoding state of B rows. `step` updates it in place and returns it, so a state must not be
    stepped twice; `reorder` returns a new, independent one."""

    queue: Tensor  # (sum(dilations), B, R): layer l's ring buffer is rows offset[l] .. + dilation[l]
    bias: Tensor  # (L, B, 2D+R): conv bias + speaker bias per layer and row, laid out as _StepWeights
    position: int  # tokens consumed so far (the initial None counts as one)
    weights: "_StepWeights"
    scratch: "_Scratch"


class _StepWeights:
    """The parameters re-laid out for one-sample steps, derived at `start()` time.

    A step works on one row per layer, [a | x | z]: a (2D) the conv's filter and gate pre-activations,
    x (R) the layer's input, z (D) its gated units. One matmul per layer takes [x | z] of layer l to
    [a | x] of layer l+1 -- the residual 1x1 and the next conv's current tap fused:
        x' = x + z Wr,   a' = bias' + x' W1' = bias' + x W1' + z (Wr W1')
    The past taps of all layers come from one batched matmul at the start of the step, the skip 1x1s
    of all layers from one matmul at the end. The gate uses sigmoid(g) = (1 + tanh(g/2)) / 2, so one
    in-place tanh covers filter and gate: the gate columns are pre-scaled by 1/2, and the 1/2 of the
    product goes into the residual and skip weights.
    """

    def __init__(self, model: WaveNet):
        blocks, R, D = model.blocks, model.config.residual_channels, model.config.dilation_channels
        param = model.embed.weight.detach()  # (V, R)
        scale = torch.cat([param.new_ones(D), param.new_full((D,), 0.5)])  # (2D,)
        now = [b.conv.weight[:, :, 1].detach().t() * scale for b in blocks]  # (R, 2D) each
        residual = [b.residual.weight[:, :, 0].detach().t() * 0.5 for b in blocks[:-1]]  # (D, R) each
        eye = torch.eye(R, dtype=param.dtype, device=param.device)
        self.first = torch.cat([param @ now[0], param], 1)  # (V, 2D+R): token -> [a | x] of layer 0
        self.past = torch.stack([F.pad(b.conv.weight[:, :, 0].detach().t() * scale, (0, R)) for b in blocks])  # (L, R, 2D+R)
        self.bias = torch.stack([F.pad(b.conv.bias.detach() * scale, (0, R)) for b in blocks])  # (L, 2D+R)
        self.speaker = (  # (L, speakers, 2D+R)
            torch.stack([F.pad(b.speaker.weight.detach() * scale, (0, R)) for b in blocks]) if model.config.num_speakers else None
        )
        self.fused = [  # (R+D, 2D+R) each: [x | z] of layer l -> [a | x] of layer l+1
            torch.cat([torch.cat([now[l + 1], eye], 1), torch.cat([residual[l] @ now[l + 1], residual[l]], 1)])
            for l in range(len(blocks) - 1)
        ]
        self.skip = torch.cat([b.skip.weight[:, :, 0].detach().t() * 0.5 for b in blocks])  # (L*D, S)
        self.skip_bias = torch.stack([b.skip.bias.detach() for b in blocks]).sum(0)  # (S,)
        hidden, out = model.head[1], model.head[3]
        self.hidden = hidden.weight[:, :, 0].detach().t().contiguous()  # (S, E)
        self.hidden_bias = hidden.bias.detach()
        self.out = out.weight[:, :, 0].detach().t().contiguous()  # (E, V)
        self.out_bias = out.bias.detach()
        dilations = [b.dilation for b in blocks]
        offsets = torch.tensor([0] + dilations[:-1]).cumsum(0)  # (L,)
        # Dilations are powers of two, so ring positions repeat with period max(dilations): row p
        # holds the queue rows to read x_{t-dilation} from, then write x_t to, at t = p mod period.
        self.period = max(dilations)
        phase = torch.arange(self.period)[:, None] % torch.tensor(dilations)  # (period, L)
        self.slots = (offsets + phase).to(param.device)  # (period, L)
        self.queue_length = sum(dilations)
        self.sizes = len(blocks), R, D, self.skip.shape[1], self.hidden.shape[1]


class _Scratch:
    """Preallocated buffers of one step for B rows, and views into them, so that a step allocates
    only the logits it returns and its loop indexes no tensors (about a microsecond each). They hold
    nothing from one step to the next."""

    def __init__(self, weights: _StepWeights, batch: int):
        L, R, D, S, E = weights.sizes
        like = weights.first
        self.batch_shape = torch.Size([batch])
        self.rows = like.new_empty(L, batch, 2 * D + R + D)  # (L, B, [a | x | z])
        self.past = like.new_empty(L, batch, R)  # (L, B, R): each layer's input `dilation` ago
        self.preact = like.new_empty(L, batch, 2 * D + R)  # (L, B, 2D+R): bias + past tap
        self.first = like.new_empty(batch, 2 * D + R)  # the token's share of layer 0's [a | x]
        self.inputs = self.rows[:, :, 2 * D : 2 * D + R]  # (L, B, R): what the queues store
        self.gated_rows = self.rows[:, :, 2 * D + R :].transpose(0, 1)  # (B, L, D) view
        self.gated = like.new_empty(batch, L, D)  # the same, contiguous for the skip matmul
        self.gated_flat = self.gated.view(batch, L * D)
        a_x = [r[:, : 2 * D + R] for r in self.rows]  # (B, 2D+R): a matmul's output
        x_z = [r[:, 2 * D :] for r in self.rows]  # (B, R+D): a matmul's input
        act = [(r[:, : 2 * D], r[:, :D], r[:, D : 2 * D], r[:, 2 * D + R :]) for r in self.rows]
        self.first_a_x, self.first_preact = a_x[0], self.preact[0]
        self.layers = [(*act[l], x_z[l], weights.fused[l], self.preact[l + 1], a_x[l + 1]) for l in range(L - 1)]
        self.last_layer = act[-1]
        self.skip = like.new_empty(batch, S)
        self.hidden = like.new_empty(batch, E)
