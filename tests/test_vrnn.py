"""VRNN and RNN-Gauss: the KL in closed form, ELBO <= log p(x) (exact by quadrature, and the
importance-sampled estimate), sampling repeatable and streaming from the state, shapes."""

import math

import pytest
import torch

from arcli.decoding.continuous import RowNoise, sample_frames
from arcli.models.vrnn import VRNN, MixtureHead, RNNGauss, RNNGaussConfig, VRNNConfig, gaussian_kl
from arcli.tasks.continuous import clip_frames, importance_sampled

TINY = dict(frame_size=4, hidden=8, features=8, layers=1, speaker_dim=3, crop_frames=5, data_mean=0.01, data_std=0.5)


def tiny_vrnn(seed=0, **settings):
    torch.manual_seed(seed)
    return VRNN(VRNNConfig(**{**TINY, "latent": 2, **settings})).double().eval()


def tiny_rnn_gauss(seed=0, **settings):
    torch.manual_seed(seed)
    return RNNGauss(RNNGaussConfig(**{**TINY, **settings})).double().eval()


def test_kl_of_gaussians_matches_hand_computed_values():
    # KL(N(1, 2^2) || N(0, 1)) = log(1/2) + (4 + 1) / 2 - 1/2 = 2 - ln 2
    # KL(N(0, 1) || N(1, 0.5^2)) = log(0.5) + (1 + 1) / (2 * 0.25) - 1/2 = 3.5 - ln 2
    kl = gaussian_kl(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5]))
    assert kl.item() == pytest.approx((2 - math.log(2)) + (3.5 - math.log(2)), abs=1e-6)
    assert gaussian_kl(torch.zeros(3), torch.ones(3), torch.zeros(3), torch.ones(3)).item() == 0


def test_the_models_kl_term_is_the_closed_form_of_its_own_prior_and_posterior():
    model = tiny_vrnn(num_speakers=2)
    frames = torch.randn(3, 1, 4, dtype=torch.float64)
    speakers = torch.tensor([0, 1, 1])
    terms = model(frames, speakers)
    state = model.start(3, speakers)  # h_0 = 0
    prior = torch.distributions.Normal(*model.prior(torch.cat([state.h, state.speaker], -1)))
    x = model.normalise(frames[:, 0])
    posterior = torch.distributions.Normal(*model.encoder(torch.cat([model.phi_x(x), state.h, state.speaker], -1)))
    expected = torch.distributions.kl_divergence(posterior, prior).sum(-1)
    torch.testing.assert_close(terms.kl[:, 0], expected)
    # ... and a Monte Carlo estimate E_q[log q(z) - log p(z)] agrees with it
    z = posterior.sample((200_000,))
    monte_carlo = (posterior.log_prob(z) - prior.log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(monte_carlo, expected, atol=0.02, rtol=0.02)


def _exact_log_p_one_frame(model, frame):
    """log p(x_1) = log integral N(z; prior) p(x_1 | z, h_0) dz for a 1-d latent, by quadrature."""
    state = model.start(1)
    mean, std = model.prior(torch.cat([state.h, state.speaker], -1))
    x = model.normalise(frame)[None]
    q_mean, q_std = model.encoder(torch.cat([model.phi_x(x), state.h, state.speaker], -1))
    low, high = min(mean - 12 * std, q_mean - 12 * q_std), max(mean + 12 * std, q_mean + 12 * q_std)  # where the mass is
    z = torch.linspace(float(low), float(high), 100_001, dtype=torch.float64)[:, None]  # (N, 1)
    expanded = state._replace(h=state.h.expand(len(z), -1), speaker=state.speaker.expand(len(z), -1))
    x = x.expand(len(z), -1)
    log_lik = MixtureHead.log_prob(x, model._output(expanded, model.phi_z(z))) + model.jacobian
    log_prior = torch.distributions.Normal(mean[0, 0], std[0, 0]).log_prob(z[:, 0])
    return float((log_lik + log_prior).logsumexp(0) + math.log(float(z[1, 0] - z[0, 0])))


@pytest.mark.parametrize("seed", [0, 1])
def test_elbo_is_below_the_exact_log_likelihood_and_importance_sampling_reaches_it(seed):
    model = tiny_vrnn(seed, latent=1, mixtures=2)
    frame = torch.randn(1, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.5
    with torch.no_grad():
        exact = _exact_log_p_one_frame(model, frame[0])
        elbo, estimate = importance_sampled(model, frame, None, samples=400_000, rows=100_000)
    assert elbo < exact - 1e-3  # the bound is strict unless q is the true posterior
    assert estimate == pytest.approx(exact, abs=0.02)


def test_elbo_never_exceeds_the_importance_sampled_estimate_for_large_k():
    model = tiny_vrnn(3, mixtures=2, num_speakers=2)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for clip in range(3):
            frames = torch.randn(6, 4, generator=generator, dtype=torch.float64)
            elbo, estimate = importance_sampled(model, frames, clip % 2, samples=2000, rows=500, seed=clip)
            few_elbo, few = importance_sampled(model, frames, clip % 2, samples=2, rows=500, seed=clip)
            assert elbo < estimate
            assert few < estimate  # the estimate tightens as K grows
            assert few_elbo == pytest.approx(elbo, abs=abs(elbo) * 0.2)  # both estimate the same ELBO


def test_rnn_gauss_likelihood_is_the_gaussian_density_of_the_audio_with_the_normalisation():
    model = tiny_rnn_gauss()
    frames = torch.randn(2, 3, 4, dtype=torch.float64) * 0.3
    terms = model(frames)
    state = model.start(2)
    for t in range(3):  # stepping gives the same per-frame density as the parallel view
        log_weights, mean, std = model.frame_distribution(state)
        normal = torch.distributions.Normal(mean[:, 0] * 0.5 + 0.01, std[:, 0] * 0.5)  # the mixture has 1 component
        torch.testing.assert_close(terms.log_lik[:, t], normal.log_prob(frames[:, t]).sum(-1))
        state = model.advance(state, model.normalise(frames[:, t]))
    assert (terms.kl == 0).all() and torch.equal(terms.log_weight, terms.log_lik)


@pytest.mark.parametrize("make", [tiny_vrnn, tiny_rnn_gauss])
def test_shapes_and_seeded_sampling_repeat_and_do_not_depend_on_the_batch(make):
    model = make(num_speakers=3)
    speakers = torch.tensor([0, 2, 1])
    terms = model(torch.randn(3, 7, 4, dtype=torch.float64), speakers)
    assert [tuple(t.shape) for t in terms] == [(3, 7)] * 3
    first = sample_frames(model, 5, 3, condition=speakers, seed=11)
    assert first.shape == (3, 5, 4)
    assert torch.equal(first, sample_frames(model, 5, 3, condition=speakers, seed=11))
    assert not torch.equal(first, sample_frames(model, 5, 3, condition=speakers, seed=12))
    alone = sample_frames(model, 5, 1, condition=speakers[1:2], seed=11, row_offset=1)
    torch.testing.assert_close(alone[0], first[1], rtol=0, atol=1e-12)  # row 1 alone: its own stream, the same frames
    cooler = sample_frames(model, 5, 3, condition=speakers, seed=11, temperature=0.1)
    assert (cooler - first).abs().max() > 0  # the temperature scales each frame's spread
    with pytest.raises(ValueError):
        model(torch.zeros(1, 2, 4, dtype=torch.float64))  # a conditional model needs its speakers


def test_sampling_streams_from_the_state_and_matches_the_parallel_recurrence():
    model = tiny_vrnn(4)
    latents = []
    hook = model.phi_z.register_forward_hook(lambda module, inputs, output: latents.append(inputs[0]))
    noise = RowNoise(5, 2)
    state = model.start(2)
    frames = []
    for _ in range(6):
        frame, state = model.sample_step(state, noise, 1.0)
        assert state.h.shape == state.c.shape == (2, 8)  # the cache does not grow with the prefix
        frames.append(frame)
    hook.remove()
    frames, latents = torch.stack(frames, 1), torch.stack(latents, 1)
    replayed = model.replay(frames, latents)[-1]
    torch.testing.assert_close(replayed.h, state.h)
    torch.testing.assert_close(replayed.c, state.c)
    # the next frame depends on the state alone: from the replayed state, the same noise draws the same frame
    twin = RowNoise(9, 2)
    torch.testing.assert_close(model.sample_step(state, RowNoise(9, 2), 1.0)[0], model.sample_step(replayed, twin, 1.0)[0])


def test_clip_frames_cuts_whole_frames_from_the_first_sample():
    audio = torch.arange(11.0)
    assert clip_frames(audio, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
