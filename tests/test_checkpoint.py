import json
import os
import struct
from dataclasses import asdict, dataclass

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from arcli.checkpoint import (
    FORMAT,
    Checkpoint,
    atomic_write,
    load_training_state,
    read_checkpoint,
    save_checkpoint,
    save_training_state,
    training_state_path,
)
from arcli.errors import ArcliError, CheckpointError


@dataclass
class TinyConfig:
    vocab_size: int = 5
    hidden: int = 3


class Tied(nn.Module):
    """An embedding tied to the output layer, a non-contiguous buffer and an integer buffer."""

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.out = nn.Linear(config.hidden, config.vocab_size, bias=True)
        self.out.weight = self.embed.weight  # tied: the same storage under two names
        self.register_buffer("transposed", torch.arange(6.0).view(2, 3).t())  # not contiguous
        self.register_buffer("counts", torch.tensor([1, 2, 3]))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return Tied(TinyConfig())


def write_checkpoint(path, model_name="wavenet", **kwargs):
    model = tiny_model()
    return save_checkpoint(path, model_name, TinyConfig(), model.state_dict(), **kwargs), model


# -------------------------------------------------------------------------------------------------
# round trip


def test_round_trip_keeps_tensors_config_and_metadata(tmp_path):
    path, model = write_checkpoint(
        tmp_path / "m.safetensors",
        data={"sample_rate": 16000, "levels": 256},
        tokenizer=None,
        training={"command": "arcli train wavenet", "steps": 10, "seed": 0},
        metrics={"valid_bits_per_sample": 2.9},
    )
    ckpt = read_checkpoint(path, expected_model="wavenet")
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.path == path and ckpt.model_name == "wavenet"
    assert ckpt.config == asdict(TinyConfig())
    assert TinyConfig(**ckpt.config) == TinyConfig()
    assert ckpt.data == {"sample_rate": 16000, "levels": 256}
    assert ckpt.tokenizer is None
    assert ckpt.training == {"command": "arcli train wavenet", "steps": 10, "seed": 0}
    assert ckpt.metrics == {"valid_bits_per_sample": 2.9}
    state = model.state_dict()
    assert set(ckpt.tensors) == set(state)
    for name, tensor in state.items():
        assert ckpt.tensors[name].dtype == tensor.dtype
        assert torch.equal(ckpt.tensors[name], tensor), name

    fresh = tiny_model(seed=1)
    fresh.load_state_dict(ckpt.tensors)
    assert fresh.out.weight is fresh.embed.weight  # still tied after loading
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_metadata_values_are_json(tmp_path):
    path, _ = write_checkpoint(tmp_path / "m.safetensors", tokenizer={"kind": "bpe", "merges": [["a", "b"]]})
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["arcli.format"]) == FORMAT
    assert json.loads(meta["arcli.model"]) == "wavenet"
    assert TinyConfig(**json.loads(meta["arcli.config"])) == TinyConfig()
    assert json.loads(meta["arcli.tokenizer"]) == {"kind": "bpe", "merges": [["a", "b"]]}
    assert read_checkpoint(path).tokenizer == {"kind": "bpe", "merges": [["a", "b"]]}


def test_config_may_be_a_dict(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", "nade", {"hidden": 7}, {"w": torch.ones(2)})
    assert read_checkpoint(path).config == {"hidden": 7}


def test_float16_option_halves_floating_tensors_only(tmp_path):
    path, model = write_checkpoint(tmp_path / "m.safetensors", dtype=torch.float16)
    ckpt = read_checkpoint(path)
    assert ckpt.tensors["embed.weight"].dtype == torch.float16  # returned as stored
    assert ckpt.tensors["counts"].dtype == torch.int64
    fresh = tiny_model(seed=1)
    fresh.load_state_dict(ckpt.tensors)  # copies into the fp32 parameters
    assert fresh.embed.weight.dtype == torch.float32
    torch.testing.assert_close(fresh.embed.weight, model.embed.weight, atol=1e-3, rtol=1e-3)
    full = save_checkpoint(tmp_path / "full.safetensors", "wavenet", TinyConfig(), model.state_dict())
    assert os.path.getsize(path) < os.path.getsize(full)


def test_tensors_are_moved_to_cpu_and_views_are_not_shared(tmp_path):
    big = torch.arange(12.0)
    state = {"first": big[:6], "second": big[6:], "again": big[:6]}  # three views of one storage
    path = save_checkpoint(tmp_path / "m.safetensors", "x", {}, state)
    tensors = read_checkpoint(path).tensors
    assert torch.equal(tensors["first"], big[:6]) and torch.equal(tensors["second"], big[6:])
    assert torch.equal(tensors["again"], big[:6])


def test_training_state_path():
    assert training_state_path("runs/out.safetensors").as_posix() == "runs/out.train.safetensors"
    assert training_state_path("out").as_posix() == "out.train.safetensors"


# -------------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_write_replaces_on_success(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with atomic_write(path) as temp:
        assert temp.parent == tmp_path and temp != path
        temp.write_text("new")
        assert path.read_text() == "old"  # not visible before the end
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_failure_leaves_the_old_file_and_no_temp_file(tmp_path, error):
    path = tmp_path / "m.safetensors"
    write_checkpoint(path)
    before = path.read_bytes()
    with pytest.raises(error):
        with atomic_write(path) as temp:
            temp.write_bytes(b"half a checkpoint")
            raise error("boom")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_failed_save_leaves_the_old_checkpoint(tmp_path):
    path, _ = write_checkpoint(tmp_path / "m.safetensors")
    before = path.read_bytes()
    with pytest.raises(TypeError):  # metadata that is not JSON
        save_checkpoint(path, "wavenet", TinyConfig(), {"w": torch.ones(2)}, metrics={"bad": object()})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_atomic_write_into_a_missing_directory(tmp_path):
    with pytest.raises(ArcliError, match="folder .* does not exist"):
        with atomic_write(tmp_path / "nope" / "m.safetensors"):
            pass


# -------------------------------------------------------------------------------------------------
# errors a user can hit


def test_missing_file(tmp_path):
    path = tmp_path / "missing.safetensors"
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == f"checkpoint '{path}' does not exist"


NOT_SAFETENSORS = "'{}' is not a safetensors file (arcli checkpoints are .safetensors; it will not load pickled .pt files)"


def test_text_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not tensors\n")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == NOT_SAFETENSORS.format(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == NOT_SAFETENSORS.format(path)


def test_pickle_is_refused_without_loading_it(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    torch.save(tiny_model().state_dict(), path)  # fine in a test: only arcli must never load pickles

    def forbidden(*args, **kwargs):
        raise AssertionError("arcli called torch.load")

    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == NOT_SAFETENSORS.format(path)


def test_file_cut_in_its_header(tmp_path):
    path, _ = write_checkpoint(tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == NOT_SAFETENSORS.format(path)


def test_file_cut_in_its_tensors(tmp_path):
    path, _ = write_checkpoint(tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"'{path}' is a damaged safetensors file (truncated or corrupt")
    assert message.endswith("save or download it again")
    assert "\n" not in message


def test_safetensors_without_arcli_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == f"'{path}' is a safetensors file but not an arcli checkpoint (no arcli metadata)"


def test_corrupt_json_metadata(tmp_path):
    path, _ = write_checkpoint(tmp_path / "m.safetensors")
    header_length = struct.unpack("<Q", path.read_bytes()[:8])[0]
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + header_length])
    header["__metadata__"]["arcli.config"] = "{not json"
    new_header = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + header_length:])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (
        f"'{path}' has corrupt arcli.config metadata (not valid JSON); the file is damaged: save or download it again"
    )


def test_metadata_of_the_wrong_type(tmp_path):
    path = tmp_path / "m.safetensors"
    meta = {"arcli.format": json.dumps(FORMAT), "arcli.model": json.dumps("wavenet"), "arcli.config": "[1, 2]",
            "arcli.data": "{}", "arcli.tokenizer": "null", "arcli.training": "{}", "arcli.metrics": "{}"}
    save_file({"w": torch.ones(2)}, path, metadata=meta)
    with pytest.raises(CheckpointError, match=r"corrupt arcli.config metadata \(list instead of dict\)"):
        read_checkpoint(path)


def test_checkpoint_of_another_family(tmp_path):
    path, _ = write_checkpoint(tmp_path / "m.safetensors", model_name="pixelcnn")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path, expected_model="wavenet")
    assert str(info.value) == (
        f"'{path}' is a 'pixelcnn' checkpoint, not a 'wavenet' checkpoint; "
        "use it with the 'pixelcnn' model, or pass a 'wavenet' checkpoint"
    )
    assert read_checkpoint(path).model_name == "pixelcnn"  # no expectation, no complaint


def test_newer_format(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(2)}, path, metadata={"arcli.format": json.dumps("arcli-2")})
    with pytest.raises(CheckpointError, match="format 'arcli-2', which this version of arcli cannot read"):
        read_checkpoint(path)


def test_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path)


# -------------------------------------------------------------------------------------------------
# training states


def trained_adamw(seed=0, steps=3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        optimizer.step()
    return model, optimizer


def test_training_state_round_trip(tmp_path):
    model, optimizer = trained_adamw()
    generator = torch.Generator().manual_seed(7)
    generator.manual_seed(7)
    torch.rand(3, generator=generator)
    path = save_training_state(tmp_path / "t.safetensors", model_state=model.state_dict(), optimizer=optimizer,
                               step=3, generators={"data": generator}, extra={"history": [{"step": 3}]})
    expected_data = torch.rand(5, generator=generator)
    expected_global = torch.rand(5)

    fresh_model, fresh_optimizer = trained_adamw(seed=1, steps=0)
    state = load_training_state(path, fresh_optimizer)
    assert state.step == 3 and state.extra == {"history": [{"step": 3}]}
    fresh_model.load_state_dict(state.model_state)
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[name], tensor)

    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert loaded["param_groups"] == saved["param_groups"]
    assert isinstance(loaded["param_groups"][0]["betas"], tuple)
    assert saved["state"].keys() == loaded["state"].keys()
    for index, values in saved["state"].items():
        for name, value in values.items():
            assert torch.is_tensor(loaded["state"][index][name])
            assert loaded["state"][index][name].dtype == value.dtype  # AdamW's tensor `step`
            assert torch.equal(loaded["state"][index][name], value)

    new_generator = torch.Generator()
    torch.manual_seed(99)
    state.restore_rng({"data": new_generator})
    assert torch.equal(torch.rand(5, generator=new_generator), expected_data)
    assert torch.equal(torch.rand(5), expected_global)


def test_training_state_for_another_model(tmp_path):
    model, optimizer = trained_adamw()
    path = save_training_state(tmp_path / "t.safetensors", model_state=model.state_dict(), optimizer=optimizer,
                               step=3, generators={}, extra={})
    other = nn.Linear(4, 3)
    with pytest.raises(CheckpointError, match="does not fit this model or optimizer"):
        load_training_state(path, torch.optim.AdamW(other.parameters()))


def test_training_state_and_checkpoint_are_not_confused(tmp_path):
    model, optimizer = trained_adamw()
    state = save_training_state(tmp_path / "t.safetensors", model_state=model.state_dict(), optimizer=optimizer,
                                step=3, generators={}, extra={})
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(state)
    assert str(info.value) == (
        f"'{state}' is a training state (for --resume), not a model checkpoint; pass the model checkpoint written next to it"
    )
    ckpt, _ = write_checkpoint(tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="is a model checkpoint, not a training state"):
        load_training_state(ckpt, optimizer)
    with pytest.raises(CheckpointError) as info:
        load_training_state(tmp_path / "missing.safetensors", optimizer)
    assert str(info.value) == f"training state '{tmp_path / 'missing.safetensors'}' does not exist"
