"""The variational RNN (Chung et al. 2015) and its baseline RNN-Gauss, over frames of raw audio.

A sequence is x_1 .. x_T, each x_t a frame of `frame_size` consecutive samples, normalised by the
training audio's global mean and standard deviation (as the paper does). With an LSTM state h
(h_0 = 0), feature extractors phi_x and phi_z, and e a speaker embedding in the conditional form
(empty otherwise; it joins every network's input):

    VRNN                                                  RNN-Gauss (no latents)
    prior      p(z_t | .)       = N(mu_0, s_0),  [mu_0, s_0] = prior(h_{t-1}, e)
    posterior  q(z_t | x_t, .)  = N(mu_z, s_z),  [mu_z, s_z] = encoder(phi_x(x_t), h_{t-1}, e)
    output     p(x_t | z_t, .)  = decoder(phi_z(z_t), h_{t-1}, e)     p(x_t | x_<t) = decoder(h_{t-1}, e)
    recurrence h_t = LSTM([phi_x(x_t), phi_z(z_t), e], h_{t-1})    h_t = LSTM([phi_x(x_t), e], h_{t-1})

The output is a diagonal Gaussian over the frame, or a mixture of `mixtures` of them. Its standard
deviation has a floor (`min_std`, in audio units): exact digital silence would otherwise make the
density unbounded. Densities are of the frames as given (audio units): the normalisation's
Jacobian, -frame_size * log(data_std) per frame, is included.

`forward(frames, condition)` returns per-frame terms: the reconstruction log-likelihood
log p(x_t | z_t, h_{t-1}) with z_t ~ q by the reparameterisation trick, the closed-form KL from q
to the prior, and log p(x_t | z_t) + log p(z_t) - log q(z_t) (one importance weight's share). The
ELBO is sum_t (log_lik - kl); for RNN-Gauss kl = 0 and log_lik is exact. Sampling is
`start`/`sample_step` (arcli/decoding/continuous.py drives it): the state is the LSTM's (h, c),
the same size at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_2PI = math.log(2 * math.pi)
LATENT_MIN_STD = 1e-4  # keeps the latents' log-densities finite


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log N(x; mean, std^2), summed over the last dimension: (..., D) -> (...)."""
    return (-0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * LOG_2PI).sum(-1)


def gaussian_kl(mean_q: Tensor, std_q: Tensor, mean_p: Tensor, std_p: Tensor) -> Tensor:
    """KL(N(mean_q, std_q^2) || N(mean_p, std_p^2)) of diagonal Gaussians, summed over the last dimension:

        sum_d log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2
    """
    return (std_p.log() - std_q.log() + (std_q**2 + (mean_q - mean_p) ** 2) / (2 * std_p**2) - 0.5).sum(-1)


def mlp(inputs: int, width: int, layers: int = 2) -> nn.Sequential:
    """`layers` ReLU layers of `width`: the paper's feature extractors and networks."""
    parts: list[nn.Module] = []
    for i in range(layers):
        parts += [nn.Linear(inputs if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*parts)


class GaussianHead(nn.Module):
    """Linear map to the mean and standard deviation of a diagonal Gaussian; std = softplus + floor."""

    def __init__(self, width: int, dim: int, min_std: float):
        super().__init__()
        self.proj, self.min_std = nn.Linear(width, 2 * dim), min_std

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = self.proj(features).chunk(2, dim=-1)  # (..., dim) each
        return mean, F.softplus(raw) + self.min_std


class MixtureHead(nn.Module):
    """A mixture of `k` diagonal Gaussians over a frame (k = 1: one Gaussian)."""

    def __init__(self, width: int, dim: int, k: int, min_std: float):
        super().__init__()
        self.dim, self.k, self.min_std = dim, k, min_std
        self.proj = nn.Linear(width, k * (2 * dim + 1))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """features (..., width) -> log mixture weights (..., k), means and stds (..., k, dim)."""
        out = self.proj(features)
        logits, rest = out[..., : self.k], out[..., self.k :]
        mean, raw = rest.unflatten(-1, (self.k, 2 * self.dim)).chunk(2, dim=-1)  # (..., k, dim) each
        return logits.log_softmax(-1), mean, F.softplus(raw) + self.min_std

    @staticmethod
    def log_prob(x: Tensor, params: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """log p(x) for x (..., dim): logsumexp_k [log w_k + log N(x; mean_k, std_k^2)]."""
        log_weights, mean, std = params
        return (log_weights + gaussian_log_prob(x.unsqueeze(-2), mean, std)).logsumexp(-1)

    @staticmethod
    def sample(params: tuple[Tensor, Tensor, Tensor], uniform: Tensor, normal: Tensor, temperature: float) -> Tensor:
        """One draw per row: a component by inverting the weights' CDF at `uniform` (B, 1), then its
        mean + temperature * std * `normal` (B, dim)."""
        log_weights, mean, std = params  # (B, k), (B, k, dim)
        cdf = log_weights.exp().cumsum(-1)
        component = (cdf < uniform * cdf[:, -1:]).sum(-1).clamp(max=log_weights.shape[-1] - 1)  # (B,)
        rows = torch.arange(len(component), device=component.device)
        return mean[rows, component] + temperature * std[rows, component] * normal


@dataclass
class RNNGaussConfig:
    frame_size: int = 200  # samples per frame, as in the paper (12.5 ms at 16 kHz)
    sample_rate: int = 16000  # the corpus's rate; audio is resampled to it
    hidden: int = 256  # LSTM state width: small enough to train on a CPU in minutes
    features: int = 256  # width of the feature extractors and of the prior/encoder/decoder networks
    layers: int = 2  # ReLU layers in each of those networks
    mixtures: int = 1  # Gaussians in the output mixture (1: a Gaussian, the paper's "-Gauss")
    conditional: bool = True  # take speaker ids from the data's sub-folders (the conditional form)
    num_speakers: int = 0  # set from the data: 0 = unconditional
    speaker_dim: int = 16  # speaker embedding width; a few dimensions tell 8 voices apart
    crop_frames: int = 40  # training sequences of 40 frames = 0.5 s, as in the paper
    data_mean: float = 0.0  # fitted to the training audio: the paper's global normalisation
    data_std: float = 1.0
    min_std: float = 1 / 32768  # output std floor in audio units: one 16-bit step

    def __post_init__(self) -> None:
        for name in ("frame_size", "sample_rate", "hidden", "features", "layers", "mixtures", "speaker_dim", "crop_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_speakers < 0:
            raise ValueError(f"num_speakers must be >= 0, got {self.num_speakers}")
        if not (self.data_std > 0 and self.min_std > 0):
            raise ValueError(f"data_std and min_std must be > 0, got {self.data_std} and {self.min_std}")


@dataclass
class VRNNConfig(RNNGaussConfig):
    latent: int = 64  # z_t dimensions: a frame of 200 samples compresses well below that

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.latent < 1:
            raise ValueError(f"latent must be >= 1, got {self.latent}")


class FrameTerms(NamedTuple):
    log_lik: Tensor  # (B, T) log p(x_t | z_t, h_{t-1}) in nats, z_t drawn from q (RNN-Gauss: exact)
    kl: Tensor  # (B, T) KL(q(z_t | x_t, h_{t-1}) || p(z_t | h_{t-1})), closed form (RNN-Gauss: 0)
    log_weight: Tensor  # (B, T) log p(x_t | z_t) + log p(z_t) - log q(z_t) for the z_t drawn (RNN-Gauss: log_lik)


class FrameState(NamedTuple):
    h: Tensor  # (B, hidden)
    c: Tensor  # (B, hidden)
    speaker: Tensor  # (B, speaker_dim), or (B, 0) for an unconditional model


class _FrameModel(nn.Module):
    """What both families share: normalisation, speaker embedding, phi_x, the output head."""

    latent_dim = 0

    def __init__(self, config: RNNGaussConfig, decoder_inputs: int):
        super().__init__()
        c = self.config = config
        self.frame_size = c.frame_size
        self.speaker_width = c.speaker_dim if c.num_speakers else 0
        self.speakers = nn.Embedding(c.num_speakers, c.speaker_dim) if c.num_speakers else None
        self.phi_x = mlp(c.frame_size, c.features, c.layers)
        self.decoder = mlp(decoder_inputs + self.speaker_width, c.features, c.layers)
        self.output = MixtureHead(c.features, c.frame_size, c.mixtures, c.min_std / c.data_std)
        self.jacobian = -c.frame_size * math.log(c.data_std)  # log |d x_norm / d x| per frame

    def normalise(self, frames: Tensor) -> Tensor:
        return (frames - self.config.data_mean) / self.config.data_std

    def denormalise(self, frames: Tensor) -> Tensor:
        return frames * self.config.data_std + self.config.data_mean

    def embed(self, condition: Tensor | None, batch_size: int, like: Tensor) -> Tensor:
        """The speaker embedding (B, speaker_dim), or (B, 0) when unconditional."""
        if self.speakers is None:
            if condition is not None:
                raise ValueError("this model is unconditional: condition must be None")
            return like.new_zeros(batch_size, 0)
        if condition is None:
            raise ValueError(f"this model is conditional on {self.config.num_speakers} speakers: give speaker ids")
        return self.speakers(condition.to(like.device))

    def start(self, batch_size: int, condition: Tensor | None = None) -> FrameState:
        like = self.output.proj.weight
        zeros = like.new_zeros(batch_size, self.config.hidden)
        return FrameState(zeros, zeros, self.embed(condition, batch_size, like))


class RNNGauss(_FrameModel):
    """The paper's RNN-Gauss: an LSTM over frames with a Gaussian (mixture) output, no latents."""

    def __init__(self, config: RNNGaussConfig):
        super().__init__(config, config.hidden)
        width = config.features + self.speaker_width
        self.rnn = nn.LSTM(width, config.hidden, batch_first=True)

    def forward(self, frames: Tensor, condition: Tensor | None = None, noise: Tensor | None = None) -> FrameTerms:
        """frames (B, T, frame_size) in audio units -> per-frame terms (B, T); log_lik is exact."""
        B, T, _ = frames.shape
        x = self.normalise(frames)
        state = self.start(B, condition)
        speaker = state.speaker[:, None].expand(B, T, -1)  # (B, T, speaker_dim)
        h = state.h[:, None]  # (B, 1, hidden): h_0
        if T > 1:
            inputs = torch.cat([self.phi_x(x), speaker], -1)[:, :-1]  # (B, T-1, width): x_1 .. x_{T-1}
            after, _ = self.rnn(inputs, (state.h[None], state.c[None]))  # (B, T-1, hidden): h_1 .. h_{T-1}
            h = torch.cat([h, after], 1)  # (B, T, hidden): h_0 .. h_{T-1}
        params = self.output(self.decoder(torch.cat([h, speaker], -1)))
        log_lik = MixtureHead.log_prob(x, params) + self.jacobian
        return FrameTerms(log_lik, torch.zeros_like(log_lik), log_lik)

    def frame_distribution(self, state: FrameState) -> tuple[Tensor, Tensor, Tensor]:
        """The output mixture for the next frame (normalised units) from the state."""
        return self.output(self.decoder(torch.cat([state.h, state.speaker], -1)))

    def advance(self, state: FrameState, x: Tensor) -> FrameState:
        """Feed the frame x (B, frame_size), normalised, to the recurrence."""
        inputs = torch.cat([self.phi_x(x), state.speaker], -1)[:, None]  # (B, 1, width)
        _, (h, c) = self.rnn(inputs, (state.h[None], state.c[None]))  # (1, B, hidden) each
        return FrameState(h[0], c[0], state.speaker)

    def sample_step(self, state: FrameState, noise, temperature: float = 1.0) -> tuple[Tensor, FrameState]:
        """Draw the next frame (B, frame_size) in audio units; `noise` has normal(n) and uniform(n)."""
        x = MixtureHead.sample(self.frame_distribution(state), noise.uniform(1), noise.normal(self.frame_size), temperature)
        return self.denormalise(x), self.advance(state, x)


class VRNN(_FrameModel):
    """The paper's VRNN: a VAE at every frame, its prior predicted from the LSTM state."""

    def __init__(self, config: VRNNConfig):
        super().__init__(config, config.features + config.hidden)
        c, e = config, self.speaker_width
        self.latent_dim = c.latent
        self.phi_z = mlp(c.latent, c.features, c.layers)
        self.prior = nn.Sequential(mlp(c.hidden + e, c.features, c.layers), GaussianHead(c.features, c.latent, LATENT_MIN_STD))
        self.encoder = nn.Sequential(
            mlp(c.features + c.hidden + e, c.features, c.layers), GaussianHead(c.features, c.latent, LATENT_MIN_STD)
        )
        self.cell = nn.LSTMCell(2 * c.features + e, c.hidden)

    def _recur(self, state: FrameState, phi_x: Tensor, phi_z: Tensor) -> FrameState:
        """h_t = LSTM([phi_x(x_t), phi_z(z_t), e], h_{t-1}): the one recurrence of forward and sample_step."""
        h, c = self.cell(torch.cat([phi_x, phi_z, state.speaker], -1), (state.h, state.c))
        return FrameState(h, c, state.speaker)

    def _output(self, state: FrameState, phi_z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.output(self.decoder(torch.cat([phi_z, state.h, state.speaker], -1)))

    def forward(self, frames: Tensor, condition: Tensor | None = None, noise: Tensor | None = None) -> FrameTerms:
        """frames (B, T, frame_size) in audio units; noise (B, T, latent) standard normal for the
        reparameterisation (drawn from torch's global generator when None) -> terms (B, T)."""
        B, T, _ = frames.shape
        x = self.normalise(frames)
        phi_x = self.phi_x(x)  # (B, T, features): needs no state, so all frames at once
        if noise is None:
            noise = torch.randn(B, T, self.latent_dim, device=frames.device, dtype=frames.dtype)
        state = self.start(B, condition)
        log_lik, kl, log_weight = [], [], []
        for t in range(T):
            prior_mean, prior_std = self.prior(torch.cat([state.h, state.speaker], -1))
            mean, std = self.encoder(torch.cat([phi_x[:, t], state.h, state.speaker], -1))
            z = mean + std * noise[:, t]  # (B, latent): the reparameterisation trick
            phi_z = self.phi_z(z)
            rec = MixtureHead.log_prob(x[:, t], self._output(state, phi_z)) + self.jacobian
            log_lik.append(rec)
            kl.append(gaussian_kl(mean, std, prior_mean, prior_std))
            log_weight.append(rec + gaussian_log_prob(z, prior_mean, prior_std) - gaussian_log_prob(z, mean, std))
            state = self._recur(state, phi_x[:, t], phi_z)
        return FrameTerms(torch.stack(log_lik, 1), torch.stack(kl, 1), torch.stack(log_weight, 1))

    def sample_step(self, state: FrameState, noise, temperature: float = 1.0) -> tuple[Tensor, FrameState]:
        """Ancestral sampling: z_t from the prior, x_t from the output; x_t (B, frame_size) in audio units."""
        prior_mean, prior_std = self.prior(torch.cat([state.h, state.speaker], -1))
        z = prior_mean + prior_std * noise.normal(self.latent_dim)
        phi_z = self.phi_z(z)
        x = MixtureHead.sample(self._output(state, phi_z), noise.uniform(1), noise.normal(self.frame_size), temperature)
        return self.denormalise(x), self._recur(state, self.phi_x(x), phi_z)

    def replay(self, frames: Tensor, latents: Tensor, condition: Tensor | None = None) -> list[FrameState]:
        """The states h_0 .. h_T that frames (B, T, frame_size) with latents (B, T, latent) lead to:
        the recurrence of `forward` with the z_t given instead of drawn (tests check sampling against it)."""
        x = self.normalise(frames)
        states = [self.start(len(frames), condition)]
        for t in range(frames.shape[1]):
            states.append(self._recur(states[-1], self.phi_x(x[:, t]), self.phi_z(latents[:, t])))
        return states
