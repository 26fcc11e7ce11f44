"""Image files in and out: IDX (the MNIST format, gzipped or not), PNG/JPEG files and folders of
them, .npy arrays; PNG grids, single PNGs and per-pixel heatmaps.

Images come out of here as uint8 arrays (N, H, W, C), C = 1 (grey) or 3 (RGB). A picture file is
grey when all its colour channels are equal (whatever its PNG mode), else RGB; alpha is dropped.
Given a target shape, every image of another size or mode is converted with Pillow: cropped to the
target's aspect ratio around its centre, resized (Lanczos), and turned grey (luma) or RGB. The
library does not print: what it converted comes back as notes for the caller to show.

Labels: a folder whose images lie in sub-folders labels each image with the name of its
first-level sub-folder (`shoes/boot/1.png` -> "boot"); an IDX images file
`X-images-idx3-ubyte[.gz]` takes its labels from `X-labels-idx1-ubyte[.gz]` beside it, when there
is one (labels are the numbers as strings, "0" .. "9"). Other images are unlabelled.

Binary images: an .npy or IDX file whose values are all 0 or 1 (or an .npy of booleans) holds
black-and-white images, read as 0 and 255.

Writes are atomic (a temp file beside the target, then a rename) or go to stdout for "-".
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from arcli.errors import DataError
from arcli.outputs import write_bytes
from arcli.palette import palette

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FORMATS = "PNG/JPEG images (or folders of them), IDX files (.gz or not) and .npy arrays"
LISTED = 5  # items named in a note or an error line

GUTTER = 2  # pixels between the cells of a grid
GUTTER_VALUE = 192  # light grey: it stands out against the black backgrounds of (Fashion-)MNIST and against white
CHECKER = (96, 160)  # the two greys of the checkerboard that marks hidden pixels
DISPLAY_SIZE = 112  # grids upscale each image (nearest neighbour) to about this many pixels a side

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class ImageSet:
    """Images read from files, all of one shape."""

    pixels: np.ndarray  # (N, H, W, C) uint8
    names: list[str]  # per image: its path, or "path:index" (0-based) inside an IDX or .npy file
    files: list[Path]  # per image: the file it came from
    labels: list[str | None]  # per image: its class name (sub-folder, IDX labels file), None when unknown
    notes: list[str] = field(default_factory=list)  # what was converted, for stderr

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(self.pixels.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.pixels)


@dataclass
class _Block:
    """Images of one native shape from one file: (n, h, w, c) uint8."""

    pixels: np.ndarray
    names: list[str]
    file: Path
    labels: list[str | None]


# -------------------------------------------------------------------------------------------------
# reading


def load_images(paths: list[str | Path], shape: tuple[int, int, int] | None = None) -> ImageSet:
    """Read images from files and folders, in the order given (folders in sorted order).

    shape: (H, W, C) to convert every image to; None takes the shape from the images themselves:
    the most common size, RGB when any image is in colour, else grey.
    Raises DataError (one line) for a missing path, a file that is not an image, an unreadable
    image, a folder without images, a corrupt IDX or .npy file.
    """
    if not paths:
        raise DataError(f"no images given: arcli reads {FORMATS}")
    blocks: list[_Block] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            blocks += [_read_picture(file, label) for file, label in find_image_files(path)]
        elif path.is_file():
            blocks.append(_read_file(path))
        else:
            raise DataError(f"no such file or folder: '{path}'")
    if shape is None:
        shape = _common_shape(blocks)
    converted = [block for block in blocks if block.pixels.shape[1:] != shape]
    notes = []
    if converted:
        count = sum(len(block.pixels) for block in converted)
        total = sum(len(block.pixels) for block in blocks)
        listed = ", ".join(f"'{_block_name(b)}' ({describe_shape(b.pixels.shape[1:])})" for b in converted[:LISTED])
        more = f" and {len(converted) - LISTED} more files" if len(converted) > LISTED else ""
        notes.append(f"converted {count} of {total} image(s) to {describe_shape(shape)} (cropped to its aspect ratio around the centre, "
                     f"resized with Lanczos): {listed}{more}")
    pixels = np.concatenate([convert_pixels(block.pixels, shape) for block in blocks])
    names = [name for block in blocks for name in block.names]
    files = [block.file for block in blocks for _ in block.names]
    labels = [label for block in blocks for label in block.labels]
    return ImageSet(pixels, names, files, labels, notes)


def find_image_files(folder: Path) -> list[tuple[Path, str | None]]:
    """(image file, label) pairs under `folder`, searched recursively (hidden files and folders
    skipped) in sorted order; the label is the first-level sub-folder's name, None for files
    directly in `folder`."""
    found = []
    for root, subfolders, names in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [
            Path(root, name).relative_to(folder)
            for name in names
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)
        ]
    if not found:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under '{folder}' (give IDX and .npy files by name)")
    return [(folder / rel, rel.parts[0] if len(rel.parts) > 1 else None) for rel in sorted(found, key=lambda p: p.parts)]


def _read_file(path: Path) -> _Block:
    """One file: an .npy array, an IDX file (by its name: `*idx*`, `*.gz`, or by its first
    bytes), or a picture."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path)
    if suffix in IMAGE_SUFFIXES:
        return _read_picture(path, None)
    if "idx" in path.name.lower() or suffix == ".gz":
        return _read_idx_images(path)
    start = _first_bytes(path, 4)
    if start.startswith(_GZIP_MAGIC) or (len(start) == 4 and start[:2] == b"\0\0" and start[2] in _IDX_TYPES):
        return _read_idx_images(path)
    return _read_picture(path, None)


def _first_bytes(path: Path, count: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(count)
    except OSError as error:
        raise DataError(f"cannot read '{path}': {error.strerror or error}") from None


def _read_picture(path: Path, label: str | None) -> _Block:
    try:
        with Image.open(path) as image:
            image.load()
            pixels = picture_pixels(image)
    except UnidentifiedImageError:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise DataError(f"cannot read image '{path}': not an image Pillow can read (damaged, or another format)") from None
        raise DataError(f"'{path}' is not an image file: arcli reads {FORMATS}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image '{path}': {error}") from None
    return _Block(pixels[None], [str(path)], path, [label])


def picture_pixels(image: Image.Image) -> np.ndarray:
    """A Pillow image as uint8 (H, W, C): C = 1 when its colour channels are all equal, else 3;
    16-bit grey is scaled to 8 bits, alpha is dropped."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(image, dtype=np.int64)
        grey = (values >> 8) if values.max(initial=0) > 255 else values
        return grey.clip(0, 255).astype(np.uint8)[..., None]
    if image.mode in ("1", "L", "LA", "F"):
        return np.asarray(image.convert("L"))[..., None]
    rgb = np.asarray(image.convert("RGB"))  # (H, W, 3)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., :1].copy()
    return rgb


def read_idx(path: str | Path) -> np.ndarray:
    """The array in an IDX file (gzipped or not): big-endian data of the type and dimensions its
    header gives. Raises DataError for a file that is not IDX, or is cut short or too long."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read '{path}': {error.strerror or error}") from None
    if raw.startswith(_GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"'{path}' is a damaged gzip file ({error})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise DataError(f"'{path}' is not an IDX file (it does not start with the IDX magic number 0x0000 + type + dimensions)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise DataError(f"'{path}' is not an IDX file: unknown data type 0x{code:02x} in its header")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"'{path}' is a damaged IDX file: its header is cut short")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_TYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        shape = "x".join(map(str, dims))
        raise DataError(
            f"'{path}' is a damaged IDX file: its header promises {shape} values ({expected} bytes), "
            f"it holds {len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file (gzipped when `path` ends in .gz), atomically."""
    array = np.asarray(array)
    codes = [code for code, dtype in _IDX_TYPES.items() if (dtype.kind, dtype.itemsize) == (array.dtype.kind, array.dtype.itemsize)]
    if not codes or array.ndim == 0:
        raise ValueError(f"IDX holds uint8, int8, int16, int32, float32 or float64 arrays, got {array.dtype} of shape {array.shape}")
    code = codes[0]
    data = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    data += np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    write_bytes(path, data)


def idx_labels_path(images: Path) -> Path | None:
    """The labels file beside an IDX images file (`X-images-idx3-ubyte[.gz]` ->
    `X-labels-idx1-ubyte[.gz]`), or None when there is none."""
    name = images.name
    for part, labels in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")):
        if part in name:
            stem = name.replace(part, labels).removesuffix(".gz")
            for candidate in (stem + ".gz", stem):
                if (images.parent / candidate).is_file():
                    return images.parent / candidate
    return None


def _read_idx_images(path: Path) -> _Block:
    array = read_idx(path)
    if array.dtype != np.uint8 or not (array.ndim == 3 or (array.ndim == 4 and array.shape[3] in (1, 3))):
        raise DataError(
            f"'{path}' holds {array.dtype.name} values of shape {array.shape}, not images: "
            "arcli reads uint8 IDX images (N, H, W) or (N, H, W, C) with C = 1 or 3"
        )
    pixels = _binary_as_bytes(array[..., None] if array.ndim == 3 else array)
    labels: list[str | None] = [None] * len(pixels)
    labels_path = idx_labels_path(path)
    if labels_path is not None:
        values = read_idx(labels_path)
        if values.ndim != 1 or values.dtype.kind not in "iu" or len(values) != len(pixels):
            raise DataError(
                f"labels file '{labels_path}' holds {values.dtype.name} values of shape {values.shape}: "
                f"expected {len(pixels)} integer labels, one for each image of '{path.name}'"
            )
        if len(values) and values.min() < 0:
            raise DataError(f"labels file '{labels_path}' holds negative labels")
        labels = [str(int(v)) for v in values]
    return _Block(pixels, [f"{path}:{i}" for i in range(len(pixels))], path, labels)


def _read_npy(path: Path) -> _Block:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"cannot read '{path}' as a .npy array: {str(error).splitlines()[0] if str(error) else error}") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"'{path}' is not a single .npy array")
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[3] not in (1, 3)):
        raise DataError(f"'{path}' holds an array of shape {array.shape}: expected images (N, H, W) or (N, H, W, C) with C = 1 or 3")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype != np.uint8:
        raise DataError(f"'{path}' holds {array.dtype} values: expected uint8 images (0..255), e.g. (x * 255).round().astype(np.uint8)")
    pixels = _binary_as_bytes(array[..., None] if array.ndim == 3 else array)
    return _Block(pixels, [f"{path}:{i}" for i in range(len(pixels))], path, [None] * len(pixels))


def _binary_as_bytes(pixels: np.ndarray) -> np.ndarray:
    """Binary images stored as 0/1 (an .npy or IDX file whose values are all 0 or 1) -> 0/255, so
    that they show as black and white and quantise to the same bits; other arrays as they are."""
    if pixels.size and pixels.max() <= 1:
        return pixels * np.uint8(255)
    return pixels


def _common_shape(blocks: list[_Block]) -> tuple[int, int, int]:
    sizes: Counter[tuple[int, int]] = Counter()
    for block in blocks:
        sizes[block.pixels.shape[1:3]] += len(block.pixels)
    if not sizes or sum(sizes.values()) == 0:
        raise DataError("the files given hold no images")
    height, width = sizes.most_common(1)[0][0]
    channels = 3 if any(block.pixels.shape[3] == 3 for block in blocks) else 1
    return height, width, channels


def _block_name(block: _Block) -> str:
    return str(block.file) if len(block.names) == 1 else f"{block.file} ({len(block.names)} images)"


def describe_shape(shape: tuple[int, ...]) -> str:
    """(28, 28, 1) -> '28x28 grey', (32, 32, 3) -> '32x32 RGB'."""
    height, width, channels = shape
    return f"{height}x{width} {'grey' if channels == 1 else 'RGB'}"


def convert_pixels(pixels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 images (n, h, w, c) -> (n, H, W, C): cropped to the target's aspect ratio around the
    centre, resized with Lanczos filtering, and turned grey (luma) or RGB. As they are when the
    shape already fits."""
    if pixels.shape[1:] == tuple(shape):
        return pixels
    height, width, channels = shape
    out = np.empty((len(pixels), height, width, channels), dtype=np.uint8)
    for i, image in enumerate(pixels):
        picture = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)  # mode L or RGB
        picture = picture.convert("L" if channels == 1 else "RGB")
        if picture.size != (width, height):
            picture = ImageOps.fit(picture, (width, height), method=Image.Resampling.LANCZOS)
        array = np.asarray(picture)
        out[i] = array[..., None] if channels == 1 else array
    return out


# -------------------------------------------------------------------------------------------------
# writing


def png_bytes(pixels: np.ndarray) -> bytes:
    """A uint8 image (H, W, 1) or (H, W, 3) as PNG bytes (grey or RGB)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"expected a uint8 image (H, W, 1|3), got {pixels.dtype} {pixels.shape}")
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """One image (H, W, C) as a PNG at its own resolution; "-" writes it to stdout."""
    write_bytes(path, png_bytes(pixels))


def upscale_factor(height: int, width: int) -> int:
    """How many screen pixels a side each image pixel gets in a grid: 28x28 -> 4 (112 px)."""
    return max(1, DISPLAY_SIZE // max(height, width))


def grid_size(rows: int, columns: int, height: int, width: int, scale: int | None = None) -> tuple[int, int]:
    """(width, height) in pixels of a grid of rows x columns images of height x width."""
    scale = upscale_factor(height, width) if scale is None else scale
    return columns * width * scale + (columns - 1) * GUTTER, rows * height * scale + (rows - 1) * GUTTER


def grid(rows: list[list[np.ndarray | None]], scale: int | None = None) -> np.ndarray:
    """Lay images (H, W, 1|3) out in rows, each upscaled `scale` times (nearest neighbour), with a
    GUTTER-pixel light-grey gutter between them; None (and the end of a short row) is an empty
    cell. RGB when any image is. Returns (rows*H*s + gutters, columns*W*s + gutters, C) uint8."""
    cells = [image for row in rows for image in row if image is not None]
    if not cells:
        raise ValueError("a grid needs at least one image")
    height, width = cells[0].shape[:2]
    channels = max(image.shape[2] for image in cells)
    scale = upscale_factor(height, width) if scale is None else scale
    columns = max(len(row) for row in rows)
    total_width, total_height = grid_size(len(rows), columns, height, width, scale)
    canvas = np.full((total_height, total_width, channels), GUTTER_VALUE, dtype=np.uint8)
    cell_h, cell_w = height * scale, width * scale
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            if image is None:
                continue
            if image.shape[:2] != (height, width):
                raise ValueError(f"grid images must share one size: {image.shape[:2]} vs {(height, width)}")
            big = image.repeat(scale, axis=0).repeat(scale, axis=1)  # (H*s, W*s, c)
            top, left = r * (cell_h + GUTTER), c * (cell_w + GUTTER)
            canvas[top : top + cell_h, left : left + cell_w] = big  # a grey cell broadcasts over RGB
    return canvas


def write_grid(path: str | Path, rows: list[list[np.ndarray | None]], scale: int | None = None) -> None:
    """`grid(rows, scale)` as a PNG; "-" writes it to stdout."""
    write_bytes(path, png_bytes(grid(rows, scale)))


def occlude(pixels: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """The image (H, W, C) with its hidden pixels (H, W) bool drawn as a grey checkerboard."""
    rows, columns = np.indices(hidden.shape)
    checker = np.where((rows + columns) % 2 == 0, CHECKER[0], CHECKER[1]).astype(np.uint8)
    out = pixels.copy()
    out[hidden] = checker[hidden][:, None]
    return out


def write_heatmap(path: str | Path, pixels: np.ndarray, bits: np.ndarray, top: float | None = None) -> float:
    """Draw per-pixel surprise: one row per image, the image (N, H, W, C) then its bits (N, H, W)
    coloured from 0 (black) to `top` (pale yellow; default: the largest value shown). Returns `top`."""
    if bits.shape != pixels.shape[:3]:
        raise ValueError(f"bits {bits.shape} must be (N, H, W) of the images {pixels.shape}")
    top = float(bits.max(initial=0.0)) if top is None else top
    colours = palette(bits / top if top > 0 else np.zeros_like(bits))
    rows = [[np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image, heat] for image, heat in zip(pixels, colours, strict=True)]
    write_grid(path, rows)
    return top
