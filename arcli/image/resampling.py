"""Importance resampling for image completion with raster-order models (PixelCNN): proposals drawn
with the known pixels forced, weighted by the likelihood the model gives the known pixels after the
hole, sequential Monte Carlo (reweighting and resampling at row ends), the effective sample size,
and systematic resampling. `arcli/tasks/completion.py` decides when to use them; a model that can
generate in any order needs none of this (see `arcli/image/masks.known_first_order`).

The model is any image model of the contract (arcli/image/contract.py) with the engine's
`start`/`step`/`reorder`.
"""

from __future__ import annotations

import math

import torch

from arcli.image.contract import token_nats


@torch.inference_mode()
def smc_proposals(model: torch.nn.Module, values: torch.Tensor, known: torch.Tensor, first_hidden: int, label: int | None,
                  particles: int, generator: torch.Generator, progress=None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sequential Monte Carlo proposals for one image: `particles` completions of `values` (T,) with the
    sub-pixels in `known` (T,) forced and the others drawn from the model's conditionals, the
    particles reweighted by each forced sub-pixel after `first_hidden` as it is read (its probability
    under the model), and resampled (systematically) at the end of every image row where their
    effective sample size has fallen under half. A mask whose hidden and known pixels alternate within
    rows (left, right, center, random, most drawn masks) thus keeps the particles that fit the known
    pixels so far, instead of finding out at the end; for the top mask every forced sub-pixel comes
    after the hole, and this is plain importance sampling.

    Returns (tokens (K, T), log-weights (K,), resamplings). The log-weights are each particle's share
    of the run's estimate of p(known after the hole | known before it), times K: exp(log-weights)
    averages to that estimate, and with no resampling they are the particles' likelihoods of the
    forced sub-pixels after the hole, as `proposal_log_weights` reads them.
    """
    device = next(model.parameters()).device
    T, K = len(values), particles
    row = model.config.width * model.config.channels
    condition = None if label is None else torch.full((K,), label, dtype=torch.long, device=device)
    state = model.start(K, condition)
    tokens = torch.zeros(K, T, dtype=torch.long, device=device)
    log_w = torch.zeros(K, dtype=torch.float64, device=device)
    log_z, resamplings, previous = 0.0, 0, None
    known_list, values = known.tolist(), values.to(device)
    for t in range(T):
        logits, state = model.step(state, previous)
        if known_list[t]:
            token = values[t].expand(K)
            if t > first_hidden:
                log_w += torch.log_softmax(logits.double(), -1)[:, values[t]]
        else:
            token = torch.multinomial(torch.softmax(logits.float(), -1).cpu(), 1, generator=generator).squeeze(1).to(device)
        tokens[:, t] = token
        previous = token
        if (t + 1) % row == 0 and t + 1 < T and t > first_hidden:
            weights = torch.softmax(log_w, 0)
            if float(1.0 / (weights**2).sum()) < K / 2:
                log_z += float(torch.logsumexp(log_w, 0)) - math.log(K)
                index = systematic_resample(weights.cpu(), K, generator).to(device)
                state = model.reorder(state, index)
                tokens, log_w = tokens[index], torch.zeros_like(log_w)
                resamplings += 1
        if progress is not None:
            progress(t + 1, T)
    log_z += float(torch.logsumexp(log_w, 0)) - math.log(K)
    return tokens.cpu(), (log_z + torch.log_softmax(log_w, 0) + math.log(K)).cpu(), resamplings


@torch.inference_mode()
def proposal_log_weights(model: torch.nn.Module, proposals: torch.Tensor, known_after: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
    """Importance log-weights (K,) of one image's completed proposals (K, T): the model's
    log-likelihood of the known sub-pixels after the first hidden one (`known_after`, (T,) bool),
    read from a forward pass over each proposal. label: () class id, or None."""
    device = next(model.parameters()).device
    log_weights = []
    for start in range(0, len(proposals), 64):
        batch = proposals[start : start + 64].to(device)
        labels = None if label is None else label.expand(len(batch)).to(device)
        nats = token_nats(model, batch, labels).double()  # (b, T)
        log_weights.append(-(nats * known_after.to(device)).sum(1).cpu())
    return torch.cat(log_weights)


def resample(log_weights: torch.Tensor, count: int, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Draw `count` indices with replacement in proportion to exp(log_weights) (K,); returns them
    and the effective sample size (sum w)^2 / sum w^2, between 1 and K."""
    weights = torch.softmax(log_weights.double(), 0)
    return torch.multinomial(weights, count, replacement=True, generator=generator), float(1.0 / (weights**2).sum())


def distinct_ess(hidden_tokens: torch.Tensor, weights: torch.Tensor) -> float:
    """The effective sample size (sum w)^2 / sum w^2 of weighted completions, counted over distinct
    completions (`hidden_tokens` (K, H): the hidden sub-pixels of each): proposals that are copies of
    one another (resampling duplicates particles) pool their weight, so K copies count once."""
    _, group = torch.unique(hidden_tokens, dim=0, return_inverse=True)
    pooled = torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add_(0, group, weights.double())
    return float(pooled.sum() ** 2 / (pooled**2).sum())


def systematic_resample(weights: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` indices drawn in proportion to `weights` (K,), normalised, by systematic resampling:
    one uniform u, then the points (u + i) / count through the cumulative weights. Each index is
    picked floor(count w) or ceil(count w) times, so nothing repeats that the weights do not demand
    (multinomial draws repeat heavy proposals far more often), and the draw stays unbiased."""
    cumulative = torch.cumsum(weights.double(), 0)
    cumulative = cumulative / cumulative[-1]
    points = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(count, dtype=torch.float64)) / count
    return torch.searchsorted(cumulative, points, right=True).clamp(max=len(weights) - 1)
