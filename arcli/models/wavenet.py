"""WaveNet (van den Oord et al. 2016) over 8-bit mu-law audio, with Fast WaveNet generation.

Two views of one distribution p(x_t | x_<t, speaker):
- `forward` runs the causal dilated convolutions over a whole sequence (training, scoring);
- `start`/`step`/`reorder` generate one sample at a time with per-layer ring buffers of past layer
  inputs (Paine et al. 2016, "Fast WaveNet"), so a step costs the same whatever the receptive field.

Shift convention: the network's input at position t is x_{t-1} (a zero vector at t = 0), so
`forward(x)[:, t]` are the logits of x_t given x_<t, and the first `step(state, None)` gives x_0's.

Two output heads (`WaveNetConfig.output`):
- "categorical": a softmax over 8-bit mu-law codes (the paper's); inputs are codes (B, T) long.
- "gaussian": the course notes' parametric alternative, as in ClariNet (Ping et al. 2018): the
  head gives the mean and log-scale of a Gaussian over the waveform x_t in [-1, 1], the log-scale
  floored at `min_log_scale`; inputs are the float samples (B, T), the input embedding a 1x1 conv
  of one channel. Its likelihood of 16-bit audio is `gaussian_16bit_nats`: the Gaussian's mass on
  the sample's 16-bit bin. Such a model has no vocabulary, so the token engine cannot drive it:
  `step` takes the previous float sample and returns (B, 2), and arcli/decoding/continuous.py's
  `GaussianSteps` draws from it.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arcli.audio.features import interpolation
from arcli.errors import OptionError

PCM16_STEP = 1.0 / 32768  # a 16-bit sample k is x = k / 32768, k in [-32768, 32767]


def gaussian_16bit_nats(params: Tensor, codes: Tensor) -> Tensor:
    """-log P(code) of 16-bit samples under per-sample Gaussians, in nats, float64.

    params: (..., 2) mean and log-scale over x in [-1, 1]; codes: (...) integers in [-32768, 32767].
    The discretisation: code k owns the interval [(k - 1/2) / 32768, (k + 1/2) / 32768), the end
    codes the tails beyond, so the probabilities of all 65536 codes sum to one. The mass
    Phi(b) - Phi(a) is computed from log Phi in float64, on the lower tail side (mirrored when the bin
    lies above the mean), so it stays accurate for bins far smaller than the scale."""
    params, codes = params.double(), codes.double()
    mean, scale = params[..., 0], params[..., 1].exp()
    low = torch.where(codes <= -32768, torch.full_like(codes, -math.inf), (codes - 0.5) * PCM16_STEP)
    high = torch.where(codes >= 32767, torch.full_like(codes, math.inf), (codes + 0.5) * PCM16_STEP)
    a, b = (low - mean) / scale, (high - mean) / scale
    above = a > 0  # mirror: Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    a, b = torch.where(above, -b, a), torch.where(above, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return -(log_b + torch.log(-torch.expm1(log_a - log_b)))


class LocalCondition(NamedTuple):
    """The condition of a locally conditioned WaveNet (the vocoder): feature frames and where the
    sequence starts in them. Sample t of row b sits at position offsets[b] + t of the frames'
    timeline (frame f centred on position f * hop; linear interpolation between frames)."""

    frames: Tensor  # (B, F, cond_channels), e.g. log-mel frames
    offsets: Tensor | None = None  # (B,) long: the first sample's position; None = 0
    speakers: Tensor | None = None  # (B,) speaker ids of a model with speakers, else None

# -------------------------------------------------------------------------------------------------
# building blocks


class ResidualBlock(nn.Module):
    """Dilated causal conv (kernel 2) -> gated tanh*sigmoid unit -> 1x1 residual and 1x1 skip."""

    def __init__(self, config: "WaveNetConfig", dilation: int):
        super().__init__()
        R, D, S = config.residual_channels, config.dilation_channels, config.skip_channels
        self.dilation = dilation
        # weight[:, :, 0] multiplies x_{t-dilation}, weight[:, :, 1] multiplies x_t.
        self.conv = nn.Conv1d(R, 2 * D, kernel_size=2, dilation=dilation)
        # Global conditioning: a per-speaker bias on the filter and gate pre-activations.
        self.speaker = nn.Embedding(config.num_speakers, 2 * D) if config.num_speakers else None
        # Local conditioning: the upsampled feature vector's share of the filter and gate pre-activations.
        self.local = nn.Linear(config.cond_hidden, 2 * D, bias=False) if config.cond_channels else None
        # No bias: a constant on the residual stream is absorbed by the next conv's bias (all but
        # the zero padding before the start). The last block's residual output goes unused.
        self.residual = nn.Conv1d(D, R, kernel_size=1, bias=False)
        self.skip = nn.Conv1d(D, S, kernel_size=1)

    def forward(self, x: Tensor, skip: Tensor, speaker: Tensor | None, local: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (B, T, R), skip: the skip sum so far (B, T, S) or its start broadcast from (S,),
        speaker: (B,) or None, local: (B, T, cond_hidden) or None -> next block's input (B, T, R),
        the skip sum with this block's share added (B, T, S); the skip biases are in the caller's start.

        Time-major, with matrix products rather than Conv1d calls: on a CPU, PyTorch runs 1x1 and
        kernel-2 dilated Conv1d through im2col copies. Measured on 2 cores, a training step of the
        default 2x10-layer model on 4 crops of 8188 samples: 0.94 s this way, 1.28 s with Conv1d.
        The filter and gate halves are separate products, so that tanh and sigmoid run over
        contiguous memory (sigmoid is ~7x slower on a strided half), and every other term is
        accumulated into them by a batched multiply-add (baddbmm) instead of a product then an
        add: one forward of a 16-channel block over 32,000 samples, 1 thread, 9-11 -> 6 ms.
        The parameters stay Conv1d's (the checkpoints do not change)."""
        d, (B, T, _) = self.dilation, x.shape
        D = self.residual.in_channels
        weight, bias = self.conv.weight, self.conv.bias  # weight (2D, R, 2): tap 1 multiplies x_t, tap 0 x_{t-d}
        spoken = self.speaker(speaker).unsqueeze(1) if self.speaker is not None else None  # (B, 1, 2D)
        rows = lambda m: m.t().expand(B, -1, -1)  # noqa: E731 -- (out, in) weight -> (B, in, out) for baddbmm
        halves = []
        for half in (slice(0, D), slice(D, 2 * D)):  # filter, gate
            if self.local is None:
                a = F.linear(x, weight[half, :, 1], bias[half])  # (B, T, D)
            else:
                a = torch.baddbmm(bias[half], local, rows(self.local.weight[half]))
                a = torch.baddbmm(a, x, rows(weight[half, :, 1]))
            if d < T:  # causal: before the start the past is zero padding, which adds nothing
                a[:, d:].baddbmm_(x[:, : T - d].to(a.dtype), rows(weight[half, :, 0]).to(a.dtype))  # in place: autocast casts nothing
            if spoken is not None:
                a = a + spoken[:, :, half]
            halves.append(a)
        z = torch.tanh(halves[0]) * torch.sigmoid(halves[1])  # (B, T, D)
        if torch.is_autocast_enabled(x.device.type):  # mixed precision: the residual and skip sums stay float32
            return x + F.linear(z, self.residual.weight[:, :, 0]), skip + F.linear(z, self.skip.weight[:, :, 0])
        return (torch.baddbmm(x, z, rows(self.residual.weight[:, :, 0])),
                torch.baddbmm(skip, z, rows(self.skip.weight[:, :, 0])))


def smooth_code_embedding(codes: int, channels: int) -> Tensor:
    """An initial embedding of the codes 0..codes-1 (codes, channels) in which neighbouring codes
    start out close: channel j is sqrt(2) cos(f_j u + phi_j) of the code's position u in [-1, 1],
    with frequencies f_j log-uniform in [pi/2, 32 pi] (periods of 256 down to 8 codes for 8-bit
    mu-law) and uniform phases, drawn from torch's global generator (the model's seed); each
    channel has an RMS of about 1, like nn.Embedding's N(0, 1) init.

    A default N(0, 1) init makes codes 127 and 128 as unrelated as 0 and 255, and the network must
    learn from data that amplitudes are ordered. Starting from this one it does not: measured on
    the speech corpus (1x10 layers, batch 8, same seed), held-out 5.11 vs 5.47 bits/sample after
    200 steps and 4.72 vs 5.01 after 400.
    """
    u = torch.linspace(-1.0, 1.0, codes)[:, None]  # (codes, 1)
    frequency = math.pi * 2.0 ** (torch.rand(1, channels) * 6.0 - 1.0)  # (1, channels)
    phase = torch.rand(1, channels) * (2 * math.pi)
    return math.sqrt(2.0) * torch.cos(u * frequency + phase)


# -------------------------------------------------------------------------------------------------
# config


@dataclass
class WaveNetConfig:
    quantization_channels: int = 256  # vocabulary: 8-bit mu-law codes
    residual_channels: int = 32  # residual stream width; 32: ~12k samples/s at batch 1 on 2 CPU cores
    dilation_channels: int = 32  # gated units per layer (filter and gate each)
    skip_channels: int = 128  # skips are summed over all layers, so wider than one layer
    end_channels: int = 128  # hidden width of the ReLU-1x1-ReLU-1x1 output head
    layers_per_stack: int = 10  # dilations 1,2,...,512 -> receptive field 1024 per stack (kernel 2)
    stacks: int = 2  # receptive field 2047 samples = 128 ms at 16 kHz
    num_speakers: int = 0  # 0 = unconditional; >0 = global conditioning on a speaker id
    sample_rate: int = 16000  # the data's rate; informational (receptive field in ms)
    cond_channels: int = 0  # 0 = no local conditioning; else feature size per frame (80 log-mel bins)
    cond_hidden: int = 64  # width of the conditioning network (two kernel-3 convolutions over frames)
    cond_hop: int = 200  # samples per feature frame (12.5 ms at 16 kHz)
    output: str = "categorical"  # "categorical": softmax over mu-law codes; "gaussian": mean and log-scale over [-1, 1]
    min_log_scale: float = -7.0  # gaussian: ClariNet's floor, scale >= 9e-4 (30 16-bit steps), keeps densities and KLs bounded

    def __post_init__(self) -> None:
        if self.output not in ("categorical", "gaussian"):
            raise ValueError(f"WaveNetConfig.output must be 'categorical' or 'gaussian', got {self.output!r}")
        for name in ("quantization_channels", "residual_channels", "dilation_channels", "skip_channels",
                     "end_channels", "layers_per_stack", "stacks", "sample_rate"):
            if getattr(self, name) < 1:
                raise ValueError(f"WaveNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_speakers < 0:
            raise ValueError(f"WaveNetConfig.num_speakers must be >= 0, got {self.num_speakers}")
        if self.cond_channels < 0 or self.cond_hidden < 1 or self.cond_hop < 1:
            raise ValueError("WaveNetConfig.cond_channels must be >= 0, cond_hidden and cond_hop >= 1")


@dataclass
class VocoderConfig(WaveNetConfig):
    """The WaveNet vocoder: locally conditioned on 80 log-mel bins every 200 samples (12.5 ms at 16 kHz).
    One stack of 10 layers (receptive field 1024 samples, 64 ms) suffices: the frames carry the context."""

    cond_channels: int = 80
    stacks: int = 1


@dataclass
class TTSConfig(WaveNetConfig):
    """WaveNet text-to-speech: locally conditioned on linguistic frames (arcli/audio/linguistic.py)
    every 200 samples, and on a speaker. cond_channels is fitted to the training data's phoneme
    inventory. One stack of 10 layers (64 ms) covers several pitch periods: the frames carry the rest."""

    stacks: int = 1


# -------------------------------------------------------------------------------------------------
# model


class WaveNet(nn.Module):
    eos_id = None  # fixed-length output: the caller says how many samples

    def __init__(self, config: WaveNetConfig):
        super().__init__()
        self.config = config
        self.gaussian = config.output == "gaussian"
        self.vocab_size = None if self.gaussian else config.quantization_channels  # None: no tokens for the engine
        if self.gaussian:  # a 1x1 conv of the one real-valued input channel
            self.embed = nn.Linear(1, config.residual_channels)
        else:  # an embedding is a 1x1 conv over one-hot mu-law codes, without building the one-hots
            self.embed = nn.Embedding(config.quantization_channels, config.residual_channels)
            if not self.embed.weight.is_meta:  # a shape-only build (checkpoint.check_fits) skips it: on meta it costs ~1 s of imports
                with torch.no_grad():
                    self.embed.weight.copy_(smooth_code_embedding(config.quantization_channels, config.residual_channels))
        self.blocks = nn.ModuleList(
            ResidualBlock(config, dilation=2**i) for _ in range(config.stacks) for i in range(config.layers_per_stack)
        )
        self.cond_net = None
        if config.cond_channels:  # frames -> features at frame rate, seeing a frame either side per layer
            H = config.cond_hidden
            self.cond_net = nn.Sequential(
                nn.Conv1d(config.cond_channels, H, 3, padding=1), nn.Tanh(), nn.Conv1d(H, H, 3, padding=1), nn.Tanh()
            )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(config.skip_channels, config.end_channels, kernel_size=1),
            nn.ReLU(),
            nn.Conv1d(config.end_channels, 2 if self.gaussian else config.quantization_channels, kernel_size=1),
        )

    @property
    def receptive_field(self) -> int:
        """Samples the logits at position t depend on: x_{t-receptive_field} .. x_{t-1}."""
        return sum(block.dilation for block in self.blocks) + 1

    def forward(self, tokens: Tensor, condition: object = None) -> Tensor:
        """tokens: (B, T) mu-law codes, condition: speaker ids (B,) or None -> logits (B, T, V);
        logits[:, t] predict tokens[:, t] from tokens[:, :t]. A gaussian model takes float samples
        (B, T) in [-1, 1] and returns (B, T, 2): the mean and the (floored) log-scale of x_t."""
        B, T = tokens.shape
        frames, offsets, condition = self._local(condition, B)
        speaker = self._speakers(condition, B)
        local = None
        if frames is not None:  # the conditioning network at frame rate, then linear interpolation to samples
            hidden = self.cond_net(frames.transpose(1, 2)).transpose(1, 2)  # (B, F, H)
            positions = offsets[:, None] + torch.arange(T, device=tokens.device)  # (B, T)
            below, above, fraction = interpolation(positions, self.config.cond_hop, hidden.shape[1])
            pick = lambda index: torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[2]))  # noqa: E731
            local = torch.lerp(pick(below), pick(above), fraction[..., None].to(hidden.dtype))  # (B, T, H)
        inputs = tokens[:, :-1, None].to(self.embed.weight.dtype) if self.gaussian else tokens[:, :-1]
        x = F.pad(self.embed(inputs), (0, 0, 1, 0))  # (B, T, R): x_{t-1} at t, "nothing" (zeros) at t = 0
        skip = sum(block.skip.bias for block in self.blocks).expand(B, T, -1)  # (B, T, S): every block's skip bias
        for block in self.blocks:
            x, skip = block(x, skip, speaker, local)
        _, hidden, _, out = self.head
        logits = F.linear(F.relu(F.linear(F.relu(skip), hidden.weight[:, :, 0], hidden.bias)), out.weight[:, :, 0], out.bias)  # (B, T, V)
        return self._floor(logits) if self.gaussian else logits

    def _floor(self, params: Tensor) -> Tensor:
        """(..., 2) mean, log-scale -> the same with the log-scale floored at min_log_scale."""
        return torch.stack([params[..., 0], params[..., 1].clamp(min=self.config.min_log_scale)], -1)

    def _local(self, condition: object, batch_size: int) -> tuple[Tensor | None, Tensor | None, object]:
        """Split a LocalCondition -> (frames (B, F, C), offsets (B,), the speaker part); a model
        without local conditioning passes `condition` through."""
        if not self.config.cond_channels:
            if isinstance(condition, LocalCondition):
                raise OptionError("this WaveNet is not locally conditioned: it takes no feature frames")
            return None, None, condition
        if not isinstance(condition, LocalCondition):
            raise OptionError(f"this WaveNet is conditioned on feature frames ({self.config.cond_channels} per frame): give them")
        frames = torch.as_tensor(condition.frames, device=self.embed.weight.device)
        if frames.dim() == 2:
            frames = frames.unsqueeze(0).expand(batch_size, -1, -1)
        if frames.dim() != 3 or frames.shape[0] != batch_size or frames.shape[2] != self.config.cond_channels or frames.shape[1] < 1:
            raise OptionError(
                f"expected feature frames of shape ({batch_size}, frames, {self.config.cond_channels}), got {tuple(frames.shape)}"
            )
        offsets = condition.offsets
        offsets = torch.zeros(batch_size, dtype=torch.long, device=frames.device) if offsets is None else offsets.to(frames.device).long()
        return frames.to(self.embed.weight.dtype), offsets, condition.speakers

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

    @torch.inference_mode()
    def start(self, batch_size: int, condition: object = None) -> "WaveNetState":
        """Fresh state for `batch_size` rows: zero queues, as the convolutions' zero padding."""
        if batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {batch_size}")
        frames, offsets, condition = self._local(condition, batch_size)
        speaker = self._speakers(condition, batch_size)
        weights = _StepWeights(self)  # from the parameters as they are now
        bias = weights.bias[:, None, :].expand(-1, batch_size, -1)  # (L, B, 2D+R)
        if speaker is not None:
            bias = bias + weights.speaker[:, speaker]  # (L, B, 2D+R)
        queue = weights.first.new_zeros(weights.queue_length, batch_size, self.config.residual_channels)
        local = None
        if frames is not None:
            if bool((offsets != offsets[0]).any()):
                raise OptionError("step-by-step generation needs every row to start at the same position of its frames")
            hidden = self.cond_net(frames.transpose(1, 2)).permute(2, 0, 1).contiguous()  # (F, B, H)
            local = _LocalStep(hidden, weights.local, int(offsets[0]), self.config.cond_hop, bias.clone())  # not the stepped buffer
        return _new_state(queue, bias.contiguous(), 0, weights, local)

    @torch.inference_mode()
    def step(self, state: "WaveNetState", tokens: Tensor | None) -> tuple[Tensor, "WaveNetState"]:
        """tokens: (B,) the previous sample of each row, None at the first step -> logits of the
        next sample (B, V), and the state (updated in place). A gaussian model takes the previous
        float samples (B,) and returns the next one's mean and log-scale (B, 2)."""
        w, s = state.weights, state.scratch
        if state.local is not None:  # this sample's conditioning: the bias of every layer, interpolated
            state.local.update(state.position, state.bias)
        slots = w.slots[state.position % w.period]  # (L,) queue rows holding x_{t-dilation}
        torch.index_select(state.queue, 0, slots, out=s.past)  # every layer's x_{t-dilation}
        if tokens is None:  # "nothing" (zeros) before x_0, as in forward
            torch.addmm(s.first_bias, s.first_past, w.first_past, out=s.first_a_x)
        else:
            if tokens.shape != s.batch_shape:
                raise ValueError(f"expected tokens of shape {tuple(s.batch_shape)}, got {tuple(tokens.shape)}")
            if w.first_constant is None:
                torch.index_select(w.first, 0, tokens, out=s.token)  # (B, 2D+R)
            else:  # a real-valued input: x * [W1 w | w] + [W1 b | b]
                torch.addmm(w.first_constant, tokens[:, None].to(w.first.dtype), w.first, out=s.token)
            s.token += s.first_bias
            torch.addmm(s.token, s.first_past, w.first_past, out=s.first_a_x)
        for act, filt, gate, gated, bias, x_z_p, fused, a_x in s.layers:
            act.tanh_()
            torch.addcmul(filt, filt, gate, out=gated)  # 2 tanh(f) sigmoid(g): (B, D)
            torch.addmm(bias, x_z_p, fused, out=a_x)  # the next layer's [a | x]: (B, 2D+R)
        act, filt, gate, gated = s.last_layer
        act.tanh_()
        torch.addcmul(filt, filt, gate, out=gated)
        state.queue.index_copy_(0, slots, s.inputs)  # x_t replaces x_{t-dilation}
        state.position += 1
        s.gated.copy_(s.gated_rows)  # (B, L, D)
        torch.addmm(w.skip_bias, s.gated_flat, w.skip, out=s.skip).relu_()  # (B, S)
        torch.addmm(w.hidden_bias, s.skip, w.hidden, out=s.hidden).relu_()  # (B, E)
        logits = torch.addmm(w.out_bias, s.hidden, w.out)  # (B, V)
        return (self._floor(logits) if self.gaussian else logits), state

    @torch.inference_mode()
    def reorder(self, state: "WaveNetState", index: Tensor) -> "WaveNetState":
        """New state whose row i continues old row index[i] (keep, permute or duplicate rows)."""
        index = index.to(state.queue.device)
        if index.dim() != 1 or index.numel() == 0:
            raise ValueError(f"reorder index must be a non-empty 1-d tensor, got shape {tuple(index.shape)}")
        local = None if state.local is None else state.local.reorder(index)
        return _new_state(state.queue.index_select(1, index), state.bias.index_select(1, index), state.position, state.weights, local)


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
    local: "_LocalStep | None" = None  # local conditioning: rewrites `bias` before every step


def _new_state(queue: Tensor, bias: Tensor, position: int, weights: "_StepWeights", local: "_LocalStep | None" = None) -> WaveNetState:
    return WaveNetState(queue, bias, position, weights, _Scratch(weights, bias), local)


class _LocalStep:
    """Local conditioning for steps. The conditioning network's output at frame rate, hidden (F, B, H),
    is projected to every layer's pre-activations only when a step enters a new frame (two
    matmuls per `hop` samples): base = static bias + P(frame f), diff = P(f + 1) - P(f); each step
    then writes bias = base + fraction * diff, the same linear interpolation as `forward`."""

    def __init__(self, hidden: Tensor, weight: Tensor, offset: int, hop: int, static: Tensor):
        self.hidden, self.weight, self.offset, self.hop, self.static = hidden, weight, offset, hop, static
        self.frame = -1
        self.base = self.diff = None

    def update(self, position: int, out: Tensor) -> None:
        frames, t = self.hidden.shape[0], self.offset + position
        frame, fraction = t // self.hop, (t % self.hop) / self.hop
        if frame >= frames - 1:
            frame, fraction = frames - 1, 0.0
        if frame != self.frame:
            L, B, width = self.static.shape
            project = lambda h: (h @ self.weight).view(B, L, width).transpose(0, 1)  # noqa: E731
            now = self.hidden[frame]
            self.base = self.static + project(now)
            self.diff = project(self.hidden[min(frame + 1, frames - 1)] - now)
            self.frame = frame
        torch.add(self.base, self.diff, alpha=fraction, out=out)

    def reorder(self, index: Tensor) -> "_LocalStep":
        return _LocalStep(self.hidden.index_select(1, index), self.weight, self.offset, self.hop, self.static.index_select(1, index))


class _StepWeights:
    """The parameters re-laid out for one-sample steps, derived at `start()` time.

    A step works on one row per layer, [a | x | z | p]: a (2D) the layer's filter and gate
    pre-activations, x (R) its input, z (D) its gated units, p (R) the *next* layer's input
    `dilation` samples ago, gathered from the queues for all layers at once. One matmul per layer
    takes [x | z | p] of layer l to [a | x] of layer l+1 -- the residual 1x1 and both conv taps:
        x' = x + z Wr,   a' = bias' + x' W1' + p W0' = bias' + x W1' + z (Wr W1') + p W0'
    (W1, W0: the conv's current and past taps). The skip 1x1s of all layers are one matmul at the
    end. The gate uses sigmoid(g) = (1 + tanh(g/2)) / 2, so one in-place tanh covers filter and
    gate: the gate columns are pre-scaled by 1/2, and the 1/2 of the product goes into the residual
    and skip weights. At batch 1 a step costs about a microsecond per op whatever the op, so what
    counts is their number: 3 per layer. (torch.compile and torch.jit.script of the step measured no
    faster than this plain loop on a 2-core CPU, so it is the only path.)
    """

    def __init__(self, model: WaveNet):
        blocks, R, D = model.blocks, model.config.residual_channels, model.config.dilation_channels
        # (V, R): one row per code; a gaussian model's input weight (1, R), times the sample's value
        param = model.embed.weight.detach().t() if model.gaussian else model.embed.weight.detach()
        scale = torch.cat([param.new_ones(D), param.new_full((D,), 0.5)])  # (2D,)
        now = [b.conv.weight[:, :, 1].detach().t() * scale for b in blocks]  # (R, 2D) each
        past = [F.pad(b.conv.weight[:, :, 0].detach().t() * scale, (0, R)) for b in blocks]  # (R, 2D+R) each
        residual = [b.residual.weight[:, :, 0].detach().t() * 0.5 for b in blocks[:-1]]  # (D, R) each
        eye = torch.eye(R, dtype=param.dtype, device=param.device)
        self.first = torch.cat([param @ now[0], param], 1)  # (V, 2D+R): token -> [a | x] of layer 0
        self.first_constant = None  # gaussian: the input conv's bias, (2D+R,)
        if model.gaussian:
            bias = model.embed.bias.detach()[None]  # (1, R)
            self.first_constant = torch.cat([bias @ now[0], bias], 1)[0]
        self.first_past = past[0]
        self.fused = [  # (R+D+R, 2D+R) each: [x | z | p] of layer l -> [a | x] of layer l+1
            torch.cat([torch.cat([now[i + 1], eye], 1), torch.cat([residual[i] @ now[i + 1], residual[i]], 1), past[i + 1]])
            for i in range(len(blocks) - 1)
        ]
        self.bias = torch.stack([F.pad(b.conv.bias.detach() * scale, (0, R)) for b in blocks])  # (L, 2D+R)
        self.speaker = (  # (L, speakers, 2D+R)
            torch.stack([F.pad(b.speaker.weight.detach() * scale, (0, R)) for b in blocks]) if model.config.num_speakers else None
        )
        self.local = None
        if model.config.cond_channels:  # (H, L*(2D+R)): conditioning features -> every layer's [a | x] bias
            self.local = torch.cat([F.pad(b.local.weight.detach().t() * scale, (0, R)) for b in blocks], 1)
        self.skip = torch.cat([b.skip.weight[:, :, 0].detach().t() * 0.5 for b in blocks])  # (L*D, S)
        self.skip_bias = torch.stack([b.skip.bias.detach() for b in blocks]).sum(0)  # (S,)
        hidden, out = model.head[1], model.head[3]
        self.hidden = hidden.weight[:, :, 0].detach().t().contiguous()  # (S, E)
        self.hidden_bias = hidden.bias.detach().clone()
        self.out = out.weight[:, :, 0].detach().t().contiguous()  # (E, V)
        self.out_bias = out.bias.detach().clone()
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
    """Buffers of one step for B rows, and views into them built once, so that a step allocates
    only the logits it returns and its loop indexes no tensors (about a microsecond each). They hold
    nothing from one step to the next."""

    def __init__(self, weights: _StepWeights, bias: Tensor):
        (L, R, D, S, E), B = weights.sizes, bias.shape[1]
        like = weights.first
        self.batch_shape = torch.Size([B])
        a, x, z, p = slice(0, 2 * D), slice(2 * D, 2 * D + R), slice(2 * D + R, 3 * D + R), slice(3 * D + R, 3 * D + 2 * R)
        # rows[l + 1] is layer l's [a | x | z | p]; rows[0] only holds layer 0's p.
        rows = like.new_zeros(L + 1, B, 3 * D + 2 * R)  # (L+1, B, [a | x | z | p])
        self.past = rows[:L, :, p]  # (L, B, R): each layer's input `dilation` samples ago
        self.inputs = rows[1:, :, x]  # (L, B, R): each layer's input now, for the queues
        self.gated_rows = rows[1:, :, z].transpose(0, 1)  # (B, L, D)
        self.gated = like.new_empty(B, L, D)  # the same, contiguous for the skip matmul
        self.gated_flat = self.gated.view(B, L * D)
        self.token = like.new_empty(B, 2 * D + R)  # layer 0's [a | x] from the token and its bias
        self.first_bias, self.first_past, self.first_a_x = bias[0], rows[0, :, p], rows[1, :, : 2 * D + R]
        layers = [(r[:, a], r[:, a][:, :D], r[:, a][:, D:], r[:, z]) for r in rows[1:]]
        self.layers = [  # per layer l < L-1: its gate's views, then what makes layer l+1's [a | x]
            (*layers[i], bias[i + 1], rows[i + 1, :, 2 * D :], weights.fused[i], rows[i + 2, :, : 2 * D + R]) for i in range(L - 1)
        ]
        self.last_layer = layers[-1]
        self.skip = like.new_empty(B, S)
        self.hidden = like.new_empty(B, E)
