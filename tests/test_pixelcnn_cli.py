"""PixelCNN end to end through the real CLI: train a tiny class-conditional model on tiny 6x6 images
made here (IDX.gz with labels, PNG folders, .npy), then sample grids, complete images under masks,
score bits/dim, and check every user mistake is one line and exit code 1."""

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clihelpers import one_line_error, run
from PIL import Image

from arcli import registry
from arcli.checkpoint import read_checkpoint, save_checkpoint
from arcli.errors import DataError, OptionError
from arcli.image.io import GUTTER, grid_size, occlude, upscale_factor, write_idx
from arcli.models.pixelcnn import PixelCNN, PixelCNNConfig
from arcli.models.wavenet import WaveNet, WaveNetConfig
from arcli.registry import get_family
from arcli.tasks import TrainRequest
from arcli.tasks.completion import MASKS, MAX_PROPOSALS, distinct_ess, proposal_log_weights, resample, smc_proposals, systematic_resample
from arcli.tasks.image import context

SIZE = 6  # 6x6 grey images
TINY = {"hidden": 12, "layers": 2, "kernel": 3, "first_kernel": 3}
TINY_SETTINGS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
ROOT = Path(__file__).resolve().parent.parent
SCALE = upscale_factor(SIZE, SIZE)


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def make_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: a bright left half; class 1: a bright top half; a little noise on both."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 2).astype(np.uint8)
    pixels = rng.integers(0, 40, (count, SIZE, SIZE)).astype(np.uint8)
    for image, label in zip(pixels, labels, strict=True):
        if label == 0:
            image[:, : SIZE // 2] += 200
        else:
            image[: SIZE // 2] += 200
    return pixels, labels


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    train, train_labels = make_images(40, seed=0)
    test, test_labels = make_images(3, seed=1)
    write_idx(folder / "train-images-idx3-ubyte.gz", train)
    write_idx(folder / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(folder / "test-images-idx3-ubyte.gz", test)
    write_idx(folder / "test-labels-idx1-ubyte.gz", test_labels)
    np.save(folder / "unlabelled.npy", train[:20])
    for name, pixels, labels in (("pngs", train[:12], train_labels[:12]), ("valid-pngs", test, test_labels)):
        for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
            (folder / name / ("left" if label == 0 else "top")).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / name / ("left" if label == 0 else "top") / f"{i}.png")
    return folder


def train(*args):
    return run("train", "pixelcnn", *TINY_SETTINGS, "--batch-size", 8, "--warmup-steps", 1, "--lr", 0.01,
               "--device", "cpu", "--quiet", *args)


@pytest.fixture(scope="module")
def trained(corpus) -> Path:
    """A class-conditional model (labels from the IDX labels file) trained for 30 steps."""
    checkpoint = corpus / "tiny.safetensors"
    result = ok(train("--data", corpus / "train-images-idx3-ubyte.gz", "--valid", corpus / "test-images-idx3-ubyte.gz",
                      "-o", checkpoint, "--steps", 30, "--eval-every", 30, "--save-every", 30))
    assert "data: 40 images of 6x6 grey, 2 classes (0, 1); held out: 3 images" in result.stderr
    return checkpoint


@pytest.fixture(scope="module")
def unconditional(corpus) -> Path:
    checkpoint = corpus / "plain.safetensors"
    ok(train("--data", corpus / "unlabelled.npy", "-o", checkpoint, "--steps", 2, "--set", "gated=false"))
    return checkpoint


def test_class_names_are_stored_and_shown(corpus, tmp_path):
    named = tmp_path / "named.safetensors"
    data = ("--data", corpus / "train-images-idx3-ubyte.gz")
    ok(train(*data, "-o", named, "--steps", 2, "--class-names", "left stripe, top stripe"))
    stored = read_checkpoint(named)
    assert stored.data["classes"] == ["0", "1"] and stored.data["class_names"] == ["left stripe", "top stripe"]
    result = ok(sample(named, "-n", 3, "--seed", 1, "-o", tmp_path / "g.png"))
    drawn = torch.randint(2, (3,), generator=torch.Generator().manual_seed(1)).tolist()
    assert "in grid order: " + ", ".join(["left stripe", "top stripe"][c] for c in drawn) in result.stderr
    image = make_images(1, seed=2)[0][0]
    Image.fromarray(image).save(tmp_path / "a.png")
    result = ok(complete(named, tmp_path / "a.png", "-n", 1, "--seed", 0, "-o", tmp_path / "c.png"))
    assert any(name in result.stderr for name in ("a.png: class left stripe", "a.png: class top stripe"))
    one_line_error(train(*data, "-o", tmp_path / "x.safetensors", "--steps", 1, "--class-names", "one"), "1 names", "2 classes")
    one_line_error(train("--data", corpus / "unlabelled.npy", "-o", tmp_path / "x.safetensors", "--steps", 1, "--class-names", "a,b"),
                   "no class labels")
    one_line_error(train(*data, "-o", tmp_path / "x.safetensors", "--steps", 1, "--class-names", "a,,b"), "empty name")
    assert not (tmp_path / "x.safetensors").exists()


def cell(grid_image: np.ndarray, row: int, column: int) -> np.ndarray:
    """Image (row, column) of a grid of 6x6 images, back at model resolution (H, W)."""
    top, left = row * (SIZE * SCALE + GUTTER), column * (SIZE * SCALE + GUTTER)
    return grid_image[top : top + SIZE * SCALE : SCALE, left : left + SIZE * SCALE : SCALE]


def png(path_or_bytes) -> np.ndarray:
    with Image.open(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes) as image:
        return np.asarray(image)


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def image_nats(model, tokens, label) -> torch.Tensor:
    """-log p(image) in nats from one forward pass, and per sub-pixel: tokens (T,)."""
    logits = model(tokens[None].long(), None if label is None else torch.tensor([label]))  # (1, T, V)
    return F.cross_entropy(logits[0], tokens.long(), reduction="none")


# -------------------------------------------------------------------------------------------------
# train


def test_training_takes_shape_and_classes_from_the_data(trained):
    stored = read_checkpoint(trained, expected_model="pixelcnn")
    assert {key: stored.config[key] for key in ("height", "width", "channels", "num_classes", "hidden")} == {
        "height": 6, "width": 6, "channels": 1, "num_classes": 2, "hidden": 12,
    }
    assert stored.data == {
        "height": 6, "width": 6, "channels": 1, "levels": 256, "classes": ["0", "1"], "class_names": [], "images": 40, "valid_images": 3,
    }
    assert 1.0 < stored.metrics["valid_bits_per_dim"] < 8.5  # 8 is uniform over 256 levels


def test_batches_hold_out_every_20th_image_and_the_loss_is_the_mean_nll(corpus, trained):
    family = get_family("pixelcnn")
    setup = family.task.prepare_training(family, family.config(TINY), TrainRequest(data=[corpus / "train-images-idx3-ubyte.gz"]))
    data = setup.data
    assert setup.data_meta["images"] == 38 and setup.data_meta["valid_images"] == 2  # images 0 and 20
    pixels, labels = make_images(40, seed=0)
    assert np.array_equal(data.valid.numpy().reshape(2, SIZE, SIZE), pixels[[0, 20]])
    first = data.sample_batch(8, torch.Generator().manual_seed(3))
    again = data.sample_batch(8, torch.Generator().manual_seed(3))
    assert torch.equal(first.tokens, again.tokens) and torch.equal(first.labels, again.labels)
    assert first.tokens.shape == (8, SIZE * SIZE) and first.tokens.dtype == torch.long
    model, _ = family.load(trained, torch.device("cpu"))
    with torch.no_grad():
        out = family.task.loss(model, first)
        by_hand = sum(float(image_nats(model, tokens, int(label)).sum()) for tokens, label in zip(first.tokens, first.labels, strict=True))
    assert out.count == 8 * 36 and float(out.nll) == pytest.approx(by_hand, rel=1e-5)
    assert float(out.objective) == pytest.approx(by_hand / (8 * 36), rel=1e-5)


def test_png_folders_label_by_sub_folder(corpus, tmp_path):
    checkpoint = tmp_path / "pngs.safetensors"
    result = ok(train("--data", corpus / "pngs", "--valid", corpus / "valid-pngs", "-o", checkpoint, "--steps", 1))
    assert "12 images of 6x6 grey, 2 classes (0=left, 1=top); held out: 3 images" in result.stderr
    stored = read_checkpoint(checkpoint)
    assert stored.data["classes"] == ["left", "top"] and stored.config["num_classes"] == 2


def test_rgb_data_rounds_the_default_hidden_up_to_a_multiple_of_three(tmp_path):
    np.save(tmp_path / "rgb.npy", np.random.default_rng(0).integers(0, 256, (4, 5, 7, 3), dtype=np.uint8))
    family = get_family("pixelcnn")
    setup = family.task.prepare_training(family, family.config(), TrainRequest(data=[tmp_path / "rgb.npy"]))
    assert (setup.config.height, setup.config.width, setup.config.channels, setup.config.hidden) == (5, 7, 3, 66)
    with pytest.raises(OptionError, match="--set hidden=13 is not a multiple of the 3 colour channels of the images: use hidden=15"):
        family.task.prepare_training(family, family.config({"hidden": 13}), TrainRequest(data=[tmp_path / "rgb.npy"]))


# -------------------------------------------------------------------------------------------------
# sample


def sample(checkpoint, *args):
    return run("sample", "pixelcnn", "-c", checkpoint, "--device", "cpu", "--quiet", *args)


def test_sample_writes_a_grid_of_n_images(trained, tmp_path):
    result = ok(sample(trained, "-n", 5, "--seed", 1, "-o", tmp_path / "grid.png"))
    drawn = torch.randint(2, (5,), generator=torch.Generator().manual_seed(1)).tolist()  # the classes --seed 1 draws
    assert f"drawn from a uniform prior over the 2 classes; in grid order: {', '.join(map(str, drawn))}" in result.stderr
    assert png_size(tmp_path / "grid.png") == grid_size(2, 3, SIZE, SIZE)  # about square: 2 rows of 3
    ok(sample(trained, "-n", 5, "--label", 1, "--seed", 1, "-o", tmp_path / "ones.png"))
    assert png_size(tmp_path / "ones.png") == grid_size(2, 3, SIZE, SIZE)  # about square: 2 rows of 3
    assert result.stdout == ""


def test_a_seed_repeats_and_stdout_gets_the_same_png(trained, tmp_path):
    ok(sample(trained, "-n", 2, "--label", 0, "--seed", 7, "-o", tmp_path / "a.png"))
    ok(sample(trained, "-n", 2, "--label", 0, "--seed", 8, "-o", tmp_path / "b.png"))
    streamed = ok(sample(trained, "-n", 2, "--label", 0, "--seed", 7, "-o", "-"))
    assert streamed.stdout_bytes == (tmp_path / "a.png").read_bytes()
    assert streamed.stdout_bytes != (tmp_path / "b.png").read_bytes()
    process = subprocess.run(  # a real process: the PNG alone on stdout, the notes on stderr
        [sys.executable, "-m", "arcli", "sample", "pixelcnn", "-c", str(trained), "-n", "2", "--label", "0", "--seed", "7",
         "--device", "cpu"],
        capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=120,
    )
    assert process.returncode == 0, process.stderr.decode()
    assert process.stdout == streamed.stdout_bytes
    assert b"generated 2 image(s) of 6x6 grey" in process.stderr


# -------------------------------------------------------------------------------------------------
# complete-image


def complete(checkpoint, *args):
    return run("complete-image", "pixelcnn", "-c", checkpoint, "--device", "cpu", "--quiet", *args)


@pytest.mark.parametrize(("mask", "method"), [("bottom", "exact samples of p(hidden | known)"), ("top", "importance resampling")])
def test_completions_keep_the_known_pixels_exactly(corpus, trained, tmp_path, mask, method):
    originals, _ = make_images(3, seed=1)
    hidden = np.zeros((SIZE, SIZE), dtype=bool)
    hidden[SIZE // 2 :] = mask == "bottom"
    hidden[: SIZE // 2] = mask == "top"
    result = ok(complete(trained, corpus / "test-images-idx3-ubyte.gz", "--mask", mask, "-n", 2, "--seed", 5,
                         "-o", tmp_path / "grid.png", "--output-dir", tmp_path / "each"))
    assert method in result.stderr
    if mask == "top":  # rounds of K = max(4 N, 16) proposals until the ESS reaches N, and how well they covered the posterior
        assert "rounds of 16 proposals" in result.stderr and "effective sample size" in result.stderr
    grid_image = png(tmp_path / "grid.png")
    assert grid_image.shape == grid_size(3, 4, SIZE, SIZE)[::-1]  # a row per image: original, occluded, 2 completions
    for i, original in enumerate(originals):
        assert np.array_equal(cell(grid_image, i, 0), original)
        assert np.array_equal(cell(grid_image, i, 1), occlude(original[..., None], hidden)[..., 0])
        for k in (1, 2):
            completion = png(tmp_path / "each" / f"test-images-idx3-ubyte-{i}-{k}.png")
            assert completion.shape == (SIZE, SIZE)
            assert np.array_equal(completion[~hidden], original[~hidden])  # known pixels kept exactly
            assert np.array_equal(cell(grid_image, i, 1 + k), completion)
    assert len(list((tmp_path / "each").iterdir())) == 6


def test_importance_weights_are_the_likelihood_of_the_known_pixels_after_the_hole(trained):
    model, _ = get_family("pixelcnn").load(trained, torch.device("cpu"))
    proposals = torch.randint(0, 256, (5, 36), generator=torch.Generator().manual_seed(0))
    known_after = torch.zeros(36, dtype=torch.bool)
    known_after[[20, 21, 30, 35]] = True
    got = proposal_log_weights(model, proposals, known_after, torch.tensor(1))
    with torch.no_grad():
        expected = torch.stack([-image_nats(model, tokens, 1)[known_after].sum() for tokens in proposals])
    torch.testing.assert_close(got, expected.double(), rtol=1e-5, atol=1e-4)

    weights = torch.tensor([0.6, 0.3, 0.1, 0.0])
    picks, effective = resample(weights.log(), 20_000, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(picks, minlength=4) / 20_000
    torch.testing.assert_close(frequencies, weights, rtol=0, atol=0.02)
    assert effective == pytest.approx(1 / (0.36 + 0.09 + 0.01))


def test_beam_and_greedy_completions(corpus, trained, tmp_path):
    originals, _ = make_images(3, seed=1)
    result = ok(complete(trained, corpus / "test-images-idx3-ubyte.gz", "--mask", "center", "--strategy", "beam", "-n", 2,
                         "--beam-size", 3, "-o", tmp_path / "beam.png", "--output-dir", tmp_path / "beam"))
    assert "beam search (beam size 3)" in result.stderr
    hidden = np.zeros((SIZE, SIZE), dtype=bool)
    hidden[1:4, 1:4] = True
    first, second = (png(tmp_path / "beam" / f"test-images-idx3-ubyte-0-{k}.png") for k in (1, 2))
    assert np.array_equal(first[~hidden], originals[0][~hidden]) and not np.array_equal(first, second)
    ok(complete(trained, corpus / "test-images-idx3-ubyte.gz", "--strategy", "greedy", "-n", 1, "-o", tmp_path / "greedy.png"))
    assert png_size(tmp_path / "greedy.png") == grid_size(3, 3, SIZE, SIZE)


def test_a_conditional_model_takes_the_label_of_a_png_from_its_folder_or_label(corpus, trained, tmp_path, unconditional):
    image = make_images(1, 0)[0][0]
    Image.fromarray(image).save(tmp_path / "stray.png")
    inferred = ok(complete(trained, tmp_path / "stray.png", "-n", 2, "--seed", 1, "-o", tmp_path / "x.png"))
    assert "stray.png: class " in inferred.stderr  # no label: the class is inferred from the known pixels
    ok(complete(trained, tmp_path / "stray.png", "--label", 0, "-n", 1, "--mask", "random", "--seed", 2, "-o", tmp_path / "x.png", "--force"))
    ok(complete(unconditional, tmp_path / "stray.png", "-n", 1, "--mask", "left", "-o", tmp_path / "y.png"))
    for label in ("0", "1"):  # class sub-folders named like the model's classes; two images named a.png
        (tmp_path / "classes" / label).mkdir(parents=True)
        Image.fromarray(image).save(tmp_path / "classes" / label / "a.png")
    ok(complete(trained, tmp_path / "classes", "-n", 1, "-o", tmp_path / "z.png", "--output-dir", tmp_path / "each"))
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["0-a-1.png", "1-a-1.png"]


def class_line(stderr: str, name: str) -> dict[str, float]:
    """The class posterior said for an image: 'NAME: class 1 0.54, 0 0.46; ...' -> {'1': 0.54, '0': 0.46}."""
    line = next(line for line in stderr.splitlines() if line.startswith(f"{name}: class "))
    shown = line.removeprefix(f"{name}: class ").split(";")[0]
    return {item.rsplit(" ", 1)[0]: float(item.rsplit(" ", 1)[1]) for item in shown.split(", ")}


def test_without_a_label_the_class_posterior_is_exact_for_the_bottom_mask(trained, tmp_path):
    model, _ = get_family("pixelcnn").load(trained, torch.device("cpu"))
    for index, image in enumerate(make_images(4, seed=3)[0]):
        path = tmp_path / f"im{index}.png"
        Image.fromarray(image).save(path)
        result = ok(complete(trained, path, "--mask", "bottom", "-n", 1, "--seed", 0, "-o", tmp_path / f"g{index}.png"))
        known = torch.zeros(SIZE * SIZE, dtype=torch.bool)
        known[: SIZE * SIZE // 2] = True  # the top half: every known sub-pixel comes before the hole
        tokens = torch.from_numpy(image.reshape(-1)).long()
        with torch.no_grad():  # log p(known | c) by hand, then p(c | known) under a uniform prior
            log_known = torch.stack([-image_nats(model, tokens, c)[known].sum() for c in (0, 1)])
        expected = torch.softmax(log_known.double(), 0).tolist()
        said = class_line(result.stderr, str(path))
        for c in (0, 1):
            if str(c) in said:
                assert said[str(c)] == pytest.approx(expected[c], abs=0.006)
            else:  # not shown: under half a percent
                assert expected[c] < 0.006


def test_an_unlabelled_png_completes_under_every_mask_repeatably(trained, tmp_path):
    image = make_images(1, seed=4)[0][0]
    Image.fromarray(image).save(tmp_path / "shirt.png")
    drawn = np.zeros((SIZE, SIZE), dtype=np.uint8)
    drawn[1:3, 2:5] = 255  # a drawn mask: white = hidden
    Image.fromarray(drawn).save(tmp_path / "mask.png")
    for mask in (*MASKS, str(tmp_path / "mask.png")):
        outputs = []
        for attempt in (1, 2):
            folder = tmp_path / f"{Path(mask).stem}-{attempt}"
            result = ok(complete(trained, tmp_path / "shirt.png", "--mask", mask, "-n", 3, "--seed", 9,
                                 "-o", tmp_path / f"{Path(mask).stem}-{attempt}.png", "--output-dir", folder))
            assert "shirt.png: class " in result.stderr
            outputs.append([png(folder / f"shirt-{k}.png") for k in (1, 2, 3)])
        hidden = png(tmp_path / "mask.png") >= 128 if mask.endswith(".png") else None
        for first, again in zip(*outputs, strict=True):
            assert np.array_equal(first, again)  # --seed repeats the run
            if hidden is not None:
                assert np.array_equal(first[~hidden], image[~hidden])  # known pixels exactly kept


def test_resampling_draws_rounds_until_the_effective_sample_size_is_reached(trained, tmp_path):
    image = make_images(1, seed=5)[0][0]
    Image.fromarray(image).save(tmp_path / "a.png")
    result = ok(complete(trained, tmp_path / "a.png", "--mask", "top", "-n", 4, "--label", 1, "--seed", 2, "-o", tmp_path / "g.png"))
    line = next(line for line in result.stderr.splitlines() if "a.png: effective sample size" in line)
    ess, proposals = (float(x) for x in line.split("effective sample size ")[1].split(" proposals")[0].split(" of "))
    assert proposals % 16 == 0  # whole rounds of K = max(4 N, 16): K, K, 2K, 4K ...
    assert ess >= 4 or proposals >= MAX_PROPOSALS  # stopped at the target, or at the cap (and said so)
    assert (ess < 4) == ("few proposals fit the known pixels" in line)


def test_smc_weights_are_the_likelihood_of_the_known_pixels_after_the_hole_without_resampling(trained):
    model, _ = get_family("pixelcnn").load(trained, torch.device("cpu"))
    values = torch.from_numpy(make_images(1, seed=6)[0][0].reshape(-1)).long()
    known = torch.zeros(36, dtype=torch.bool)
    known[:8] = True
    known[30:] = True  # the last row: read after the hole, and no row ends after it
    tokens, log_w, resamplings = smc_proposals(model, values, known, 8, 1, 6, torch.Generator().manual_seed(0))
    assert resamplings == 0 and torch.equal(tokens[:, known], values[known].expand(6, -1))
    after = known & (torch.arange(36) > 8)
    torch.testing.assert_close(log_w, proposal_log_weights(model, tokens, after, torch.tensor(1)), rtol=1e-5, atol=1e-4)


def test_smc_estimates_the_likelihood_of_the_known_pixels_after_one_hidden_pixel(trained):
    model, _ = get_family("pixelcnn").load(trained, torch.device("cpu"))
    values = torch.from_numpy(make_images(1, seed=7)[0][0].reshape(-1)).long()
    known = torch.ones(36, dtype=torch.bool)
    known[14] = False  # one hidden pixel: p(known after | before) = sum over its 256 values, by brute force
    with torch.no_grad():
        every = values.expand(256, -1).clone()
        every[:, 14] = torch.arange(256)
        nats = torch.stack([image_nats(model, row, 0) for row in every]).double()  # (256, 36)
        exact = torch.logsumexp(-nats[:, 14:].sum(1), 0)  # log sum_v p(v | before) p(after | before, v)
    _, log_w, resamplings = smc_proposals(model, values, known, 14, 0, 4000, torch.Generator().manual_seed(1))
    estimate = torch.logsumexp(log_w, 0) - math.log(4000)
    assert float(estimate) == pytest.approx(float(exact), abs=0.05)


def test_the_effective_sample_size_counts_copies_once():
    hidden = torch.tensor([[1, 2], [1, 2], [3, 4], [5, 6]])
    weights = torch.tensor([0.25, 0.25, 0.25, 0.25])
    assert distinct_ess(hidden, weights) == pytest.approx(1 / (0.5**2 + 0.25**2 + 0.25**2))  # 2.67, not 4
    assert distinct_ess(hidden[:2], weights[:2]) == pytest.approx(1.0)


def test_systematic_resampling_repeats_only_what_the_weights_demand():
    weights = torch.tensor([0.6, 0.3, 0.1, 0.0], dtype=torch.float64)
    for seed in range(20):  # each index floor(n w) or ceil(n w) times: here exactly 6, 3, 1, 0 of 10
        picks = systematic_resample(weights, 10, torch.Generator().manual_seed(seed))
        assert torch.bincount(picks, minlength=4).tolist() == [6, 3, 1, 0]
    weights = torch.tensor([0.45, 0.35, 0.2], dtype=torch.float64)
    counts = torch.zeros(3)
    for seed in range(3000):  # unbiased: expected counts n w
        counts += torch.bincount(systematic_resample(weights, 2, torch.Generator().manual_seed(seed)), minlength=3)
    torch.testing.assert_close(counts / 3000, 2 * weights.float(), rtol=0, atol=0.03)


# -------------------------------------------------------------------------------------------------
# score


def parse_scores(stdout: str) -> dict[str, tuple[float, float]]:
    rows = {}
    for line in stdout.splitlines():
        name, nats, bits = line.split("\t")
        rows[name] = (float(nats), float(bits))
    return rows


def test_score_is_bits_per_dim_from_forward_and_draws_a_heatmap(corpus, trained, tmp_path):
    stray = tmp_path / "stray.png"  # no class label of the model: scored by the mean over the classes
    Image.fromarray(make_images(1, 0)[0][0]).save(stray)
    idx = corpus / "test-images-idx3-ubyte.gz"
    result = ok(run("score-likelihood", "pixelcnn", "-c", trained, "--device", "cpu", idx, stray, "--heatmap", tmp_path / "heat.png",
                    "--batch-size", 2))
    rows = parse_scores(result.stdout)
    assert list(rows) == [f"{idx}:0", f"{idx}:1", f"{idx}:2", str(stray)]
    assert "1 of 4 images have no class label of this model" in result.stderr and "bits/dim on average" in result.stderr

    model, _ = get_family("pixelcnn").load(trained, torch.device("cpu"))
    originals, labels = make_images(3, seed=1)
    with torch.no_grad():
        for i, (image, label) in enumerate(zip(originals, labels, strict=True)):
            nats = image_nats(model, torch.from_numpy(image.reshape(-1)), int(label))
            expected_bits = float((nats / math.log(2)).mean())  # -mean log2 p over the 36 dims
            assert rows[f"{idx}:{i}"][1] == pytest.approx(expected_bits, abs=1e-4)
            assert rows[f"{idx}:{i}"][0] == pytest.approx(float(nats.sum()), rel=1e-5)
        each = torch.stack([image_nats(model, torch.from_numpy(make_images(1, 0)[0][0].reshape(-1)), y).sum() for y in (0, 1)])
        marginal = float(math.log(2) - torch.logsumexp(-each, 0))
    assert rows[str(stray)][0] == pytest.approx(marginal, rel=1e-5)
    assert png_size(tmp_path / "heat.png") == grid_size(4, 2, SIZE, SIZE)  # per image: itself, its surprise
    assert "per-pixel surprise" in result.stderr


# -------------------------------------------------------------------------------------------------
# models, info


def test_models_lists_pixelcnn_and_info_describes_it(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "checkpoints_dir", lambda: tmp_path)  # no shipped model: the defaults
    listing = ok(run("models")).stdout
    assert "pixelcnn" in listing and "image" in listing
    info = ok(run("models", "info", "pixelcnn")).stdout
    assert "image: 28x28 grey" in info and "no blind spot" in info
    assert "receptive field: 20 rows above (columns -19 .. +19)" in info


@pytest.mark.parametrize("gated", [True, False])
def test_context_is_what_the_gradient_reaches(gated):
    config = PixelCNNConfig(height=16, width=21, levels=4, hidden=6, layers=2, kernel=3, first_kernel=5, gated=gated)
    torch.manual_seed(0)
    model = PixelCNN(config).double()
    x = torch.zeros(1, 1, 16, 21, dtype=torch.double, requires_grad=True)
    model.head(model.stack(x, None))[0, :, 15, 10].sum().backward()
    reached = x.grad[0, 0].abs() > 0  # (H, W)
    rows = torch.nonzero(reached.any(1)).flatten()
    columns = torch.nonzero(reached[:15].any(0)).flatten()
    assert context(config) == (15 - int(rows.min()), 10 - int(columns.min())) == ((1 if gated else 0) + 4, 4)
    assert int(columns.max()) - 10 == 4


# -------------------------------------------------------------------------------------------------
# user mistakes: one line, exit code 1, nothing written


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["-n", "0"], ["--count must be >= 1"]),
        (["--label", "2"], ["--label 2 is out of range", "0, 1"]),
        (["--label", "-1"], ["out of range"]),
        (["--seconds", "1"], ["--seconds does not apply to the image model"]),
        (["--speaker", "1"], ["--speaker does not apply"]),
        (["--prompt", "a shoe"], ["--prompt does not apply"]),
        (["--spectrogram", "{tmp}/s.png"], ["--spectrogram does not apply"]),
        (["--nbest", "2"], ["-n COUNT"]),
        (["--max-length", "10"], ["fixed size"]),
        (["-o", "{tmp}/grid.jpg"], ["ending in .png"]),
        (["-o", "{tmp}/missing/grid.png"], ["does not exist"]),
    ],
)
def test_sample_mistakes(trained, tmp_path, args, fragments):
    args = [arg.format(tmp=tmp_path) for arg in args]
    one_line_error(sample(trained, "-o", tmp_path / "out.png", *args), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_complete_and_score_mistakes(corpus, trained, unconditional, tmp_path):
    images = corpus / "test-images-idx3-ubyte.gz"
    out = tmp_path / "out.png"
    (tmp_path / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(tmp_path / "small-mask.png")
    Image.fromarray(np.zeros((6, 6), dtype=np.uint8)).save(tmp_path / "black-mask.png")
    Image.fromarray(np.full((6, 6), 255, dtype=np.uint8)).save(tmp_path / "white-mask.png")
    written = sorted(tmp_path.iterdir())
    mistakes = [
        ((tmp_path / "notes.txt",), ["notes.txt' is not an image file"]),
        ((images, "--mask", tmp_path / "small-mask.png"), ["small-mask.png' is 5x5, but this model's images are 6x6"]),
        ((images, "--mask", tmp_path / "black-mask.png"), ["hides no pixel"]),
        ((images, "--mask", tmp_path / "white-mask.png"), ["hides every pixel", "arcli sample"]),
        ((images, "--mask", "diagonal"), ["expected bottom, top, left, right, center, random, or a mask PNG"]),
        ((images, "-n", 0), ["--count must be >= 1"]),
        ((images, "--strategy", "greedy", "-n", 2), ["one completion per image", "-n 1"]),
        ((images, "--strategy", "beam", "-n", 6), ["--beam-size 6 or more"]),
        ((images, "--nbest", 2), ["-n N"]),
        ((images, "--label", 5), ["--label 5 is out of range"]),
        ((images, "-o", tmp_path / "grid.gif"), ["ending in .png"]),
        ((images, "--output-dir", tmp_path / "notes.txt"), ["is a file, not a folder"]),
    ]
    for args, fragments in mistakes:
        one_line_error(complete(trained, *args, "-o", out) if "-o" not in args else complete(trained, *args), *fragments)
    one_line_error(complete(unconditional, images, "--label", 0, "-o", out), "unconditional", "leave --label out")
    assert sorted(tmp_path.iterdir()) == written

    broken = tmp_path / "broken-images-idx3-ubyte.gz"
    broken.write_bytes((corpus / "test-images-idx3-ubyte.gz").read_bytes()[:-10])
    score = ("score-likelihood", "pixelcnn", "-c", trained, "--device", "cpu")
    one_line_error(run(*score, broken), "damaged gzip file")
    one_line_error(run(*score, tmp_path / "notes.txt"), "is not an image file")
    one_line_error(run(*score, images, "--heatmap", tmp_path / "heat.jpg"), "--heatmap", ".png")
    one_line_error(run(*score, images, "--heatmap", "-"), "scores go to stdout")
    one_line_error(run(*score, corpus / "empty-folder-that-is-missing"), "no such file or folder")


def test_existing_outputs_need_force(corpus, trained, tmp_path):
    images = corpus / "test-images-idx3-ubyte.gz"
    (tmp_path / "grid.png").write_bytes(b"keep me")
    one_line_error(sample(trained, "--label", 0, "-o", tmp_path / "grid.png"), "already exists", "--force")
    one_line_error(complete(trained, images, "-n", 1, "-o", tmp_path / "grid.png"), "already exists")
    (tmp_path / "each").mkdir()
    (tmp_path / "each" / "test-images-idx3-ubyte-2-1.png").write_bytes(b"keep me too")
    one_line_error(complete(trained, images, "-n", 1, "-o", tmp_path / "new.png", "--output-dir", tmp_path / "each"),
                   "test-images-idx3-ubyte-2-1.png' already exists")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["each", "grid.png", "test-images-idx3-ubyte-2-1.png"]
    assert (tmp_path / "grid.png").read_bytes() == b"keep me"
    ok(complete(trained, images, "-n", 1, "-o", tmp_path / "grid.png", "--output-dir", tmp_path / "each", "--force"))
    assert png(tmp_path / "each" / "test-images-idx3-ubyte-2-1.png").shape == (SIZE, SIZE)
    (tmp_path / "scores.tsv").write_text("old")
    one_line_error(run("score-likelihood", "pixelcnn", "-c", trained, images, "-o", tmp_path / "scores.tsv"), "already exists")


def test_train_mistakes(corpus, tmp_path):
    out = tmp_path / "m.safetensors"
    idx = corpus / "train-images-idx3-ubyte.gz"
    one_line_error(train("--data", idx, "-o", out, "--set", "height=7"), "--set height=7, but the images are 6x6 grey", "leave height out")
    one_line_error(train("--data", idx, "-o", out, "--set", "num_classes=3"), "num_classes=3, but the data has 2 classes")
    one_line_error(train("--data", corpus / "unlabelled.npy", "-o", out, "--set", "num_classes=2"), "the data has no class labels")
    mixed = tmp_path / "mixed"
    (mixed / "top").mkdir(parents=True)
    Image.fromarray(make_images(1, 0)[0][0]).save(mixed / "top" / "a.png")
    Image.fromarray(make_images(1, 0)[0][0]).save(mixed / "b.png")
    one_line_error(train("--data", mixed, "-o", out), "b.png' has no class label", "label every image, or none")
    one_line_error(train("--data", mixed / "b.png", "-o", out), "needs 2 images or more", "--valid")
    one_line_error(train("--data", idx, "--valid", corpus / "valid-pngs", "-o", out), "held-out image", "class 'left'")
    (tmp_path / "empty").mkdir()
    one_line_error(train("--data", tmp_path / "empty", "-o", out), "no images")
    assert not out.exists()


def test_a_checkpoint_of_another_model_is_refused(corpus, tmp_path, monkeypatch):
    config = WaveNetConfig(layers_per_stack=2, stacks=1, residual_channels=4, dilation_channels=4, skip_channels=4, end_channels=4)
    wavenet = tmp_path / "wavenet.safetensors"
    save_checkpoint(wavenet, "wavenet", config, WaveNet(config).state_dict())
    images = corpus / "test-images-idx3-ubyte.gz"
    refused = "'wavenet' checkpoint, not a 'pixelcnn' checkpoint"
    one_line_error(sample(wavenet, "-o", tmp_path / "x.png"), refused)
    one_line_error(complete(wavenet, images, "-o", tmp_path / "x.png"), refused)
    one_line_error(run("score-likelihood", "pixelcnn", "-c", wavenet, images), refused)
    monkeypatch.setattr(registry, "checkpoints_dir", lambda: tmp_path)  # an install that lost its checkpoint
    one_line_error(run("sample", "pixelcnn", "-o", tmp_path / "x.png"), "shipped checkpoint", "missing", "--checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wavenet.safetensors"]
    with pytest.raises(DataError):  # the library raises the same errors the CLI prints
        get_family("pixelcnn").task.prepare_training(get_family("pixelcnn"), PixelCNNConfig(), TrainRequest(data=[tmp_path / "wavenet.safetensors"]))


def test_fewer_levels_quantise_samples_but_completions_keep_the_known_pixels(corpus, tmp_path):
    checkpoint = tmp_path / "four.safetensors"
    ok(train("--data", corpus / "train-images-idx3-ubyte.gz", "-o", checkpoint, "--steps", 2, "--set", "levels=4"))
    ok(sample(checkpoint, "-n", 2, "--label", 1, "-o", tmp_path / "grid.png"))
    assert set(np.unique(cell(png(tmp_path / "grid.png"), 0, 0)).tolist()) <= {0, 85, 170, 255}
    ok(complete(checkpoint, corpus / "test-images-idx3-ubyte.gz", "-n", 1, "-o", tmp_path / "c.png", "--output-dir", tmp_path / "each"))
    originals, _ = make_images(3, seed=1)
    completion = png(tmp_path / "each" / "test-images-idx3-ubyte-1-1.png")
    assert np.array_equal(completion[:3], originals[1][:3])  # the known top half, not its 4-level quantisation
    assert set(np.unique(completion[3:]).tolist()) <= {0, 85, 170, 255}
