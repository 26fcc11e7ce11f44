"""Parallel WaveNet student (van den Oord et al. 2017) in ClariNet's Gaussian form (Ping et al. 2018):
an inverse autoregressive flow from white noise to audio, conditioned on log-mel frames.

Noise z^0 ~ N(0, I), shape (B, T). Flow k = 1..K is a WaveNet with a gaussian head
(arcli/models/wavenet.py, `output="gaussian"`) reading the previous flow's output and the frames:

    (mu^k_t, log s^k_t) = WaveNet_k(z^{k-1}_{<t}, frames)      (position t sees z^{k-1}_{t-1} and before)
    z^k_t = z^{k-1}_t * s^k_t + mu^k_t,                          x = z^K

Each flow's shift and scale at t depend only on the previous flow's values before t, and so, by
induction, only on the noise before t. So the stack is one affine map per sample,

    x_t = z^0_t * S_t + M_t,   S_t = prod_k s^k_t,   M_t = sum_k mu^k_t prod_{j>k} s^j_t   (M_t, S_t from z^0_{<t}),

given the noise before t, x_t is Gaussian N(M_t, S_t^2) (what the closed-form distillation KL
against a Gaussian teacher needs), and dx/dz^0 is lower triangular with diagonal S_t, so the
student's density of its own sample is exact:

    log q(x) = sum_t [ log N(z^0_t; 0, 1) - log S_t ].

Generation is one forward pass per flow over the whole clip: no loop over samples. The density of
audio the student did not generate would need z^0 = f^-1(x), which an IAF can only recover one
sample at a time (T passes per flow): arcli does not offer it (see arcli/tasks/parallel_wavenet.py).

This model has no tokens and no `step`: DESIGN.md's exception for continuous-output models.
`forward(noise, condition)` is both its sampling and its density path.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from arcli.models.wavenet import LocalCondition, WaveNet, WaveNetConfig


class StudentOutput(NamedTuple):
    audio: Tensor  # (B, T) x = z^K, real-valued (unclipped)
    mean: Tensor  # (B, T) M_t: the mean of x_t given the noise before t
    log_scale: Tensor  # (B, T) log S_t: the log-scale of x_t given the noise before t; the log-Jacobian's diagonal


@dataclass
class ParallelWaveNetConfig:
    flows: int = 4  # Parallel WaveNet's count; ClariNet uses 6
    layers_per_flow: int = 10  # dilations 1..512 in each flow: receptive field 1024 samples per flow
    residual_channels: int = 16  # narrower than the teacher: every sample of a clip goes through every flow at once
    dilation_channels: int = 16
    skip_channels: int = 32
    end_channels: int = 32
    cond_channels: int = 80  # set from the teacher: log-mel bins per frame
    cond_hidden: int = 32  # each flow's own conditioning network width
    cond_hop: int = 200  # set from the teacher: samples per frame
    sample_rate: int = 16000  # set from the teacher
    min_log_scale: float = -7.0  # each flow's log s floor, as the teacher's (ClariNet): bounded densities and KLs
    initial_scale: float = 0.05  # at the start x = 0.05 z: quiet white noise near speech's level (unit noise costs KLs of thousands of nats)
    power_weight: float = 1.0  # distillation: weight of the STFT-magnitude (power) loss against the KL per sample
    scale_regularizer: float = 4.0  # distillation: ClariNet's lambda on (log sigma_teacher - log S)^2, which steadies early training

    def __post_init__(self) -> None:
        for name in ("flows", "layers_per_flow", "residual_channels", "dilation_channels", "skip_channels", "end_channels",
                     "cond_channels", "cond_hidden", "cond_hop", "sample_rate"):
            if getattr(self, name) < 1:
                raise ValueError(f"ParallelWaveNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.initial_scale > 0:
            raise ValueError(f"ParallelWaveNetConfig.initial_scale must be > 0, got {self.initial_scale}")
        if self.power_weight < 0 or self.scale_regularizer < 0:
            raise ValueError("ParallelWaveNetConfig.power_weight and scale_regularizer must be >= 0")

    def flow_config(self) -> WaveNetConfig:
        return WaveNetConfig(residual_channels=self.residual_channels, dilation_channels=self.dilation_channels,
                             skip_channels=self.skip_channels, end_channels=self.end_channels, layers_per_stack=self.layers_per_flow,
                             stacks=1, sample_rate=self.sample_rate, cond_channels=self.cond_channels, cond_hidden=self.cond_hidden,
                             cond_hop=self.cond_hop, output="gaussian", min_log_scale=self.min_log_scale)


class ParallelWaveNet(nn.Module):
    vocab_size = None  # no tokens: the engine cannot drive it
    eos_id = None

    def __init__(self, config: ParallelWaveNetConfig):
        super().__init__()
        self.config = config
        self.flows = nn.ModuleList(WaveNet(config.flow_config()) for _ in range(config.flows))
        with torch.no_grad():  # every flow starts as z -> z * initial_scale ** (1 / flows), as Glow starts from the identity
            for flow in self.flows:
                head = flow.head[3]
                head.weight.zero_()
                head.bias.copy_(torch.tensor([0.0, math.log(config.initial_scale) / config.flows]))

    @property
    def receptive_field(self) -> int:
        """Noise samples x_t depends on: z_t and the receptive_field - 1 before it."""
        return sum(flow.receptive_field - 1 for flow in self.flows) + 1

    def forward(self, noise: Tensor, condition: LocalCondition) -> StudentOutput:
        """noise: (B, T) z^0, condition: the frames -> the audio x (B, T), and M, log S (B, T)."""
        z = noise
        mean = torch.zeros_like(noise)
        log_scale = torch.zeros_like(noise)
        for flow in self.flows:
            params = flow(z, condition)  # (B, T, 2): shift and log-scale of z_t from z_<t
            shift, log_s = params[..., 0], params[..., 1]
            z = z * log_s.exp() + shift
            mean = mean * log_s.exp() + shift
            log_scale = log_scale + log_s
        return StudentOutput(z, mean, log_scale)

    @staticmethod
    def log_density(noise: Tensor, out: StudentOutput) -> Tensor:
        """The exact log q(x) of the student's own sample x = out.audio drawn from `noise`, per sample
        (B, T) in nats (a density over x in R): log N(z_t; 0, 1) - log S_t."""
        return -0.5 * noise.double() ** 2 - 0.5 * math.log(2 * math.pi) - out.log_scale.double()
