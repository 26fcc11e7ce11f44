"""PixelRNN through the real CLI, as PixelCNN: train tiny Row LSTM / Diagonal BiLSTM models on 6x6
images made here, then sample, complete, score, describe, and refuse bad input in one line."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clihelpers import one_line_error, run
from PIL import Image
from test_pixelcnn_cli import SIZE, make_images, ok, parse_scores

from arcli.image.io import write_idx
from arcli.registry import get_family

TINY = ("--set", "hidden=6", "--set", "layers=1", "--set", "first_kernel=3")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pixelrnn")
    train, train_labels = make_images(24, seed=0)
    test, test_labels = make_images(2, seed=1)
    write_idx(folder / "train-images-idx3-ubyte.gz", train)
    write_idx(folder / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(folder / "test-images-idx3-ubyte.gz", test)
    write_idx(folder / "test-labels-idx1-ubyte.gz", test_labels)
    np.save(folder / "unlabelled.npy", train)
    return folder


@pytest.fixture(scope="module")
def trained(corpus):
    """A class-conditional Diagonal BiLSTM (IDX labels) and an unconditional Row LSTM (.npy), a few steps each."""
    common = ("--batch-size", 4, "--warmup-steps", 1, "--lr", 0.01, "--device", "cpu", "--quiet", "--steps", 3, *TINY)
    diagonal, row = corpus / "diagonal.safetensors", corpus / "row.safetensors"
    result = ok(run("train", "pixelrnn-diagonal", "--data", corpus / "train-images-idx3-ubyte.gz", "-o", diagonal, *common))
    assert "data: 22 images of 6x6 grey, 2 classes (0, 1); held out: 2 images" in result.stderr  # every 20th held out
    ok(run("train", "pixelrnn-row", "--data", corpus / "unlabelled.npy", "-o", row, *common))
    return {"pixelrnn-diagonal": diagonal, "pixelrnn-row": row}


@pytest.mark.parametrize("name", ["pixelrnn-diagonal", "pixelrnn-row"])
def test_sample_complete_and_score(corpus, trained, tmp_path, name):
    checkpoint, images = trained[name], corpus / "test-images-idx3-ubyte.gz"
    ok(run("sample", name, "-c", checkpoint, "-n", 3, "--seed", 1, "-o", tmp_path / "grid.png", "--quiet"))
    assert (tmp_path / "grid.png").stat().st_size > 0
    ok(run("complete-image", name, "-c", checkpoint, images, "--mask", "bottom", "-n", 2, "--seed", 5, "--quiet",
           "-o", tmp_path / "done.png", "--output-dir", tmp_path / "each"))
    originals, labels = make_images(2, seed=1)
    for i, original in enumerate(originals):
        for k in (1, 2):
            with Image.open(tmp_path / "each" / f"test-images-idx3-ubyte-{i}-{k}.png") as png:
                completion = np.asarray(png)
            assert np.array_equal(completion[: SIZE // 2], original[: SIZE // 2])  # known pixels kept exactly

    result = ok(run("score-likelihood", name, "-c", checkpoint, "--device", "cpu", images))
    rows = parse_scores(result.stdout)
    model, _ = get_family(name).load(checkpoint, torch.device("cpu"))
    with torch.no_grad():
        for i, (image, label) in enumerate(zip(originals, labels, strict=True)):
            tokens = torch.from_numpy(image.reshape(1, -1)).long()
            condition = torch.tensor([int(label)]) if name == "pixelrnn-diagonal" else None
            nats = F.cross_entropy(model(tokens, condition)[0], tokens[0], reduction="sum").item()
            assert rows[f"{images}:{i}"][0] == pytest.approx(nats, abs=0.01)
            assert rows[f"{images}:{i}"][1] == pytest.approx(nats / (SIZE * SIZE * np.log(2)), abs=1e-3)


def test_models_info_describes_the_receptive_field(trained):
    result = ok(run("models", "info", trained["pixelrnn-row"]))
    assert "Row LSTM" in result.stdout and "a triangle: d rows up" in result.stdout
    result = ok(run("models", "info", trained["pixelrnn-diagonal"]))
    assert "Diagonal BiLSTM" in result.stdout and "the whole past" in result.stdout
    listed = ok(run("models")).stdout
    assert "pixelrnn-row" in listed and "pixelrnn-diagonal" in listed


def test_bad_input_is_one_line(corpus, trained, tmp_path):
    images, out = corpus / "test-images-idx3-ubyte.gz", tmp_path / "out.png"
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(tmp_path / "small-mask.png")
    diagonal = ("-c", trained["pixelrnn-diagonal"], "--quiet")
    one_line_error(run("complete-image", "pixelrnn-diagonal", *diagonal, images, "--mask", tmp_path / "small-mask.png", "-o", out),
                   "small-mask.png' is 5x5, but this model's images are 6x6")
    one_line_error(run("complete-image", "pixelrnn-diagonal", "-c", trained["pixelrnn-row"], images, "-o", out),
                   "'pixelrnn-row' checkpoint, not a 'pixelrnn-diagonal' checkpoint")
    one_line_error(run("sample", "pixelrnn-row", "-c", trained["pixelrnn-row"], "--label", 1, "-o", out), "unconditional")
    one_line_error(run("train", "pixelrnn-row", "--data", corpus / "unlabelled.npy", "-o", tmp_path / "x.safetensors",
                       "--set", "hidden=0"), "hidden must be >= 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small-mask.png"]
    # another size and colour is converted, and said
    Image.fromarray(np.full((12, 9, 3), 200, dtype=np.uint8)).save(tmp_path / "big.png")
    result = ok(run("score-likelihood", "pixelrnn-row", "-c", trained["pixelrnn-row"], tmp_path / "big.png"))
    assert "6x6" in result.stderr and "big.png" in result.stdout


def test_a_real_subprocess_samples_to_stdout(trained):
    done = subprocess.run([sys.executable, "-m", "arcli", "sample", "pixelrnn-row", "-c", str(trained["pixelrnn-row"]), "-n", "2",
                           "--seed", "3", "-o", "-", "--quiet"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.startswith(b"\x89PNG") and b"Traceback" not in done.stderr
