"""The GPU path: every family agrees with itself on CUDA and with the CPU (skipped without CUDA).

For each registered family, a tiny randomly initialised model with its kind of condition:
- `step` == `forward` on CUDA (the model contract, on the device);
- CUDA and CPU give the same likelihood of the same tokens (within float tolerance) and the same
  greedy output;
- seeded sampling on CUDA gives the same tokens twice.
And one mixed-precision (bf16 where supported) training run on CUDA learns.

ARCLI_TEST_DEVICE=cpu runs the same checks with the CPU in place of CUDA (CPU against itself), so
that the file is exercised on machines without a GPU: `ARCLI_TEST_DEVICE=cpu pytest tests/test_cuda.py`.
"""

import os

import pytest
import torch
from contract import run_steps

from arcli.decoding import generate
from arcli.models.transformer import Source
from arcli.models.wavenet import LocalCondition
from arcli.registry import family_names, get_family

DEVICE = os.environ.get("ARCLI_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA (ARCLI_TEST_DEVICE=cpu runs the checks on the CPU)"
)
B, T = 3, 12  # rows, positions


def labels(classes):
    return lambda g: torch.randint(classes, (B,), generator=g)


def speakers_and_frames(channels, hop, speakers=0):
    def make(g):
        frames = torch.randn(B, T // hop + 2, channels, generator=g)  # (B, F, channels)
        ids = torch.randint(speakers, (B,), generator=g) if speakers else None
        return LocalCondition(frames, None, ids)
    return make


def source(vocab):
    def make(g):
        lengths = torch.tensor([5, 3, 4])
        tokens = torch.randint(2, vocab, (B, 5), generator=g) * (torch.arange(5) < lengths[:, None])
        return Source(tokens, lengths)
    return make


WAVENET = {"residual_channels": 8, "dilation_channels": 8, "skip_channels": 16, "end_channels": 16, "layers_per_stack": 3,
           "stacks": 1, "quantization_channels": 16}
TEXT = {"d_model": 16, "heads": 2, "decoder_layers": 1, "ff_dim": 32, "vocab_size": 30, "dropout": 0.0}
BINARY = {"height": 3, "width": 4, "num_classes": 2}
# family -> (tiny settings, condition maker (a torch.Generator -> condition), the tokens' vocabulary)
CASES = {
    "wavenet": ({**WAVENET, "num_speakers": 2}, labels(2), 16),
    "wavenet-vocoder": ({**WAVENET, "cond_channels": 4, "cond_hidden": 8, "cond_hop": 4}, speakers_and_frames(4, 4), 16),
    "wavenet-tts": ({**WAVENET, "cond_channels": 5, "cond_hidden": 8, "cond_hop": 4, "num_speakers": 2}, speakers_and_frames(5, 4, 2), 16),
    "pixelcnn": ({"height": 3, "width": 4, "levels": 8, "hidden": 8, "layers": 2, "kernel": 3, "first_kernel": 3, "num_classes": 3},
                 labels(3), 8),
    "pixelrnn-row": ({"height": 3, "width": 4, "levels": 8, "hidden": 8, "layers": 2, "first_kernel": 3, "num_classes": 3}, labels(3), 8),
    "pixelrnn-diagonal": ({"height": 3, "width": 4, "levels": 8, "hidden": 8, "layers": 2, "first_kernel": 3, "num_classes": 3},
                          labels(3), 8),
    "fvsbn": (BINARY, labels(2), 2),
    "nade": ({**BINARY, "hidden": 8}, labels(2), 2),
    "made": ({**BINARY, "hidden": "[8]"}, labels(2), 2),
    "transformer": ({**TEXT, "encoder_layers": 1}, source(30), 30),
    "rnn-attention": ({"embed_dim": 8, "hidden": 8, "vocab_size": 30, "dropout": 0.0}, source(30), 30),
    "transformer-lm": (TEXT, lambda g: None, 30),
    "tcn": ({"channels": 8, "levels": 2, "vocab_size": 30, "eos_id": 1, "dropout": 0.0}, lambda g: None, 30),
    "lstm-lm": ({"hidden": 8, "embed_dim": 4, "layers": 2, "vocab_size": 30, "eos_id": 1, "dropout": 0.0}, lambda g: None, 30),
}


@pytest.fixture(autouse=True, scope="module")
def exact_float32():
    """TF32 matmuls would round to 10 bits of mantissa: compare in true float32."""
    if not torch.cuda.is_available():
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(to(v, device) for v in value))
    return value


# Families without tokens sample beside the engine (arcli/decoding/continuous.py): these checks of
# logits, greedy decoding and token sampling do not apply to them.
TOKENLESS = {"vrnn", "rnn-gauss", "parallel-wavenet"}


def tiny(name):
    if name in TOKENLESS:
        pytest.skip(f"'{name}' has no tokens: no logits, greedy or token sampling to compare")
    if name not in CASES:
        pytest.skip(f"no tiny case for '{name}' here (a plugin or a new family): add one to CASES")
    settings, condition, vocab = CASES[name]
    family = get_family(name)
    torch.manual_seed(0)
    model = family.build(family.config(overrides={k: str(v) for k, v in settings.items()})).eval()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(vocab, (B, T), generator=g)
    if getattr(model, "eos_id", None) is not None:
        tokens = tokens.clamp(min=2)  # no EOS or padding inside the sequence
    return model, tokens, condition(g)


@pytest.mark.parametrize("name", family_names())
def test_step_equals_forward_on_the_device(name):
    model, tokens, condition = tiny(name)
    model, tokens, condition = model.to(DEVICE), tokens.to(DEVICE), to(condition, DEVICE)
    with torch.no_grad():
        parallel = model(tokens, condition)
        stepped, _ = run_steps(model, model.start(B, condition), tokens)
    torch.testing.assert_close(stepped, parallel, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", family_names())
def test_the_device_and_the_cpu_agree(name):
    model, tokens, condition = tiny(name)
    with torch.no_grad():
        cpu_logits = model(tokens, condition)
        cpu_greedy = generate(model, "greedy", max_length=T, batch_size=B, condition=condition)
        model = model.to(DEVICE)
        logits = model(tokens.to(DEVICE), to(condition, DEVICE))
        greedy = generate(model, "greedy", max_length=T, batch_size=B, condition=to(condition, DEVICE))

    def likelihood(values):  # log p(tokens) per row, in nats
        return values.float().log_softmax(-1).gather(-1, tokens.to(values.device)[..., None]).squeeze(-1).sum(-1).cpu()

    torch.testing.assert_close(likelihood(logits), likelihood(cpu_logits), rtol=1e-5, atol=1e-4)
    assert [h[0].tokens for h in greedy] == [h[0].tokens for h in cpu_greedy]
    for on_device, on_cpu in zip(greedy, cpu_greedy, strict=True):
        assert on_device[0].logprob == pytest.approx(on_cpu[0].logprob, rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("name", family_names())
def test_seeded_sampling_repeats_on_the_device(name):
    model, _, condition = tiny(name)
    model, condition = model.to(DEVICE), to(condition, DEVICE)
    runs = [generate(model, "sample", max_length=T, batch_size=B, condition=condition, seed=7) for _ in range(2)]
    assert [h[0].tokens for h in runs[0]] == [h[0].tokens for h in runs[1]]
    other = generate(model, "sample", max_length=T, batch_size=B, condition=condition, seed=8)
    assert len(other) == B


def test_mixed_precision_training_learns_on_the_device(tmp_path):
    from test_training import MarkovData, bigram, next_token_loss

    from arcli.training import TrainOptions, train

    amp = DEVICE == "cuda"  # bf16 autocast where supported (fp16 with a gradient scaler otherwise)
    options = TrainOptions(steps=60, batch_size=16, learning_rate=3e-2, warmup_steps=5, eval_every=60, save_every=60, amp=amp)
    result = train(bigram(), next_token_loss, MarkovData(), options, unit="nats/token", save=lambda metrics: None,
                   state_path=tmp_path / "s.train.safetensors", device=DEVICE, progress=False, log=lambda m: None)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert sum(result.losses[-10:]) < 0.8 * sum(result.losses[:10])
