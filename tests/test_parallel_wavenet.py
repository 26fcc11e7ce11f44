"""The Parallel WaveNet student: an IAF whose sample t depends only on noise up to t (and its
shift and scale only on noise before t), with an exact log-determinant; and distillation from a
gaussian WaveNet vocoder through the real CLI, with its user mistakes."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from clihelpers import one_line_error, run
from test_gaussian_wavenet import GAUSSIAN_VOCODER_SETTINGS, gaussian_vocoder  # noqa: F401  (the teacher fixture)
from test_vocoder import vocoder  # noqa: F401  (a categorical vocoder, to refuse as a teacher)
from test_wavenet_cli import RATE, ROOT, ok, write_corpus

from arcli.checkpoint import read_checkpoint
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


STUDENT_SETTINGS = ["--set", "flows=2", "--set", "layers_per_flow=3", "--set", "residual_channels=4", "--set", "dilation_channels=4",
                    "--set", "skip_channels=8", "--set", "end_channels=8", "--set", "cond_hidden=4"]


def distil(teacher, corpus, out, *args):
    return run("train", "parallel-wavenet", "--teacher", teacher, "--data", corpus, "-o", out, *STUDENT_SETTINGS, "--steps", 2,
               "--batch-size", 2, "--eval-every", 2, "--warmup-steps", 1, "--device", "cpu", "--quiet", *args)


@pytest.fixture(scope="module")
def student(gaussian_vocoder, tmp_path_factory):  # noqa: F811
    corpus, teacher = gaussian_vocoder
    out = tmp_path_factory.mktemp("student") / "student.safetensors"
    ok(distil(teacher, corpus, out))
    return corpus, teacher, out


def test_distilled_student_resynthesises_a_clip_and_reports_its_own_density(student, tmp_path):
    corpus, teacher, checkpoint = student
    stored = read_checkpoint(checkpoint)
    assert stored.model_name == "parallel-wavenet" and stored.config["cond_channels"] == 16 and stored.config["sample_rate"] == RATE
    assert stored.data["teacher"]["path"] == str(teacher) and 0 < stored.metrics["valid_bits_per_sample"] < 17
    clip = corpus / "alice" / "1.wav"
    runs = [run("sample", "parallel-wavenet", "-c", checkpoint, "--mel-from", clip, "--seed", 5, "-o", tmp_path / f"{i}.wav",
                "--device", "cpu") for i in range(2)]
    for result in runs:
        ok(result)
        assert "exact density of its own samples" in result.stderr and "bits per 16-bit sample" in result.stderr
    audio, rate = sf.read(tmp_path / "0.wav", dtype="int16")
    assert rate == RATE and len(audio) == len(sf.read(clip)[0]) and np.abs(audio).max() > 0
    assert np.array_equal(audio, sf.read(tmp_path / "1.wav", dtype="int16")[0])  # --seed repeats
    ok(run("sample", "parallel-wavenet", "-c", checkpoint, "--mel-from", clip, "-n", 2, "--seed", 5, "-o", tmp_path / "n.wav"))
    assert np.array_equal(sf.read(tmp_path / "n-1.wav", dtype="int16")[0], audio)  # row 0 alone or in a batch
    # the teacher scores the student's output like any audio
    scored = ok(run("score-likelihood", "wavenet-vocoder", "-c", teacher, tmp_path / "0.wav", "--device", "cpu"))
    assert 0 < float(scored.stdout.split("\t")[1]) < 17


def test_student_mistakes_are_one_line(student, vocoder, tmp_path):  # noqa: F811
    corpus, teacher, checkpoint = student
    _, categorical = vocoder
    clip, out = corpus / "alice" / "1.wav", tmp_path / "out.wav"
    one_line_error(run("score-likelihood", "parallel-wavenet", "-c", checkpoint, clip), "density only of its own samples")
    one_line_error(run("sample", "parallel-wavenet", "-c", checkpoint, "--seconds", 1, "-o", out), "--mel-from CLIP.wav")
    one_line_error(run("sample", "parallel-wavenet", "-c", checkpoint, "--mel-from", clip, "--seconds", 1, "-o", out),
                   "--seconds does not apply")
    one_line_error(run("sample", "parallel-wavenet", "-c", checkpoint, "--mel-from", clip, "--top-k", 3, "-o", out), "--temperature")
    one_line_error(run("sample", "parallel-wavenet", "-c", checkpoint, "--mel-from", tmp_path / "none.wav", "-o", out), "none.wav")
    assert not out.exists()
    student = tmp_path / "s.safetensors"
    one_line_error(distil(categorical, corpus, student), "categorical", "--set output=gaussian")
    one_line_error(distil(checkpoint, corpus, student), "'parallel-wavenet' checkpoint")
    one_line_error(distil(teacher, corpus, student, "--set", "cond_channels=7"), "cond_channels=7", "teacher's 16")
    one_line_error(run("train", "parallel-wavenet", "--data", corpus, "-o", student), "--teacher")
    one_line_error(run("train", "wavenet", "--teacher", teacher, "--data", corpus, "-o", student), "--teacher is for parallel-wavenet")
    assert not student.exists()


def test_the_gpu_recipe_runs_and_resumes_with_tiny_settings_on_the_cpu(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    for split, names in (("train", ("1.wav", "2.wav")), ("valid", ("0.wav",))):
        for speaker in ("alice", "bob"):
            (tmp_path / "speech" / split / speaker).mkdir(parents=True)
            for name in names:
                shutil.copy(corpus / speaker / name, tmp_path / "speech" / split / speaker / name)
    env = {**os.environ, "DEVICE": "cpu", "BATCH": "2", "ARCLI": f"{sys.executable} -m arcli", "OMP_NUM_THREADS": "1",
           "TEACHER_SET": " ".join(GAUSSIAN_VOCODER_SETTINGS[:-2]), "STUDENT_SET": " ".join(STUDENT_SETTINGS)}
    script, out = ROOT / "examples" / "gpu" / "train_parallel_wavenet.sh", tmp_path / "out"
    first = subprocess.run(["bash", script, tmp_path / "speech", out, "2", "2"], env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "teacher: at step 2 of 2" in first.stderr and "student: at step 2 of 2" in first.stderr, first.stderr
    again = subprocess.run(["bash", script, tmp_path / "speech", out, "2", "3"], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "teacher: done" in again.stderr and "student: at step 3 of 3" in again.stderr, again.stderr
    assert read_checkpoint(out / "student.safetensors").metrics["step"] == 3
    assert "resum" in (out / "student.log").read_text().lower()
