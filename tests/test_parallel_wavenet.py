"""The Parallel WaveNet student: an IAF whose sample t depends only on noise up to t (and its
shift and scale only on noise before t), with an exact log-determinant; and distillation from a
gaussian WaveNet vocoder through the real CLI, with its user mistakes."""

import pytest
import torch
from test_gaussian_wavenet import gaussian_vocoder  # noqa: F401  (the teacher fixture)
from test_vocoder import vocoder  # noqa: F401  (a categorical teacher, to refuse)

from arcli.models.parallel_wavenet import ParallelWaveNet, ParallelWaveNetConfig
from arcli.models.wavenet import LocalCondition


def tiny_student(flows=3) -> ParallelWaveNet:
    torch.manual_seed(0)
    config = ParallelWaveNetConfig(flows=flows, layers_per_flow=3, residual_channels=6, dilation_channels=6, skip_channels=8,
                                   end_channels=8, cond_channels=5, cond_hidden=4, cond_hop=4, min_log_scale=-3.0)
    model = ParallelWaveNet(config).double().eval()
    with torch.no_grad():  # flows that move and scale their input a lot, so dependence is easy to see
        for flow in model.flows:
            torch.nn.init.normal_(flow.head[3].weight, std=0.5)
    return model


def test_sample_t_depends_only_on_noise_up_to_t_and_its_gaussian_on_noise_before_t():
    model = tiny_student()
    noise, frames = torch.randn(2, 40, dtype=torch.float64), LocalCondition(torch.randn(2, 12, 5, dtype=torch.float64))
    with torch.no_grad():
        base = model(noise, frames)
        for t in (0, 17, 39):
            moved = noise.clone()
            moved[:, t] += 1.0
            out = model(moved, frames)
            assert torch.equal(out.audio[:, :t], base.audio[:, :t])  # nothing before t changes
            assert torch.equal(out.mean[:, : t + 1], base.mean[:, : t + 1])  # M_t and S_t: noise before t only
            assert torch.equal(out.log_scale[:, : t + 1], base.log_scale[:, : t + 1])
            assert (out.audio[:, t] - base.audio[:, t]).abs().min() > 0  # z_t moves x_t
            if t < 39:
                assert (out.audio[:, t + 1 :] - base.audio[:, t + 1 :]).abs().max() > 0  # and later samples
    torch.testing.assert_close(base.audio, noise * base.log_scale.exp() + base.mean)  # x_t = z_t S_t + M_t


def test_log_determinant_equals_a_brute_force_jacobian():
    model = tiny_student()
    noise, frames = torch.randn(1, 12, dtype=torch.float64), LocalCondition(torch.randn(1, 4, 5, dtype=torch.float64))
    jacobian = torch.autograd.functional.jacobian(lambda z: model(z[None], frames).audio[0], noise[0])  # (12, 12)
    assert torch.equal(jacobian.triu(1), torch.zeros_like(jacobian))  # autoregressive: lower triangular
    sign, log_abs_det = torch.linalg.slogdet(jacobian)
    with torch.no_grad():
        out = model(noise, frames)
    assert float(sign) == 1.0
    assert float(out.log_scale.sum()) == pytest.approx(float(log_abs_det), abs=1e-9)
    # the density of x by the change of variables, against ParallelWaveNet.log_density
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(noise).sum() - log_abs_det
    assert float(ParallelWaveNet.log_density(noise, out).sum()) == pytest.approx(float(expected), abs=1e-9)
