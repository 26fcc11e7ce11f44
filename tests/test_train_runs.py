"""What a user sees of a training run: resuming without repeating --set, the metrics log, stale
temporary files, TensorBoard, curves, and checkpoints checked against their own tensors."""

import math
import random

import pytest
import torch
from clihelpers import one_line_error, run
from PIL import Image
from test_training import MarkovData, V, next_token_loss

from arcli.checkpoint import check_fits, read_checkpoint, save_checkpoint
from arcli.curves import TRAIN_COLOUR, VALID_COLOUR, curves, nice_ticks
from arcli.errors import CheckpointError
from arcli.metrics_log import MetricsLog, metrics_log_path, read_metrics
from arcli.registry import get_family
from arcli.training import TrainOptions, learning_rate_at, train

TINY = {"d_model": 16, "heads": 2, "decoder_layers": 1, "ff_dim": 32, "vocab_size": 260, "dropout": 0.0}
SETTINGS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
WORDS = "the dog cat big small house red green runs sleeps eats and a of".split()


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))) for _ in range(120)) + "\n")
    return path


def lm(text, out, *extra):
    # A long warm-up keeps the learning rate of each step independent of --steps.
    return run("train", "transformer-lm", "--data", text, "-o", out, "--batch-size", 4, "--warmup-steps", 100, "--lr", 0.05,
               "--log-every", 1, "--eval-every", 100, "--device", "cpu", "--quiet", *extra)


def train_losses(out):
    return [r["loss"] for r in read_metrics(metrics_log_path(out)) if r["kind"] == "train"]


# -------------------------------------------------------------------------------------------------
# resuming


def test_resume_takes_the_model_settings_from_the_training_state(text, tmp_path):
    whole, part = tmp_path / "whole.safetensors", tmp_path / "part.safetensors"
    assert lm(text, whole, "--steps", 6, *SETTINGS).exit_code == 0
    assert lm(text, part, "--steps", 4, *SETTINGS).exit_code == 0
    resumed = lm(text, part, "--steps", 6, "--resume", tmp_path / "part.train.safetensors")  # no --set
    assert resumed.exit_code == 0, resumed.output
    assert read_checkpoint(part).config == read_checkpoint(whole).config
    assert train_losses(part) == train_losses(whole)  # bit for bit on the CPU
    for name, tensor in read_checkpoint(part).tensors.items():
        assert torch.equal(tensor, read_checkpoint(whole).tensors[name]), name
    # Repeating a setting is fine; changing one is refused.
    again = lm(text, part, "--steps", 7, "--resume", tmp_path / "part.train.safetensors", "--set", "d_model=16")
    assert again.exit_code == 0, again.output
    one_line_error(lm(text, part, "--steps", 8, "--resume", tmp_path / "part.train.safetensors", "--set", "d_model=32"),
                   "--set d_model=32 (started with 16)", "keeps the model settings")


def test_resuming_another_models_training_state(text, tmp_path):
    out = tmp_path / "lm.safetensors"
    assert lm(text, out, "--steps", 1, *SETTINGS).exit_code == 0
    one_line_error(run("train", "wavenet", "--data", tmp_path, "-o", tmp_path / "w.safetensors", "--resume", tmp_path / "lm.train.safetensors"),
                   "training state of 'transformer-lm', not of 'wavenet'")
    one_line_error(lm(text, out, "--steps", 2, "--resume", out), "is a model checkpoint, not a training state")


# -------------------------------------------------------------------------------------------------
# the metrics log


class Uniform(torch.nn.Module):
    """Zero logits: every token has p = 1/V, whatever the (tiny) updates do to them."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(V, V))

    def forward(self, tokens):
        return self.weight[tokens]


def test_metrics_log_lines_hold_hand_computed_values(tmp_path):
    options = TrainOptions(steps=5, batch_size=4, learning_rate=1e-9, warmup_steps=2, eval_every=3, log_every=2, clip_norm=None)
    train(Uniform(), next_token_loss, MarkovData(), options, unit="bits/sample", save=lambda metrics: None,
          state_path=tmp_path / "m.train.safetensors", device="cpu", progress=False, log=lambda m: None,
          metrics_path=tmp_path / "m.metrics.jsonl")
    records = read_metrics(tmp_path / "m.metrics.jsonl")
    # train lines every 2 steps and at the end (a save); valid lines at each evaluation (3 and 5)
    assert [(r["kind"], r["step"]) for r in records] == [("train", 2), ("valid", 3), ("train", 4), ("train", 5), ("valid", 5)]
    for record in records:
        if record["kind"] == "train":
            assert record["loss"] == pytest.approx(math.log(V), rel=1e-6)
            assert record["train_nll"] == pytest.approx(math.log(V), rel=1e-6)
            assert record["train_bits_per_sample"] == pytest.approx(math.log2(V), rel=1e-6)
            assert record["lr"] == learning_rate_at(record["step"] - 1, options)
        else:
            assert record["valid_bits_per_sample"] == pytest.approx(math.log2(V), rel=1e-6)
        assert record["wall_seconds"] >= 0
    assert [r["wall_seconds"] for r in records] == sorted(r["wall_seconds"] for r in records)


def test_a_resumed_log_drops_the_steps_after_the_state(tmp_path):
    path = tmp_path / "m.metrics.jsonl"
    path.write_text("".join(f'{{"kind": "train", "step": {s}, "loss": {s}}}\n' for s in (10, 20, 30)) + '{"kind": "tr')
    assert [r["step"] for r in read_metrics(path)] == [10, 20, 30]  # a line cut short at the end is skipped
    log = MetricsLog(path, resume_step=20)
    log.write({"kind": "train", "step": 21, "loss": 1.0})
    log.close()
    assert [r["step"] for r in read_metrics(path)] == [10, 20, 21]
    MetricsLog(path).close()  # a new run starts a new log
    assert read_metrics(path) == []


def test_a_damaged_log_is_one_clear_error(tmp_path):
    path = tmp_path / "m.metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(Exception, match="damaged at line 2"):
        read_metrics(path)


def test_stale_temporary_files_of_the_output_are_removed(text, tmp_path):
    out = tmp_path / "lm.safetensors"
    stale = [tmp_path / ".lm.safetensors.0123456789ab.tmp", tmp_path / ".lm.train.safetensors.abcdefabcdef.tmp"]
    others = [tmp_path / ".other.safetensors.0123456789ab.tmp", tmp_path / ".lm.safetensors.mine.tmp", tmp_path / "lm.tmp"]
    for path in stale + others:
        path.write_bytes(b"half a file")
    result = lm(text, out, "--steps", 1, *SETTINGS)
    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in others)
    assert "removed 1 stale temporary file(s) of" in result.stderr


def test_log_dir_without_tensorboard_is_one_line(text, tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        one_line_error(lm(text, tmp_path / "m.safetensors", "--steps", 1, *SETTINGS, "--log-dir", tmp_path / "tb"),
                       "pip install 'arcli[tensorboard]'")
        assert not (tmp_path / "m.safetensors").exists()
    else:
        assert lm(text, tmp_path / "m.safetensors", "--steps", 2, *SETTINGS, "--log-dir", tmp_path / "tb").exit_code == 0
        assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


# -------------------------------------------------------------------------------------------------
# curves


def test_nice_ticks():
    assert nice_ticks(0.3, 4.2) == [0, 1, 2, 3, 4, 5]
    assert nice_ticks(0, 1000, 10) == [0, 200, 400, 600, 800, 1000]
    assert nice_ticks(2.91, 3.07) == [2.9, 2.95, 3.0, 3.05, 3.1]
    assert nice_ticks(5, 5) == [4.4, 4.6, 4.8, 5.0, 5.2, 5.4, 5.6]  # a flat curve gets a unit-wide band around it
    with pytest.raises(ValueError):
        nice_ticks(1, math.inf)


def test_curves_pick_the_models_unit():
    records = [{"kind": "train", "step": 10, "train_bits_per_dim": 4.0, "train_nll": 2.77},
               {"kind": "valid", "step": 10, "valid_bits_per_dim": 3.5},
               {"kind": "train", "step": 20, "loss": 1.0}]  # a line without the unit's figure is left out
    assert curves(records, "bits/dim") == ([(10, 4.0)], [(10, 3.5)])


def test_models_info_plots_the_curves_of_a_checkpoint(text, tmp_path):
    out = tmp_path / "lm.safetensors"
    assert lm(text, out, "--steps", 2, *SETTINGS).exit_code == 0
    # A hand-written log: training falls from 5 to 1 nats/token over 100 steps, held-out from 4 to 2.
    lines = [f'{{"kind": "train", "step": {s}, "train_nats_per_token": {5 - 4 * s / 100}}}' for s in range(10, 101, 10)]
    lines += [f'{{"kind": "valid", "step": {s}, "valid_nats_per_token": {v}}}' for s, v in ((50, 4.0), (100, 2.0))]
    metrics_log_path(out).write_text("\n".join(lines) + "\n")
    plot = tmp_path / "curve.png"
    result = run("models", "info", out, "--plot", plot)
    assert result.exit_code == 0, result.output
    assert "transformer-lm" in result.stdout and f"checkpoint: {out}" in result.stdout
    image = Image.open(plot).convert("RGB")
    assert image.size == (800, 480)
    pixels = image.load()
    train = [(x, y) for x in range(800) for y in range(480) if pixels[x, y] == TRAIN_COLOUR]
    valid = [(x, y) for x in range(800) for y in range(480) if pixels[x, y] == VALID_COLOUR]
    assert train and valid
    curve = [(x, y) for x, y in train if y > 60]  # leave the legend out
    first, last = min(curve), max(curve)
    assert min(y for x, y in curve if x == first[0]) < min(y for x, y in curve if x == last[0])  # falls: higher on the left
    one_line_error(run("models", "info", out, "--plot", plot), "already exists")
    metrics_log_path(out).unlink()
    one_line_error(run("models", "info", out, "--plot", tmp_path / "other.png"), "no metrics log")


# -------------------------------------------------------------------------------------------------
# checkpoints checked against their own tensors


def tiny_lm_checkpoint(tmp_path, config_changes):
    family = get_family("transformer-lm")
    config = family.config(overrides={k: str(v) for k, v in TINY.items()})
    model = family.build(config)
    path = tmp_path / "lm.safetensors"
    save_checkpoint(path, "transformer-lm", {**config.__dict__, **config_changes}, model.state_dict(), tokenizer={"kind": "bytes"})
    return path


def test_a_config_that_does_not_match_its_tensors_is_refused_before_building(tmp_path):
    path = tiny_lm_checkpoint(tmp_path, {"d_model": 32})
    stored = read_checkpoint(path)
    family = get_family("transformer-lm")
    with pytest.raises(CheckpointError, match=r"does not match its own config \(.*is \(16,\) in the file but \(32,\) by its config"):
        check_fits(stored, family.build, family.config(stored.config))
    one_line_error(run("sample", "transformer-lm", "-c", path, "--device", "cpu"), "does not match its own config")


def test_a_config_asking_for_absurd_sizes_is_refused_without_allocating(tmp_path):
    # 2^20 channels would need terabytes; the check builds on the meta device and allocates nothing.
    path = tiny_lm_checkpoint(tmp_path, {"d_model": 2**20, "ff_dim": 2**22, "heads": 1})
    one_line_error(run("sample", "transformer-lm", "-c", path, "--device", "cpu"), "does not match its own config")
    one_line_error(run("models", "info", path), "does not match its own config")


def test_a_model_larger_than_the_memory_is_refused(tmp_path, monkeypatch):
    path = tiny_lm_checkpoint(tmp_path, {})
    stored = read_checkpoint(path)
    family = get_family("transformer-lm")
    check_fits(stored, family.build, family.config(stored.config))  # fits
    monkeypatch.setattr("arcli.checkpoint._memory", lambda device: (1000, "of this machine"))
    with pytest.raises(CheckpointError, match=r"more than the 0.0 GiB of memory of this machine"):
        check_fits(stored, family.build, family.config(stored.config))


# -------------------------------------------------------------------------------------------------
# --device cuda without CUDA


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", [
    ["train", "transformer-lm", "--data", "x.txt", "-o", "m.safetensors"],
    ["sample", "wavenet", "--seconds", "0.01"],
    ["score-likelihood", "pixelcnn", "x.png"],
    ["complete-image", "pixelcnn", "x.png", "-o", "out.png"],
    ["beam-translate", "transformer"],
])
def test_device_cuda_without_cuda_is_one_line(command, text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text(text.read_text())
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    one_line_error(run(*command, "--device", "cuda"), "--device cuda: no CUDA device is available here")


# -------------------------------------------------------------------------------------------------
# generation too large for one run is refused up front


def test_too_many_samples_are_refused_before_loading_the_model(tmp_path):
    one_line_error(run("sample", "pixelcnn", "-n", 5000, "-o", tmp_path / "grid.png", "--device", "cpu"),
                   "--count 5000 is more than the 1024 samples one run generates")
    one_line_error(run("sample", "wavenet", "-n", 4, "--seconds", 600, "-o", tmp_path / "a.wav", "--device", "cpu"),
                   "2400 s of audio, more than the 1800 s one run holds")
    assert not list(tmp_path.iterdir())
