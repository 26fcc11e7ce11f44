"""The binary-image families through the real CLI: train tiny FVSBN, NADE and MADE models on tiny
black-and-white images made here (.npy of 0/1), sample, score (MADE's K-ordering mixture by hand),
complete under any mask (MADE exactly, in a known-first ordering), and the user mistakes of the
issue: grey input (binarised, and said), a mask of another size, `--set orderings=0`."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from clihelpers import one_line_error, run
from PIL import Image

from arcli.checkpoint import read_checkpoint
from arcli.image.contract import token_nats
from arcli.registry import get_family

SIZE = 4  # 4x4 binary images
ROOT = Path(__file__).resolve().parent.parent
TINY = {"fvsbn": [], "nade": ["--set", "hidden=6"], "made": ["--set", "hidden=[8]", "--set", "orderings=3"]}


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """40 images: a bright left or top half, with a few pixels flipped; as .npy of 0/1, and one PNG."""
    folder = tmp_path_factory.mktemp("binary")
    rng = np.random.default_rng(0)
    images = np.zeros((40, SIZE, SIZE), dtype=np.uint8)
    images[::2, :, : SIZE // 2] = 1
    images[1::2, : SIZE // 2] = 1
    images ^= (rng.random(images.shape) < 0.05).astype(np.uint8)
    np.save(folder / "train.npy", images)
    np.save(folder / "test.npy", images[:3])
    Image.fromarray(images[0] * 255).save(folder / "bw.png")
    grey = (images[1] * 200 + 20).astype(np.uint8)  # values 20 and 220: binarised at 128
    Image.fromarray(grey).save(folder / "grey.png")
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(folder / "mask5.png")
    return folder


@pytest.fixture(scope="module")
def trained(corpus) -> dict[str, Path]:
    found = {}
    for name, settings in TINY.items():
        path = corpus / f"{name}.safetensors"
        ok(run("train", name, *settings, "--data", corpus / "train.npy", "--steps", 30, "--batch-size", 8, "--lr", 0.02,
               "--warmup-steps", 1, "--device", "cpu", "--quiet", "-o", path))
        found[name] = path
    return found


@pytest.mark.parametrize("name", list(TINY))
def test_train_sample_and_score(name, trained, corpus, tmp_path):
    stored = read_checkpoint(trained[name])
    assert stored.config["height"] == SIZE and stored.data["levels"] == 2
    grid = tmp_path / "grid.png"
    result = ok(run("sample", name, "-c", trained[name], "-n", 4, "--seed", 1, "-o", grid))
    assert "generated 4 image(s) of 4x4 grey" in result.stderr
    with Image.open(grid) as image:
        assert set(np.unique(np.asarray(image.convert("L")))) <= {0, 192, 255}  # black, white and the gutter
    scored = ok(run("score-likelihood", name, "-c", trained[name], corpus / "test.npy"))
    rows = [line.split("\t") for line in scored.stdout.strip().splitlines()]
    assert len(rows) == 3 and "bits/dim on average" in scored.stderr
    family = get_family(name)
    model, _ = family.load(trained[name], torch.device("cpu"))
    tokens = torch.from_numpy(np.load(corpus / "test.npy").reshape(3, -1)).long()
    with torch.no_grad():
        if name == "made":  # the mixture: -log (1/3) sum_k p_k(x)
            each = torch.stack([token_nats(model, tokens, None, ordering=k).double().sum(1) for k in range(3)])
            expected = math.log(3) - torch.logsumexp(-each, 0)
        else:
            expected = token_nats(model, tokens, None).double().sum(1)
    assert [float(r[1]) for r in rows] == pytest.approx(expected.tolist(), abs=1e-3)
    assert float(rows[0][2]) == pytest.approx(float(rows[0][1]) / SIZE**2 / math.log(2), abs=1e-3)


def test_made_completes_any_mask_exactly(trained, corpus, tmp_path):
    out = tmp_path / "done.png"
    result = ok(run("complete-image", "made", "-c", trained["made"], corpus / "bw.png", "--mask", "center", "-n", 3,
                    "--seed", 0, "-o", out, "--output-dir", tmp_path / "each"))
    assert "exact completion: 12 known pixels first" in result.stderr
    assert "no importance resampling" in result.stderr and "effective sample size" not in result.stderr
    original = np.asarray(Image.open(corpus / "bw.png"))
    hidden = np.zeros((SIZE, SIZE), dtype=bool)
    hidden[1:3, 1:3] = True
    for k in (1, 2, 3):
        completion = np.asarray(Image.open(tmp_path / "each" / f"bw-{k}.png"))
        assert np.array_equal(completion[~hidden], original[~hidden])  # every known pixel kept
        assert set(np.unique(completion)) <= {0, 255}
    bottom = ok(run("complete-image", "made", "-c", trained["made"], corpus / "bw.png", "--mask", "bottom", "-n", 2,
                    "--seed", 0, "-o", tmp_path / "bottom.png"))
    assert "one of the orderings it was trained on" in bottom.stderr  # known-first = raster order: ordering 0


def test_raster_models_keep_importance_resampling(trained, corpus, tmp_path):
    result = ok(run("complete-image", "nade", "-c", trained["nade"], corpus / "bw.png", "--mask", "top", "-n", 2,
                    "--seed", 0, "-o", tmp_path / "top.png"))
    assert "effective sample size" in result.stderr and "exact completion" not in result.stderr


def test_grey_input_is_binarised_and_said(trained, corpus):
    result = ok(run("score-likelihood", "fvsbn", "-c", trained["fvsbn"], corpus / "grey.png", corpus / "bw.png"))
    assert "1 of 2 image(s) have grey levels" in result.stderr and ">= 128" in result.stderr
    nats = [float(line.split("\t")[1]) for line in result.stdout.strip().splitlines()]
    same = ok(run("score-likelihood", "fvsbn", "-c", trained["fvsbn"], corpus / "train.npy"))
    assert nats[0] == pytest.approx(float(same.stdout.splitlines()[1].split("\t")[1]), abs=1e-4)  # grey.png is image 1
    assert "grey levels" not in same.stderr


def test_bad_input_is_one_line(trained, corpus, tmp_path):
    one_line_error(run("train", "made", "--set", "orderings=0", "--data", corpus / "train.npy", "-o", tmp_path / "m.safetensors"),
                   "orderings must be >= 1")
    one_line_error(run("complete-image", "made", "-c", trained["made"], corpus / "bw.png", "--mask", corpus / "mask5.png",
                       "-o", tmp_path / "x.png"), "is 5x5", "4x4")
    one_line_error(run("sample", "nade", "-c", trained["nade"], "--label", 1, "-o", tmp_path / "y.png"), "unconditional")
    one_line_error(run("train", "fvsbn", "--set", "height=9", "--data", corpus / "train.npy", "-o", tmp_path / "f.safetensors"),
                   "height=9", "4x4")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


def test_models_info_describes_each_family():
    for name, fragment in (("fvsbn", "n(n+1)/2"), ("nade", "a_{i+1} = a_i + W[:, i] x_i"), ("made", "orderings")):
        result = ok(run("models", "info", name))
        assert fragment in result.stdout and "binary" in result.stdout


def test_a_real_subprocess_completes_with_made(trained, corpus, tmp_path):
    out = tmp_path / "sub.png"
    done = subprocess.run([sys.executable, "-m", "arcli", "complete-image", "made", "-c", str(trained["made"]), str(corpus / "bw.png"),
                           "--mask", "left", "-n", "2", "--seed", "3", "-o", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "exact completion" in done.stderr and out.is_file()


def test_class_conditional_training_from_idx_of_zeros_and_ones(corpus, tmp_path):
    """IDX files of 0/1 with a labels file beside them: a class-conditional MADE; sampling with a
    label, and completion inferring the class exactly (every mask is exact for MADE)."""
    from arcli.image.io import write_idx

    images = np.load(corpus / "train.npy")
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", (np.arange(len(images)) % 2).astype(np.uint8))
    path = tmp_path / "made.safetensors"
    ok(run("train", "made", *TINY["made"], "--data", tmp_path / "train-images-idx3-ubyte", "--steps", 60, "--batch-size", 8,
           "--lr", 0.03, "--warmup-steps", 1, "--device", "cpu", "--quiet", "-o", path))
    assert read_checkpoint(path).config["num_classes"] == 2
    ok(run("sample", "made", "-c", path, "-n", 2, "--label", 1, "--seed", 0, "-o", tmp_path / "s.png"))
    result = ok(run("complete-image", "made", "-c", path, corpus / "bw.png", "--mask", "top", "-n", 2, "--seed", 0,
                    "-o", tmp_path / "c.png"))
    assert "bw.png: class 0" in result.stderr  # a left-half image: class 0, from its known bottom half
    assert "exact completion" in result.stderr


def test_mixture_samples_do_not_change_with_the_count(trained, tmp_path):
    """Each image's ordering and random stream depend on the seed and its index only."""
    grids = []
    for count in (2, 5):
        out = tmp_path / f"{count}.png"
        ok(run("sample", "made", "-c", trained["made"], "-n", count, "--seed", 4, "-o", out))
        grids.append(np.asarray(Image.open(out).convert("L")))
    cell = grids[0].shape[0]  # one row of cells in the 2-image grid: the first two cells of the 5-image grid's first row
    assert np.array_equal(grids[0], grids[1][:cell, : grids[0].shape[1]])


def test_order_agnostic_made_trains_repeatably(corpus, tmp_path):
    """Fresh orderings come from the data's generator (saved in the training state for --resume):
    the same seed trains the same weights, another seed others."""
    common = [*TINY["made"], "--set", "order_agnostic=true", "--data", corpus / "train.npy", "--batch-size", 4, "--lr", 0.02,
              "--warmup-steps", 1, "--steps", 10, "--device", "cpu", "--quiet"]
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        ok(run("train", "made", *common, "--seed", seed, "-o", tmp_path / f"{name}.safetensors"))
    a, b, c = (read_checkpoint(tmp_path / f"{name}.safetensors") for name in "abc")
    assert a.config["order_agnostic"] is True
    assert all(torch.equal(tensor, b.tensors[name]) for name, tensor in a.tensors.items())
    assert not torch.equal(a.tensors["layers.0.weight"], c.tensors["layers.0.weight"])
