import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from arcli.checkpoint import read_checkpoint, save_checkpoint
from arcli.errors import ArcliError, OptionError
from arcli.training import (
    LossOutput,
    TrainOptions,
    describe_hardware,
    format_nll,
    learning_rate_at,
    nll_metrics,
    train,
)

V = 6  # vocabulary
T = 12  # sequence length


class MarkovData:
    """Sequences from a fixed first-order Markov chain: a bigram model can learn it, down to the
    chain's entropy rate, well below ln V."""

    def __init__(self, seed=0, valid_rows=(32, 32, 7)):
        g = torch.Generator().manual_seed(seed)
        self.transitions = torch.softmax(3.0 * torch.randn(V, V, generator=g), dim=-1)  # (V, V) peaked rows
        self.valid = [self._draw(rows, g) for rows in valid_rows]

    def _draw(self, rows, generator):
        x = torch.empty(rows, T, dtype=torch.long)
        x[:, 0] = torch.randint(V, (rows,), generator=generator)
        for t in range(1, T):
            x[:, t] = torch.multinomial(self.transitions[x[:, t - 1]], 1, generator=generator).squeeze(1)
        return x

    def sample_batch(self, batch_size, generator):
        return self._draw(batch_size, generator)

    def valid_batches(self, batch_size):
        return iter(self.valid)

    def entropy_rate(self):
        return float(-(self.transitions * self.transitions.log()).sum(-1).mean())


class Bigram(nn.Module):
    """Embedding -> dropout -> linear: the dropout makes resume depend on the global RNG."""

    def __init__(self, hidden=16, dropout=0.1):
        super().__init__()
        self.embed = nn.Embedding(V, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, V)

    def forward(self, tokens):  # (B, T) -> logits of the next token (B, T, V)
        return self.out(self.drop(self.embed(tokens)))


def next_token_loss(model, batch):
    logits = model(batch[:, :-1])  # (B, T-1, V)
    targets = batch[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="sum")
    return LossOutput(objective=nll / targets.numel(), nll=nll.detach(), count=targets.numel())


def bigram(seed=0):
    torch.manual_seed(seed)
    return Bigram()


class Recorder:
    """A `save` callback that writes a real checkpoint and remembers the metrics."""

    def __init__(self, path, model):
        self.path, self.model, self.calls = path, model, []

    def __call__(self, metrics):
        self.calls.append(metrics)
        save_checkpoint(self.path, "bigram", {"hidden": 16}, self.model.state_dict(), metrics=metrics,
                        training={"steps": metrics["step"]})


def run(tmp_path, model, options, name="out", loss_fn=next_token_loss, data=None, **kwargs):
    saver = Recorder(tmp_path / f"{name}.safetensors", model)
    result = train(model, loss_fn, data or MarkovData(), options, unit=kwargs.pop("unit", "nats/token"),
                   save=saver, state_path=tmp_path / f"{name}.train.safetensors", device="cpu",
                   progress=kwargs.pop("progress", False), log=kwargs.pop("log", lambda message: None), **kwargs)
    return result, saver


def test_loss_goes_down_on_a_learnable_problem(tmp_path):
    data = MarkovData()
    options = TrainOptions(steps=150, batch_size=16, learning_rate=3e-2, warmup_steps=10, eval_every=50, save_every=150)
    result, saver = run(tmp_path, bigram(), options, data=data)
    assert not result.interrupted and result.steps == 150
    first, last = result.history[0], result.history[-1]
    assert [h["step"] for h in result.history] == [50, 100, 150]
    assert last["valid_nll"] < first["valid_nll"]
    assert result.valid_nll_per_unit == last["valid_nll"]
    assert last["valid_nll"] < 0.5 * math.log(V)  # far below the uniform model's ln V
    assert last["valid_nll"] > data.entropy_rate() - 0.05  # and no better than the true chain
    assert sum(result.losses[-20:]) < sum(result.losses[:20])
    assert [c["step"] for c in saver.calls] == [150]
    assert saver.calls[-1]["valid_nll"] == last["valid_nll"]


def test_held_out_metric_is_a_hand_computed_value(tmp_path):
    class Uniform(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(V, V))  # zero logits: every token has p = 1/V

        def forward(self, tokens):
            return self.weight[tokens]

    options = TrainOptions(steps=1, learning_rate=1e-9, warmup_steps=0, clip_norm=None)
    for unit in ("bits/sample", "nats/token"):
        result, saver = run(tmp_path, Uniform(), options, unit=unit)
        assert result.valid_nll_per_unit == pytest.approx(math.log(V), rel=1e-6)
        metrics = saver.calls[-1]
        assert metrics["step"] == 1 and metrics["valid_nll"] == pytest.approx(math.log(V), rel=1e-6)
        if unit == "bits/sample":
            assert metrics["valid_bits_per_sample"] == pytest.approx(math.log2(V), rel=1e-6)
        else:
            assert metrics["valid_nats_per_token"] == pytest.approx(math.log(V), rel=1e-6)
            assert metrics["valid_perplexity"] == pytest.approx(V, rel=1e-6)


def test_held_out_metric_averages_over_units_not_batches(tmp_path):
    table = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))  # p(0) = 1/2, p(1) = p(2) = 1/4

    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(1))

        def forward(self, n):
            return table.expand(n, 3) + 0 * self.unused

    class Batches:
        def sample_batch(self, batch_size, generator):
            return torch.zeros(batch_size, dtype=torch.long)

        def valid_batches(self, batch_size):
            return [torch.tensor([0]), torch.tensor([1, 2, 1])]  # 1 unit at ln 2, 3 units at ln 4

    def loss(model, targets):
        nll = F.cross_entropy(model(len(targets)), targets, reduction="sum")
        return LossOutput(nll / len(targets), nll.detach(), len(targets))

    result, saver = run(tmp_path, Fixed(), TrainOptions(steps=1), loss_fn=loss, data=Batches(), unit="bits/dim")
    expected = (math.log(2) + 3 * math.log(4)) / 4  # not the mean of the batch means, (ln 2 + ln 4) / 2
    assert result.valid_nll_per_unit == pytest.approx(expected, rel=1e-6)
    assert saver.calls[-1]["valid_bits_per_dim"] == pytest.approx(expected / math.log(2), rel=1e-6)


def at_training_step(k, action, loss_fn=next_token_loss):
    """`loss_fn` that calls `action()` inside the k-th training step (held-out batches not counted)."""
    steps = 0

    def loss(model, batch):
        nonlocal steps
        if model.training:
            steps += 1
            if steps == k:
                action()
        return loss_fn(model, batch)

    return loss


def loss_with_random_evaluation(model, batch):
    if not model.training:
        torch.rand(1)  # evaluation (or sampling) that draws from the global RNG must not shift training's
    return next_token_loss(model, batch)


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    options = TrainOptions(steps=10, batch_size=8, learning_rate=1e-2, warmup_steps=3, eval_every=2, save_every=6)
    straight_model = bigram(seed=0)
    straight, _ = run(tmp_path, straight_model, options, name="straight", loss_fn=loss_with_random_evaluation)

    class Crash(Exception):
        pass

    def crash():
        raise Crash

    crash_at_step_7 = at_training_step(7, crash, loss_with_random_evaluation)

    with pytest.raises(Crash):  # a crash after the snapshot of step 6
        run(tmp_path, bigram(seed=0), options, name="crashed", loss_fn=crash_at_step_7)

    resumed_model = bigram(seed=123)  # other initial weights: the state must replace them
    resumed, _ = run(tmp_path, resumed_model, TrainOptions(**{**options.__dict__, "eval_every": 5}), name="resumed",
                     loss_fn=loss_with_random_evaluation, resume_path=tmp_path / "crashed.train.safetensors")
    assert resumed.start_step == 6 and resumed.steps == 10
    assert resumed.losses == straight.losses[6:]  # bit for bit, dropout and batches included
    for name, tensor in straight_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name
    assert resumed.valid_nll_per_unit == straight.valid_nll_per_unit


def test_ctrl_c_saves_a_resumable_state_and_checkpoint(tmp_path):
    options = TrainOptions(steps=10, batch_size=8, learning_rate=1e-2, warmup_steps=3, eval_every=100, save_every=100)
    straight, _ = run(tmp_path, bigram(), options, name="straight")

    interrupt_at_step_4 = at_training_step(4, lambda: os.kill(os.getpid(), signal.SIGINT))

    handler = signal.getsignal(signal.SIGINT)
    lines = []
    stopped, saver = run(tmp_path, bigram(), options, loss_fn=interrupt_at_step_4, log=lines.append)
    state_path = tmp_path / "out.train.safetensors"
    assert stopped.interrupted and stopped.steps == 4
    assert lines[-1] == f"interrupted at step 4; resume with --resume {state_path}"
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    assert stopped.losses == straight.losses[:4]
    assert [c["step"] for c in saver.calls] == [4]
    ckpt = read_checkpoint(tmp_path / "out.safetensors", expected_model="bigram")
    assert ckpt.metrics["step"] == 4 and ckpt.metrics.get("valid_nll") == stopped.valid_nll_per_unit  # none measured yet

    resumed, _ = run(tmp_path, bigram(seed=5), options, name="resumed", resume_path=state_path)
    assert resumed.losses == straight.losses[4:]
    assert not resumed.interrupted and resumed.valid_nll_per_unit == straight.valid_nll_per_unit


def test_sigterm_stops_too(tmp_path):
    terminate_at_step_2 = at_training_step(2, lambda: os.kill(os.getpid(), signal.SIGTERM))

    result, _ = run(tmp_path, bigram(), TrainOptions(steps=5, warmup_steps=1), loss_fn=terminate_at_step_2)
    assert result.interrupted and result.steps == 2
    assert (tmp_path / "out.train.safetensors").exists()


def test_resuming_a_finished_run_asks_for_more_steps(tmp_path):
    options = TrainOptions(steps=3, warmup_steps=1)
    run(tmp_path, bigram(), options)
    with pytest.raises(OptionError, match="already at step 3; ask for more steps"):
        run(tmp_path, bigram(), options, name="again", resume_path=tmp_path / "out.train.safetensors")


def test_progress_bar_shows_the_running_loss_in_the_models_unit(tmp_path, capsys):
    lines = []
    run(tmp_path, bigram(), TrainOptions(steps=3, warmup_steps=1, eval_every=2), unit="bits/sample",
        progress=True, log=lines.append)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "bits/sample" in captured.err and "3/3" in captured.err
    assert lines[0].startswith("step 2/3: train ") and "bits/sample, valid " in lines[0]


def test_diverging_loss_is_a_clear_error(tmp_path):
    def nan_loss(model, batch):
        out = next_token_loss(model, batch)
        return LossOutput(out.objective * float("nan"), out.nll, out.count)

    with pytest.raises(ArcliError, match="training diverged at step 1"):
        run(tmp_path, bigram(), TrainOptions(steps=3), loss_fn=nan_loss)


@pytest.mark.parametrize("change, message", [
    ({"steps": 0}, "steps must be a whole number >= 1"),
    ({"batch_size": 0}, "batch size must be a whole number >= 1"),
    ({"learning_rate": 0.0}, "learning rate must be a positive number"),
    ({"clip_norm": -1.0}, "clip norm must be a positive number"),
    ({"amp": True}, "mixed precision needs a CUDA device"),
])
def test_bad_options(tmp_path, change, message):
    with pytest.raises(OptionError, match=message):
        run(tmp_path, bigram(), TrainOptions(**change))


def test_learning_rate_schedule():
    options = TrainOptions(steps=1100, learning_rate=1.0, warmup_steps=100)
    assert learning_rate_at(0, options) == pytest.approx(0.01)
    assert learning_rate_at(99, options) == pytest.approx(1.0)
    assert learning_rate_at(100, options) == pytest.approx(1.0)
    assert learning_rate_at(600, options) == pytest.approx(0.55)  # half-way down the cosine
    assert learning_rate_at(1100, options) == pytest.approx(0.1)
    assert learning_rate_at(0, TrainOptions(steps=10, learning_rate=2.0, warmup_steps=0)) == 2.0  # no warm-up


def test_units():
    assert nll_metrics(math.log(2), "bits/sample") == {"bits_per_sample": pytest.approx(1.0)}
    assert nll_metrics(math.log(8), "nats/token") == {"nats_per_token": math.log(8), "perplexity": pytest.approx(8.0)}
    assert format_nll(math.log(4), "bits/dim") == "2.000 bits/dim"
    assert format_nll(math.log(8), "nats/token") == "2.079 nats/token (perplexity 8.00)"


def test_describe_hardware():
    assert describe_hardware("cpu") == f"cpu ({os.cpu_count()} cores), torch {torch.__version__}"
