"""Image files in and out: IDX (gzipped or not), PNG/JPEG folders with labels, .npy arrays, the
conversions to a model's size and mode, PNG grids, heatmaps, and one-line errors for bad files."""

import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from arcli.errors import DataError
from arcli.image import pixels_to_tokens, tokens_to_pixels
from arcli.image.io import (
    CHECKER,
    GUTTER,
    GUTTER_VALUE,
    grid,
    grid_size,
    idx_labels_path,
    load_images,
    occlude,
    read_idx,
    upscale_factor,
    write_heatmap,
    write_idx,
    write_png,
)


def images(n=5, height=4, width=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width), dtype=np.uint8)


# -------------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("name", ["x-images-idx3-ubyte", "x-images-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, name, dtype):
    array = (np.arange(60) - 20).reshape(5, 4, 3).astype(dtype)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.shape == array.shape and back.dtype.kind == np.dtype(dtype).kind
    assert np.array_equal(back, array)
    raw = (tmp_path / name).read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    assert raw[:4] == bytes([0, 0, raw[2], 3]) and raw[4:8] == (5).to_bytes(4, "big")  # the MNIST header layout
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left behind


def test_idx_images_take_their_labels_from_the_file_beside_them(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images(3))
    assert idx_labels_path(tmp_path / "train-images-idx3-ubyte.gz") is None
    loaded = load_images([tmp_path / "train-images-idx3-ubyte.gz"])
    assert loaded.labels == [None] * 3 and loaded.shape == (4, 3, 1)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([2, 0, 7], dtype=np.uint8))  # not gzipped: found as well
    loaded = load_images([tmp_path / "train-images-idx3-ubyte.gz"])
    assert loaded.labels == ["2", "0", "7"]
    assert loaded.names == [f"{tmp_path / 'train-images-idx3-ubyte.gz'}:{i}" for i in range(3)]
    assert np.array_equal(loaded.pixels[..., 0], images(3))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([2, 0], dtype=np.uint8))
    with pytest.raises(DataError, match="expected 3 integer labels, one for each image"):
        load_images([tmp_path / "train-images-idx3-ubyte.gz"])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[:-7], "damaged IDX file: its header promises 5x4x3 values \\(60 bytes\\), it holds 53 bytes"),
        (lambda raw: raw + b"\0", "holds 61 bytes"),
        (lambda raw: raw[:6], "header is cut short"),
        (lambda raw: b"\x01\x02" + raw[2:], "not an IDX file"),
        (lambda raw: raw[:2] + b"\x07" + raw[3:], "unknown data type 0x07"),
        (lambda raw: gzip.compress(raw)[:-12], "damaged gzip file"),
    ],
)
def test_a_corrupt_idx_file_is_one_data_error(tmp_path, damage, message):
    write_idx(tmp_path / "good-images-idx3-ubyte", images())
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(damage((tmp_path / "good-images-idx3-ubyte").read_bytes()))
    with pytest.raises(DataError, match=message) as error:
        load_images([path])
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_idx_of_other_values_are_not_images(tmp_path):
    write_idx(tmp_path / "x-images-idx3-ubyte", images().astype(np.float32))
    with pytest.raises(DataError, match="holds float32 values of shape \\(5, 4, 3\\), not images"):
        load_images([tmp_path / "x-images-idx3-ubyte"])


# -------------------------------------------------------------------------------------------------
# PNG folders, .npy, conversion


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def test_a_folder_of_pngs_is_labelled_by_its_sub_folders(tmp_path):
    data = images(4)
    save(tmp_path / "shoes" / "boot" / "b.png", data[0])
    save(tmp_path / "shoes" / "boot" / "a.png", data[1])
    save(tmp_path / "shoes" / "shirt" / "deep" / "c.png", data[2])  # deeper: still the first-level folder's label
    save(tmp_path / "shoes" / ".hidden" / "d.png", data[3])
    (tmp_path / "shoes" / "boot" / "notes.txt").write_text("not an image: skipped in a folder")
    loaded = load_images([tmp_path / "shoes"])
    assert [p.name for p in loaded.files] == ["a.png", "b.png", "c.png"]
    assert loaded.labels == ["boot", "boot", "shirt"]
    assert np.array_equal(loaded.pixels[..., 0], data[[1, 0, 2]]) and loaded.notes == []
    single = load_images([tmp_path / "shoes" / "boot" / "a.png"])  # a file given by name has no label
    assert single.labels == [None] and single.names == [str(tmp_path / "shoes" / "boot" / "a.png")]


def test_pictures_are_grey_unless_coloured_and_converted_to_the_shape_asked(tmp_path):
    grey = images(1, 8, 8)[0]
    save(tmp_path / "grey-as-rgb.png", np.repeat(grey[..., None], 3, axis=2))  # an RGB file with R = G = B
    save(tmp_path / "palette.png", grey, "L")
    with Image.open(tmp_path / "palette.png") as image:
        image.convert("P").save(tmp_path / "palette.png")
    Image.fromarray(np.dstack([grey, grey, grey, grey])).save(tmp_path / "alpha.png")  # RGBA, equal colours
    loaded = load_images([tmp_path / "grey-as-rgb.png", tmp_path / "alpha.png"])
    assert loaded.shape == (8, 8, 1) and np.array_equal(loaded.pixels[0, ..., 0], grey)
    assert load_images([tmp_path / "palette.png"]).shape == (8, 8, 1)

    colour = np.random.default_rng(1).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    save(tmp_path / "colour.jpg", colour)
    mixed = load_images([tmp_path / "grey-as-rgb.png", tmp_path / "colour.jpg", tmp_path / "alpha.png"])
    assert mixed.shape == (8, 8, 3)  # the most common size; RGB because one image is in colour
    assert len(mixed.notes) == 1 and "converted 3 of 3 image(s) to 8x8 RGB" in mixed.notes[0]
    assert "colour.jpg' (10x12 RGB)" in mixed.notes[0]
    assert np.array_equal(mixed.pixels[0], np.repeat(grey[..., None], 3, axis=2))  # grey -> RGB repeats the value
    small = load_images([tmp_path / "colour.jpg"], shape=(6, 6, 1))
    assert small.pixels.shape == (1, 6, 6, 1) and "to 6x6 grey" in small.notes[0]
    assert load_images([tmp_path / "alpha.png"], shape=(8, 8, 1)).notes == []  # nothing converted, nothing said


def test_npy_arrays(tmp_path):
    np.save(tmp_path / "grey.npy", images(3))
    np.save(tmp_path / "rgb.npy", np.random.default_rng(0).integers(0, 256, (2, 4, 3, 3), dtype=np.uint8))
    loaded = load_images([tmp_path / "grey.npy"])
    assert loaded.shape == (4, 3, 1) and loaded.names[2] == f"{tmp_path / 'grey.npy'}:2" and loaded.labels == [None] * 3
    assert load_images([tmp_path / "rgb.npy"]).shape == (4, 3, 3)
    np.save(tmp_path / "float.npy", images(3) / 255.0)
    with pytest.raises(DataError, match="holds float64 values: expected uint8 images"):
        load_images([tmp_path / "float.npy"])
    np.save(tmp_path / "flat.npy", np.zeros((3, 12), dtype=np.uint8))
    with pytest.raises(DataError, match=r"shape \(3, 12\): expected images"):
        load_images([tmp_path / "flat.npy"])
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot read .*objects.npy' as a .npy array"):
        load_images([tmp_path / "objects.npy"])


def test_files_that_are_not_images_are_one_data_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.png").write_text("not a png at all")
    save(tmp_path / "good.png", images(1, 16, 16)[0])
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:60])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images here")
    cases = [
        (tmp_path / "notes.txt", "'.*notes.txt' is not an image file: arcli reads PNG/JPEG images"),
        (tmp_path / "fake.png", "cannot read image '.*fake.png': not an image Pillow can read"),
        (tmp_path / "cut.png", "cannot read image '.*cut.png'"),
        (tmp_path / "empty", "no images \\(.png, .jpg.*\\) under '.*empty'"),
        (tmp_path / "missing.png", "no such file or folder"),
    ]
    for path, message in cases:
        with pytest.raises(DataError, match=message) as error:
            load_images([path])
        assert "\n" not in str(error.value)


# -------------------------------------------------------------------------------------------------
# quantisation, writing


def test_tokens_and_pixels():
    pixels = np.array([0, 1, 63, 64, 128, 254, 255], dtype=np.uint8).reshape(1, 1, 7, 1)
    assert torch.equal(pixels_to_tokens(pixels, 256), torch.tensor([[0, 1, 63, 64, 128, 254, 255]], dtype=torch.uint8))
    four = pixels_to_tokens(pixels, 4)
    assert four.tolist() == [[0, 0, 0, 1, 2, 3, 3]]
    assert tokens_to_pixels(four, (1, 7, 1), 4).reshape(-1).tolist() == [0, 0, 0, 85, 170, 255, 255]
    assert np.array_equal(tokens_to_pixels(pixels_to_tokens(pixels, 256), (1, 7, 1), 256), pixels)


def test_grid_layout_gutters_and_empty_cells():
    a, b, c = (np.full((2, 3, 1), value, dtype=np.uint8) for value in (10, 20, 30))
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    out = grid([[a, b], [None, rgb], [c]], scale=2)
    width, height = grid_size(3, 2, 2, 3, scale=2)
    assert out.shape == (height, width, 3) == (3 * 4 + 2 * GUTTER, 2 * 6 + GUTTER, 3)
    assert (out[0:4, 0:6] == 10).all() and (out[0:4, 6 + GUTTER :] == 20).all()
    assert (out[4 : 4 + GUTTER] == GUTTER_VALUE).all() and (out[:, 6 : 6 + GUTTER] == GUTTER_VALUE).all()
    assert (out[4 + GUTTER : 8 + GUTTER, 0:6] == GUTTER_VALUE).all()  # None: an empty cell
    assert (out[4 + GUTTER : 8 + GUTTER, 6 + GUTTER :] == [200, 0, 0]).all()
    assert (out[-4:, 6 + GUTTER :] == GUTTER_VALUE).all()  # the short last row
    assert upscale_factor(28, 28) == 4 and upscale_factor(6, 6) == 18 and upscale_factor(200, 100) == 1


def test_occlude_draws_hidden_pixels_as_a_checker():
    image = np.full((3, 4, 1), 7, dtype=np.uint8)
    hidden = np.zeros((3, 4), dtype=bool)
    hidden[1:, 2:] = True
    out = occlude(image, hidden)
    assert (out[~hidden] == 7).all()
    assert out[1, 2, 0] == CHECKER[1] and out[1, 3, 0] == CHECKER[0] and out[2, 2, 0] == CHECKER[0]
    assert (image == 7).all()  # the input is not touched


def test_png_and_heatmap_files(tmp_path):
    image = images(1, 5, 4)[0][..., None]
    write_png(tmp_path / "one.png", image)
    with Image.open(tmp_path / "one.png") as written:
        assert np.array_equal(np.asarray(written)[..., None], image)
    bits = np.zeros((2, 5, 4))
    bits[0, 0, 0], bits[1, 4, 3] = 8.0, 2.0
    top = write_heatmap(tmp_path / "heat.png", np.stack([image, image]), bits)
    assert top == 8.0
    with Image.open(tmp_path / "heat.png") as drawn:
        assert drawn.mode == "RGB" and drawn.size == grid_size(2, 2, 5, 4)
        scale = upscale_factor(5, 4)
        heat = np.asarray(drawn)[:, 4 * scale + GUTTER :]  # the right-hand column: the heatmaps
    assert heat[0, 0].sum() > heat[0, scale].sum()  # the surprising pixel is the brightest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heat.png", "one.png"]
