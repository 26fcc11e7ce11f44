"""Images: PixelCNN over 8-bit sub-pixels, trained on image files, sampled to PNG grids, completed
under a mask, and scored in bits per dimension.

An image is T = H * W * C tokens in raster order, R G B within a pixel; the loss and every score
count all T of them (nats summed over sub-pixels; bits/dim divides by T and ln 2).

Completion. Known pixels are kept exactly: the engine feeds them instead of choosing (`Known`).
Left-to-right sampling with the known pixels forced draws the hidden pixels from
p(hidden | known pixels before them), which is the true posterior p(hidden | all known) only when
no known pixel comes after the first hidden one in raster order (the `bottom` mask). For any other
mask (top, left, right, center, random, most drawn masks) the known pixels after the hole must
also be explained, and they are, by importance resampling: per image, K = max(4 N, 16) proposals
are drawn as above; since the proposal probability of a complete image is the product of the
model's conditionals at the hidden positions, the importance weight p(image) / q(hidden) is the
product of the model's probabilities of the known pixels, of which those before the first hidden
one are the same for every proposal: a proposal's weight is the likelihood the model gives the
known sub-pixels after the first hidden one, read from one `forward` pass over the proposal. N
completions are resampled (with replacement) in proportion to those weights, and the effective
sample size (sum w)^2 / sum w^2 is reported, so a user sees when the K proposals were too few.
Beam search needs none of this: its scores count every known token as it is forced, so it ranks
whole images by their likelihood.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from arcli.decoding import Known, Sample, generate
from arcli.errors import DataError, OptionError
from arcli.image import pixels_to_tokens, tokens_to_pixels
from arcli.image.io import ImageSet, describe_shape, load_images, occlude, write_grid, write_heatmap, write_png
from arcli.models.pixelcnn import PixelCNN, PixelCNNConfig
from arcli.outputs import check_new, open_output
from arcli.registry import ModelFamily
from arcli.tasks import LN2, CompleteRequest, Loaded, SampleRequest, ScoreRequest, Task, TrainingSetup, TrainRequest
from arcli.training import LossOutput

MASKS = ("bottom", "top", "left", "right", "center", "random")
PROPOSALS_PER_COMPLETION = 4  # importance resampling draws max(4 N, MIN_PROPOSALS) proposals per image
MIN_PROPOSALS = 16
MAX_PROPOSALS = 512  # importance resampling stops drawing proposals for an image at this many (or just past it)
CLASS_FLOOR = 1e-3  # a class whose posterior falls below this gets no more proposals
HEATMAP_IMAGES = 8  # --heatmap draws the first images scored, at most this many
LISTED = 5  # items named in a note or an error line
LISTED_CLASSES = 16  # images whose drawn class `sample` names


class ImageBatch(NamedTuple):
    tokens: torch.Tensor  # (B, T) sub-pixel values in raster order
    labels: torch.Tensor | None  # (B,) class ids, None for an unconditional model


class ImageData:
    """Random training images (drawn with the given generator only); fixed held-out slices."""

    def __init__(self, train: torch.Tensor, train_labels: torch.Tensor | None, valid: torch.Tensor, valid_labels: torch.Tensor | None):
        self.train, self.train_labels = train, train_labels  # (N, T) uint8/int32, (N,) long
        self.valid, self.valid_labels = valid, valid_labels

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> ImageBatch:
        picks = torch.randint(len(self.train), (batch_size,), generator=generator, device=generator.device).cpu()
        return ImageBatch(self.train[picks].long(), None if self.train_labels is None else self.train_labels[picks])

    def valid_batches(self, batch_size: int):
        for start in range(0, len(self.valid), batch_size):
            labels = None if self.valid_labels is None else self.valid_labels[start : start + batch_size]
            yield ImageBatch(self.valid[start : start + batch_size].long(), labels)


def token_nats(model: torch.nn.Module, tokens: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """-log p of every sub-pixel in nats, (B, T): tokens (B, T), labels (B,) or None."""
    logits = model(tokens, labels)  # (B, T, V)
    return F.cross_entropy(logits.transpose(1, 2).float(), tokens, reduction="none")


def context(config: PixelCNNConfig) -> tuple[int, int]:
    """(rows above, columns to either side) that the logits of a pixel see. The gated vertical
    stack starts one row up (its input is shifted down a row) and each layer widens the view by
    the kernel's radius; the plain stack's first conv already covers the current row."""
    r_first, r = config.first_kernel // 2, config.kernel // 2
    reach = r_first + config.layers * r
    return (1 if config.gated else 0) + reach, reach


def _note(message: str) -> None:
    """A line on stderr that does not tear a progress bar that may be on screen."""
    tqdm.write(message, file=sys.stderr)


def _listing(names: list[str], count: int) -> str:
    """'0=boot, 1=shirt' (the number alone where the name is the number)."""
    shown = [str(i) if i >= len(names) or names[i] == str(i) else f"{i}={names[i]}" for i in range(min(count, 12))]
    return ", ".join(shown) + (" ..." if count > 12 else "")


def _class_list(labels: list[str | None], what: str, files: list[Path]) -> list[str]:
    """The class names of labelled data: 0 .. max for numbers (IDX labels), else sorted names;
    [] for unlabelled data. A mix of labelled and unlabelled images is refused."""
    names = sorted({label for label in labels if label is not None})
    if not names:
        return []
    if None in labels:
        stray = files[labels.index(None)]
        raise DataError(
            f"{what}: '{stray}' has no class label (class sub-folder or IDX labels file), but other images do "
            f"({', '.join(names[:LISTED])}{' ...' if len(names) > LISTED else ''}): label every image, or none"
        )
    if all(name.isdigit() for name in names):
        return [str(i) for i in range(max(int(name) for name in names) + 1)]
    return names


def _shape(config: PixelCNNConfig) -> tuple[int, int, int]:
    return config.height, config.width, config.channels


def _check_png_output(output: str, force: bool, what: str = "-o") -> None:
    if output == "-":
        if sys.stdout.isatty():
            raise OptionError(f"refusing to write a PNG image to the terminal: give {what} FILE.png, or pipe the output")
        return
    if Path(output).suffix.lower() != ".png":
        raise OptionError(f"{what} {output}: images are written as PNG; give a file name ending in .png, or '-' for stdout")
    check_new(output, force)


class ImageTask(Task):
    modality = "image"
    unit = "bits/dim"
    default_strategy = "sample"
    progress_unit = "px"

    def info(self, family: ModelFamily, model: torch.nn.Module) -> dict[str, str]:
        config = model.config
        rows, columns = context(config)
        if config.gated:
            kind = "Gated PixelCNN: vertical + horizontal stacks of gated units, no blind spot"
            seen = f"{rows} rows above (columns -{columns} .. +{columns}) and {columns} pixels to the left, every one of them"
        else:
            kind = "PixelCNN: masked convolutions (mask A, then B) in residual blocks"
            seen = f"{rows} rows above (columns -{columns} .. +{columns}) and {columns} pixels to the left, less the blind spot up-right"
        return {
            "image": f"{describe_shape(_shape(config))} ({config.channels} channel{'s' if config.channels > 1 else ''}, "
            f"{config.height * config.width * config.channels} sub-pixels{', R then G then B' if config.channels == 3 else ''})",
            "levels": f"{config.levels} per sub-pixel (a {config.levels}-way softmax)",
            "classes": f"{config.num_classes} (class-conditional)" if config.num_classes else "none (unconditional)",
            "architecture": kind,
            "receptive field": seen,
        }

    # --- training --------------------------------------------------------------------------------

    def prepare_training(self, family: ModelFamily, config: PixelCNNConfig, request: TrainRequest) -> TrainingSetup:
        if not 0 < request.valid_fraction < 1:
            raise ValueError(f"valid_fraction must lie in (0, 1), got {request.valid_fraction}")
        data = load_images(request.data)
        classes = _class_list(data.labels, "--data", data.files)
        config, config_note = _fit_config(config, data.shape, classes)
        notes = data.notes + ([config_note] if config_note else [])
        if request.valid:
            held = load_images(request.valid, data.shape)
            notes += [f"held-out: {note}" for note in held.notes]
            train_set, valid_set = data, held
            valid_ids = _held_out_labels(held, classes)
            train_ids = [classes.index(label) for label in data.labels] if classes else None
        else:
            every = max(2, round(1 / request.valid_fraction))
            if len(data) < 2:
                raise DataError(
                    f"{len(data)} image: every {every}th image is held out for evaluation, which needs 2 images or more; "
                    "add images, or pass held-out images with --valid"
                )
            held_out = np.arange(len(data)) % every == 0
            train_set, valid_set = _subset(data, ~held_out), _subset(data, held_out)
            train_ids = [classes.index(label) for label in train_set.labels] if classes else None
            valid_ids = [classes.index(label) for label in valid_set.labels] if classes else None

        levels = config.levels
        as_labels = lambda ids: None if ids is None else torch.tensor(ids, dtype=torch.long)  # noqa: E731
        image_data = ImageData(
            pixels_to_tokens(train_set.pixels, levels), as_labels(train_ids),
            pixels_to_tokens(valid_set.pixels, levels), as_labels(valid_ids),
        )
        meta = {
            "height": config.height,
            "width": config.width,
            "channels": config.channels,
            "levels": levels,
            "classes": classes,
            "class_names": _named_classes(classes, request.class_names),
            "images": len(train_set),
            "valid_images": len(valid_set),
        }
        for note in notes:
            _note(note)
        who = f"{len(classes)} classes ({_listing(classes, len(classes))})" if classes else "no class labels (unconditional)"
        print(
            f"data: {len(train_set)} images of {describe_shape(data.shape)}, {who}; held out: {len(valid_set)} images; "
            f"{levels} levels per sub-pixel",
            file=sys.stderr,
        )
        return TrainingSetup(config=config, data=image_data, data_meta=meta)

    def loss(self, model: torch.nn.Module, batch: ImageBatch) -> LossOutput:
        nll = token_nats(model, batch.tokens, batch.labels).sum()
        count = batch.tokens.numel()
        return LossOutput(objective=nll / max(count, 1), nll=nll.detach(), count=count)

    # --- sampling --------------------------------------------------------------------------------

    def sample(self, loaded: Loaded, request: SampleRequest) -> None:
        name = loaded.family.name
        for option, value in (("--seconds", request.seconds), ("--speaker", request.speaker), ("--prompt", request.prompt),
                              ("--spectrogram", request.spectrogram), ("--mel-from", request.mel_from)):
            if value is not None:
                raise OptionError(f"{option} does not apply to the image model '{name}' (it takes -n COUNT and --label)")
        decoding = request.decoding
        if decoding.max_length is not None or decoding.min_length:
            raise OptionError(f"--max-length and --min-length do not apply to the image model '{name}': an image has a fixed size")
        if decoding.nbest != 1:
            raise OptionError(f"--nbest does not apply to the image model '{name}': ask for several images with -n COUNT")
        if request.count < 1:
            raise OptionError(f"--count must be >= 1, got {request.count}")
        _check_png_output(request.output, request.force)
        model, config = loaded.model, loaded.model.config
        strategy = decoding.make_strategy(self.default_strategy)
        seed = getattr(strategy, "seed", None)
        seed = seed if seed is not None else decoding.seed if decoding.seed is not None else secrets.randbits(63)
        labels, label_note = _sample_labels(loaded, request.label, request.count, seed)
        columns = math.ceil(math.sqrt(request.count))
        if decoding.seed is None and (isinstance(strategy, Sample) or labels is not None and request.label is None):
            _note(f"seed {seed} (pass --seed {seed} to repeat this run)")
        if label_note:
            _note(label_note)
        started = time.perf_counter()
        rows = generate(model, strategy, max_length=model.sequence_length, batch_size=request.count, condition=labels,
                        progress=request.progress)
        elapsed = time.perf_counter() - started
        tokens = torch.tensor([row[0].tokens for row in rows])
        pixels = tokens_to_pixels(tokens, _shape(config), config.levels)
        write_grid(request.output, [list(pixels[i : i + columns]) for i in range(0, len(pixels), columns)])
        grid_rows = math.ceil(request.count / columns)
        _note(
            f"generated {request.count} image(s) of {describe_shape(_shape(config))} in {elapsed:.1f} s; "
            f"{'wrote ' + request.output if request.output != '-' else 'PNG on stdout'}: a grid of {grid_rows} x {columns}"
        )

    # --- completion ------------------------------------------------------------------------------

    def complete_image(self, loaded: Loaded, request: CompleteRequest) -> None:
        model, config = loaded.model, loaded.model.config
        shape, count, decoding = _shape(config), request.count, request.decoding
        if count < 1:
            raise OptionError(f"--count must be >= 1, got {count}")
        if decoding.nbest != 1:
            raise OptionError("--nbest does not apply to complete-image: ask for N completions of each image with -n N")
        if decoding.max_length is not None or decoding.min_length:
            raise OptionError("--max-length and --min-length do not apply to complete-image: an image has a fixed size")
        strategy_name = decoding.strategy or self.default_strategy
        if strategy_name == "greedy" and count > 1:
            raise OptionError(f"--strategy greedy makes one completion per image, not {count}: pass -n 1, or use --strategy sample or beam")
        if strategy_name == "beam" and count > decoding.beam_size:
            raise OptionError(f"-n {count} completions with --strategy beam need --beam-size {count} or more (beam search keeps beam-size hypotheses)")
        if not request.images:
            raise OptionError("give the images to complete")
        _check_png_output(request.output, request.force)
        seed = decoding.seed if decoding.seed is not None else int(torch.seed() % (2**63))
        hidden = _mask(request.mask, shape[:2], seed)  # (H, W) bool, True = hidden
        images = load_images(request.images, shape)
        if request.label is not None:
            _check_label(loaded, request.label)
        files = _completion_files(request.output_dir, images, count, request.force)

        channels, T = shape[2], model.sequence_length
        hidden_tokens = torch.from_numpy(np.repeat(hidden.reshape(-1), channels))  # (T,) sub-pixels of hidden pixels
        first_hidden = int(hidden_tokens.nonzero()[0])
        known_after = ~hidden_tokens & (torch.arange(T) > first_hidden)  # (T,) known sub-pixels after the hole
        known_before = ~hidden_tokens & (torch.arange(T) < first_hidden)  # (T,) known sub-pixels before it
        sampling = strategy_name == "sample"
        resampling = sampling and bool(known_after.any())
        candidates = _candidate_classes(loaded, images, request.label)  # per image: class ids, or [None]
        if decoding.seed is None and (sampling or request.mask == "random"):
            _note(f"seed {seed} (pass --seed {seed} to repeat this run)")
        for note in images.notes:
            _note(note)

        values = pixels_to_tokens(images.pixels, config.levels).long() * (~hidden_tokens)  # (N, T), hidden ones zeroed
        completer = Completer(model, decoding, seed, T, ~hidden_tokens, known_before, known_after, config.num_classes,
                               _class_names(loaded), count, request.progress, len(images))
        chosen, reports = [], []
        for index, (name, classes) in enumerate(zip(images.names, candidates, strict=True)):
            if not sampling:
                tokens, report = completer.search(index, values[index], classes, strategy_name)
            elif not resampling:
                tokens, report = completer.exact(index, values[index], classes)
            else:
                tokens, report = completer.resampled(index, values[index], classes)
            chosen.append(tokens)
            reports.append(report)
            if report.line:
                _note(f"{name}: {report.line}")

        grid_rows, completions = [], []
        for original, tokens in zip(images.pixels, chosen, strict=True):
            filled = tokens_to_pixels(tokens, shape, config.levels)  # (count, H, W, C)
            if config.levels != 256:  # the engine kept the known tokens; quantisation lost their low bits
                filled[:, ~hidden] = original[~hidden]
            completions.append(filled)
            grid_rows.append([original, occlude(original, hidden), *filled])
        write_grid(request.output, grid_rows)
        if request.output_dir is not None:
            request.output_dir.mkdir(exist_ok=True)
            for path, pixels in zip(files, (image for filled in completions for image in filled), strict=True):
                write_png(path, pixels)

        _note(_method_note(strategy_name, decoding.beam_size, count, reports))
        where = request.output if request.output != "-" else "PNG on stdout"
        extra = f"; {len(files)} completions in {request.output_dir}" if files else ""
        _note(f"{where}: {len(images)} row(s) of original, occluded input ({int(hidden.sum())} hidden pixels) and {count} completion(s){extra}")

    # --- scoring ---------------------------------------------------------------------------------

    def score(self, loaded: Loaded, request: ScoreRequest) -> None:
        name = loaded.family.name
        if request.src is not None or request.tgt is not None:
            raise OptionError(f"--src and --tgt do not apply to the image model '{name}'")
        if not request.inputs:
            raise OptionError(f"give images to score with '{name}'")
        check_new(request.output, request.force)
        if request.heatmap is not None:
            if str(request.heatmap) == "-":
                raise OptionError("--heatmap -: the scores go to stdout; give the heatmap a file name ending in .png")
            _check_png_output(str(request.heatmap), request.force, "--heatmap")
        model, config = loaded.model, loaded.model.config
        shape = _shape(config)
        images = load_images(request.inputs, shape)
        labels, unlabelled = _score_labels(loaded, images)
        for note in images.notes:
            _note(note)
        if unlabelled:
            _note(
                f"{unlabelled} of {len(images)} images have no class label of this model: scored by p(x) = the mean over its "
                f"{config.num_classes} classes of p(x | class) (a uniform class prior)"
            )
        dims = model.sequence_length
        tokens = pixels_to_tokens(images.pixels, config.levels)
        drawn = min(HEATMAP_IMAGES, len(images)) if request.heatmap is not None else 0
        heat: list[torch.Tensor] = []  # per-sub-pixel nats of the images the heatmap draws
        total = 0.0
        with open_output(request.output) as out, torch.inference_mode():
            for start in range(0, len(images), request.batch_size):
                batch = tokens[start : start + request.batch_size].long().to(loaded.device)
                nats, per_token = _image_nats(model, batch, labels[start : start + request.batch_size], config.num_classes)
                if start < drawn:
                    heat.append(per_token[: drawn - start].cpu())
                    if start + len(batch) >= drawn:  # drawn now: before any reader of stdout can stop the run
                        _heatmap(request.heatmap, images.pixels[:drawn], torch.cat(heat), shape)
                for offset, value in enumerate(nats.tolist()):
                    out.write(f"{images.names[start + offset]}\t{value:.4f}\t{value / dims / LN2:.4f}\n")
                    total += value
        print(
            f"columns: image, nats, bits/dim; {len(images)} images of {describe_shape(shape)} ({dims} dims each): "
            f"{total / (len(images) * dims) / LN2:.4f} bits/dim on average",
            file=sys.stderr,
        )


def _heatmap(path: Path, pixels: np.ndarray, nats: torch.Tensor, shape: tuple[int, int, int]) -> None:
    """Draw the per-pixel surprise of images (n, H, W, C) from their per-sub-pixel nats (n, T)."""
    H, W, C = shape
    bits = (nats.view(len(pixels), H, W, C).sum(-1) / LN2).numpy()  # (n, H, W): a pixel's sub-pixels summed
    top = write_heatmap(path, pixels, bits)
    _note(
        f"wrote {path}: per-pixel surprise (-log2 p, sub-pixels summed) of the first {len(pixels)} image(s), "
        f"black = 0 to pale yellow = {top:.1f} bits"
    )


# -------------------------------------------------------------------------------------------------
# helpers: training


def _fit_config(config: PixelCNNConfig, shape: tuple[int, int, int], classes: list[str]) -> tuple[PixelCNNConfig, str]:
    """The config with the image shape and class count of the data; a value the user --set that
    disagrees with the data is refused. Returns (config, a note when `hidden` was rounded up)."""
    defaults = PixelCNNConfig()
    height, width, channels = shape
    described = {
        "height": f"the images are {describe_shape(shape)}",
        "width": f"the images are {describe_shape(shape)}",
        "channels": f"the images are {describe_shape(shape)}",
        "num_classes": f"the data has {len(classes)} classes" if classes else "the data has no class labels (class sub-folders or an IDX labels file)",
    }
    wanted = {"height": height, "width": width, "channels": channels, "num_classes": len(classes)}
    for key, value in wanted.items():
        given = getattr(config, key)
        if given not in (value, getattr(defaults, key)):
            raise OptionError(f"--set {key}={given}, but {described[key]}: leave {key} out (it is taken from the data)")
    note = ""
    hidden = config.hidden
    if hidden % channels:
        rounded = hidden + channels - hidden % channels
        if hidden != defaults.hidden:
            raise OptionError(f"--set hidden={hidden} is not a multiple of the {channels} colour channels of the images: use hidden={rounded}")
        note = f"hidden={rounded}: the feature maps split into {channels} colour groups (R, G, B), so {hidden} was rounded up"
        hidden = rounded
    return dataclasses.replace(config, hidden=hidden, **wanted), note


def _named_classes(classes: list[str], names: list[str] | None) -> list[str]:
    """The names for people of the classes (--class-names), one per class; [] when none were given."""
    if names is None:
        return []
    if not classes:
        raise OptionError("--class-names: the data has no class labels (class sub-folders or an IDX labels file) to name")
    if len(names) != len(classes):
        raise OptionError(f"--class-names gives {len(names)} names, but the data has {len(classes)} classes ({_listing(classes, len(classes))})")
    return names


def _held_out_labels(held: ImageSet, classes: list[str]) -> list[int] | None:
    """Class ids of held-out images: their own label, else their folder's name when that is a
    training class. None for an unconditional model."""
    if not classes:
        return None
    ids = []
    for label, file in zip(held.labels, held.files, strict=True):
        name = label if label is not None else (file.parent.name if file.parent.name in classes else None)
        if name is None:
            raise DataError(f"held-out image '{file}' has no class label, but the training images do ({_listing(classes, len(classes))})")
        if name not in classes:
            raise DataError(f"held-out image '{file}' is of class '{name}', which the training images do not have ({_listing(classes, len(classes))})")
        ids.append(classes.index(name))
    return ids


def _subset(images: ImageSet, keep: np.ndarray) -> ImageSet:
    where = np.flatnonzero(keep).tolist()
    return ImageSet(images.pixels[keep], [images.names[i] for i in where], [images.files[i] for i in where], [images.labels[i] for i in where])


# -------------------------------------------------------------------------------------------------
# helpers: labels


def _class_keys(loaded: Loaded) -> list[str]:
    """The model's classes as the training data labelled them (sub-folder names, IDX label numbers):
    what an input image's own label is matched against."""
    count = loaded.model.config.num_classes
    keys = [str(key) for key in loaded.checkpoint.data.get("classes") or []]
    return keys[:count] + [str(i) for i in range(len(keys), count)]


def _class_names(loaded: Loaded) -> list[str]:
    """The classes' names for people: the checkpoint's `class_names` (e.g. "ankle boot" for IDX
    label 9) where it has them, else the keys."""
    keys = _class_keys(loaded)
    names = [str(name) for name in loaded.checkpoint.data.get("class_names") or []]
    return [names[i] if i < len(names) and names[i] else key for i, key in enumerate(keys)]


def _check_label(loaded: Loaded, label: int) -> None:
    count = loaded.model.config.num_classes
    if count == 0:
        raise OptionError("--label: this PixelCNN is unconditional (trained without class labels); leave --label out")
    if not 0 <= label < count:
        raise OptionError(f"--label {label} is out of range: this model's classes are {_listing(_class_names(loaded), count)}")


def _sample_labels(loaded: Loaded, label: int | None, count: int, seed: int) -> tuple[torch.Tensor | None, str]:
    """(labels (count,) or None, a note). Without --label a conditional model draws each image's
    class from a uniform prior (seeded: the same --seed draws the same classes)."""
    classes = loaded.model.config.num_classes
    if label is not None:
        _check_label(loaded, label)
        return torch.full((count,), label, dtype=torch.long), ""
    if classes == 0:
        return None, ""
    drawn = torch.randint(classes, (count,), generator=torch.Generator().manual_seed(seed % 2**63))
    names = _class_names(loaded)
    shown = ", ".join(names[c] for c in drawn.tolist()[:LISTED_CLASSES])
    more = f" ... ({count - LISTED_CLASSES} more)" if count > LISTED_CLASSES else ""
    return drawn, (f"no --label: each image's class is drawn from a uniform prior over the {classes} classes; "
                   f"in grid order: {shown}{more} (--label K picks one)")


def _label_of(label: str | None, file: Path, names: list[str]) -> int | None:
    """An image's class id under a model with class `names`: its own label (sub-folder, IDX
    labels) when the model has that class, else its folder's name when that names a class."""
    for name in (label, file.parent.name):
        if name is not None and name in names:
            return names.index(name)
    return None


def _candidate_classes(loaded: Loaded, images: ImageSet, label: int | None) -> list[list[int | None]]:
    """Per image, the classes its completion may be of: [None] for an unconditional model, [--label],
    the image's own class (sub-folder or IDX label the model knows), else every class (inferred)."""
    count = loaded.model.config.num_classes
    if count == 0:
        return [[None] for _ in range(len(images))]
    if label is not None:
        return [[label] for _ in range(len(images))]
    keys = _class_keys(loaded)
    found = [_label_of(own, file, keys) for own, file in zip(images.labels, images.files, strict=True)]
    return [list(range(count)) if f is None else [f] for f in found]


def _score_labels(loaded: Loaded, images: ImageSet) -> tuple[list[int | None], int]:
    """Per image its class id (None: unknown, scored by the mean over classes), and the count of
    unknown ones; all None for an unconditional model."""
    if loaded.model.config.num_classes == 0:
        return [None] * len(images), 0
    keys = _class_keys(loaded)
    ids = [_label_of(own, file, keys) for own, file in zip(images.labels, images.files, strict=True)]
    return ids, sum(i is None for i in ids)


def _image_nats(model: PixelCNN, tokens: torch.Tensor, labels: list[int | None], classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(-log p(image) in nats (B,), per-sub-pixel nats (B, T)). Unknown labels of a conditional
    model: -log mean_y p(image | y); the per-sub-pixel nats are then those of the likeliest class."""
    if classes == 0:
        per_token = token_nats(model, tokens, None).double()
        return per_token.sum(1), per_token
    known = torch.tensor([-1 if label is None else label for label in labels], device=tokens.device)
    per_token = token_nats(model, tokens, known.clamp(min=0)).double()  # (B, T)
    nats = per_token.sum(1)
    unknown = known < 0
    if bool(unknown.any()):
        rows = tokens[unknown]
        each = torch.stack([token_nats(model, rows, torch.full((len(rows),), y, device=tokens.device)).double() for y in range(classes)])  # (K, b, T)
        totals = each.sum(2)  # (K, b)
        nats[unknown] = math.log(classes) - torch.logsumexp(-totals, 0)
        per_token[unknown] = each[totals.argmin(0), torch.arange(len(rows), device=tokens.device)]
    return nats, per_token


# -------------------------------------------------------------------------------------------------
# helpers: completion


def _mask(mask: str, size: tuple[int, int], seed: int) -> np.ndarray:
    """The hidden pixels (H, W) bool of a named mask or a mask PNG (white = hidden)."""
    height, width = size
    rows, columns = np.indices(size)
    if mask == "bottom":
        hidden = rows >= height - height // 2
    elif mask == "top":
        hidden = rows < height // 2
    elif mask == "left":
        hidden = columns < width // 2
    elif mask == "right":
        hidden = columns >= width - width // 2
    elif mask == "center":
        top, left = height // 4, width // 4
        hidden = (rows >= top) & (rows < top + height // 2) & (columns >= left) & (columns < left + width // 2)
    elif mask == "random":
        hidden = (torch.rand(size, generator=torch.Generator().manual_seed(seed)) < 0.5).numpy()
    else:
        hidden = _mask_file(Path(mask), size)
    if not hidden.any():
        raise OptionError(f"--mask {mask} hides no pixel of a {height}x{width} image: nothing to complete")
    if hidden.all():
        raise OptionError(f"--mask {mask} hides every pixel: nothing is left to complete from (use `arcli sample` for new images)")
    return hidden


def _mask_file(path: Path, size: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise OptionError(f"--mask {path}: expected {', '.join(MASKS)}, or a mask PNG file (white = hidden), and there is no such file")
    try:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"))
    except UnidentifiedImageError:
        raise DataError(f"--mask {path}: not an image Pillow can read (a mask is a PNG, white = hidden)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"--mask {path}: cannot read the image: {error}") from None
    if grey.shape != size:
        raise DataError(
            f"mask '{path}' is {grey.shape[0]}x{grey.shape[1]}, but this model's images are {size[0]}x{size[1]}: "
            "draw the mask at the model's size (white = hidden)"
        )
    return grey >= 128


def _completion_files(folder: Path | None, images: ImageSet, count: int, force: bool) -> list[Path]:
    """The files --output-dir gets, NAME-1.png .. NAME-N.png per image, each checked now. NAME is
    the image file's stem, with the index of an image inside an IDX or .npy file, and its folder's
    name in front where two images share a stem (class folders of 0.png, 1.png ...)."""
    if folder is None:
        return []
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"--output-dir '{folder}' is a file, not a folder")
    if not folder.exists() and not folder.parent.is_dir():
        raise OptionError(f"--output-dir '{folder}': folder '{folder.parent}' does not exist")
    stems = []
    for name, file in zip(images.names, images.files, strict=True):
        stem = Path(file.name.removesuffix(".gz")).stem  # shirt.png -> shirt, t10k-images-idx3-ubyte.gz -> t10k-images-idx3-ubyte
        stems.append(stem if name == str(file) else f"{stem}-{name.rsplit(':', 1)[1]}")  # the index-th image of an IDX/.npy file
    shared = {stem for stem, times in Counter(stems).items() if times > 1}
    stems = [f"{file.parent.name}-{stem}" if stem in shared else stem for stem, file in zip(stems, images.files, strict=True)]
    twice = next((stem for stem, times in Counter(stems).items() if times > 1), None)
    if twice is not None:
        raise OptionError(f"two input images would both write '{folder / twice}-1.png': give images with different file names")
    files = [folder / f"{stem}-{k}.png" for stem in stems for k in range(1, count + 1)]
    if folder.is_dir():  # else it is made after generating, and holds nothing yet
        for path in files:
            check_new(path, force)
    return files


@dataclasses.dataclass
class CompletionReport:
    """What one image's completion did: its class posterior and, under resampling, the proposals."""

    line: str = ""  # said on stderr for the image ("" when there is nothing to say)
    posterior: dict[int, float] | None = None  # class -> probability (inferred classes only)
    proposals: int = 0  # proposals drawn (importance resampling)
    ess: float | None = None  # their effective sample size
    rounds: int = 0


class Completer:
    """Completes one image at a time, for a set of candidate classes (one given or every class of
    the model, inferred from the known pixels; [None] for an unconditional model).

    Exact (no known pixel after the first hidden one, e.g. the bottom mask): log p(known | c) is the
    sum of the model's log-probabilities of the known sub-pixels, read from one forward pass per
    class; the class of each completion is drawn from p(c | known) ∝ p(c) p(known | c) (uniform p(c)),
    and the completion from p(hidden | known, c) by sampling with the known pixels forced.

    Importance resampling (known pixels after the hole): proposals are drawn per candidate class
    with the known pixels forced, in rounds of K, K, 2K, 4K ... (the pool doubles); proposal k of class c has the weight
    p(c) p(known before the hole | c) p(known after the hole | proposal, c) / K_c, so the weights of a
    class sum to p(c) times the importance estimate of p(known | c), and the pooled, normalised
    weights are the posterior over (class, completion) pairs. Rounds go on until the effective
    sample size, counted over distinct completions (`distinct_ess`), reaches the number of completions asked for, or MAX_PROPOSALS are drawn; classes whose
    posterior falls under CLASS_FLOOR get no more proposals. Completions are then picked by
    systematic resampling, which repeats a proposal only as often as its weight demands.
    """

    def __init__(self, model, decoding, seed, length, known, known_before, known_after, num_classes, names, count,
                 progress, images):
        self.model, self.decoding, self.seed, self.length = model, decoding, seed, length
        self.known, self.known_before, self.known_after = known, known_before, known_after
        self.num_classes, self.names, self.count = num_classes, names, count
        self.progress, self.images = progress, images
        self.device = next(model.parameters()).device
        self.per_round = max(PROPOSALS_PER_COMPLETION * count, MIN_PROPOSALS)
        self.first_hidden = int((~known).nonzero()[0])
        # Sequential Monte Carlo (resampling at row ends) for plain sampling; with --temperature,
        # --top-k or --top-p the proposals come from the engine's strategy as before.
        self.smc = (decoding.temperature, decoding.top_k, decoding.top_p) == (None, None, None)

    # decoding ----------------------------------------------------------------------------------

    def _generate(self, index: int, values: torch.Tensor, labels: list[int | None], strategy) -> list:
        rows = len(labels)
        condition = None if labels[0] is None else torch.tensor(labels, dtype=torch.long)
        return generate(
            self.model, strategy, max_length=self.length, batch_size=rows, condition=condition, row_offset=0,
            known=Known(values.expand(rows, -1), self.known.expand(rows, -1)), progress=self._progress_of(index),
        )

    def _progress_of(self, index: int):
        if self.progress is None:
            return None
        return lambda done, total: self.progress(index * total + done, self.images * total)

    def _sampler(self, index: int, salt: int, nbest: int):
        seed = (self.seed * 1_000_003 + index * 7_919 + salt) % 2**63  # per image and round: repeatable, independent
        return dataclasses.replace(self.decoding, seed=seed).make_strategy("sample", nbest=nbest)

    @torch.inference_mode()
    def _log_known(self, values: torch.Tensor, labels: list[int | None], where: torch.Tensor) -> torch.Tensor:
        """log p of the sub-pixels in `where` (T,) of one image, per class (C,), from one forward pass:
        exact for sub-pixels that no hidden one precedes."""
        batch = values.expand(len(labels), -1).to(self.device)
        condition = None if labels[0] is None else torch.tensor(labels, device=self.device)
        nats = token_nats(self.model, batch, condition).double()
        return -(nats * where.to(self.device)).sum(1).cpu()

    def _posterior_line(self, classes: list[int], log_joint: torch.Tensor) -> tuple[dict[int, float], str]:
        probs = torch.softmax(log_joint, 0)
        posterior = {c: float(p) for c, p in zip(classes, probs.tolist(), strict=True)}
        ranked = sorted(posterior.items(), key=lambda kv: -kv[1])
        shown = [f"{self.names[c]} {p:.2f}" for i, (c, p) in enumerate(ranked) if i == 0 or (i < 3 and p >= 0.005)]
        return posterior, "class " + ", ".join(shown)

    # the three ways -----------------------------------------------------------------------------

    def search(self, index: int, values: torch.Tensor, classes: list[int | None], strategy_name: str) -> tuple[torch.Tensor, CompletionReport]:
        """Greedy or beam search per candidate class; the best `count` over all classes by
        log p(image, class) (every known sub-pixel counted), so the class is the likeliest one too."""
        nbest = 1 if strategy_name == "greedy" else self.count
        strategy = self.decoding.make_strategy(strategy_name, nbest=nbest)
        rows = self._generate(index, values, classes, strategy)
        prior = -math.log(len(classes))
        pooled = [(h.logprob + prior, c, h.tokens) for c, hyps in zip(classes, rows, strict=True) for h in hyps]
        pooled.sort(key=lambda item: -item[0])
        tokens = torch.tensor([t for _, _, t in pooled[: self.count]])
        line = ""
        if len(classes) > 1:
            line = f"class {self.names[pooled[0][1]]} (the likeliest completion's; no --label)"
        return tokens, CompletionReport(line=line)

    def exact(self, index: int, values: torch.Tensor, classes: list[int | None]) -> tuple[torch.Tensor, CompletionReport]:
        report = CompletionReport()
        labels = classes * self.count
        if len(classes) > 1:
            log_joint = self._log_known(values, classes, self.known) - math.log(len(classes))
            report.posterior, report.line = self._posterior_line(classes, log_joint)
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % 2**63)
            drawn = torch.multinomial(torch.softmax(log_joint, 0), self.count, replacement=True, generator=generator)
            labels = [classes[i] for i in drawn.tolist()]
        rows = self._generate(index, values, labels, self._sampler(index, 0, 1))
        return torch.tensor([hyps[0].tokens for hyps in rows]), report

    def resampled(self, index: int, values: torch.Tensor, classes: list[int | None]) -> tuple[torch.Tensor, CompletionReport]:
        log_before = self._log_known(values, classes, self.known_before)  # (C,) the same for every proposal
        log_prior = -math.log(len(classes))
        drawn = [0] * len(classes)  # proposals per class
        pool_tokens, pool_class, pool_logw = [], [], []  # per proposal: tokens, class slot, log p(known after | it)
        active = list(range(len(classes)))
        rounds, resamplings = 0, 0
        while True:
            size = self.per_round * 2 ** max(0, rounds - 1)  # rounds of K, K, 2K, 4K ...: the pool doubles, in bigger batches
            if self.smc:
                for j in active:
                    generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index * 7_919 + rounds * 101 + j) % 2**63)
                    report = self._progress_of(index)
                    tokens, log_w, resampled = smc_proposals(self.model, values, self.known, self.first_hidden, classes[j], size,
                                                             generator, report)
                    resamplings += resampled
                    pool_tokens.append(tokens)
                    pool_logw.append(log_w)
                    pool_class.append(torch.full((len(tokens),), j))
                    drawn[j] += len(tokens)
            else:
                labels = [classes[j] for j in active]
                rows = self._generate(index, values, labels, self._sampler(index, rounds, size))
                for j, hyps in zip(active, rows, strict=True):
                    tokens = torch.tensor([h.tokens for h in hyps])
                    label = None if classes[j] is None else torch.tensor(classes[j])
                    pool_tokens.append(tokens)
                    pool_logw.append(proposal_log_weights(self.model, tokens, self.known_after, label))
                    pool_class.append(torch.full((len(tokens),), j))
                    drawn[j] += len(tokens)
            rounds += 1
            slots = torch.cat(pool_class)
            counts = torch.tensor(drawn, dtype=torch.float64)
            log_w = torch.cat(pool_logw) + log_before[slots] + log_prior - counts[slots].log()
            weights = torch.softmax(log_w, 0)
            ess = distinct_ess(torch.cat(pool_tokens)[:, ~self.known], weights)
            total = int(counts.sum())
            class_mass = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, slots, weights)
            if ess >= self.count or total >= MAX_PROPOSALS:
                break
            active = [j for j in range(len(classes)) if class_mass[j] >= CLASS_FLOOR] or [int(class_mass.argmax())]
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % 2**63)
        picks = systematic_resample(weights, self.count, generator)
        report = CompletionReport(proposals=total, ess=ess, rounds=rounds)
        parts = []
        if len(classes) > 1:
            report.posterior, class_line = self._posterior_line(classes, class_mass.clamp(min=1e-300).log())
            parts.append(class_line)
        smc = f", {resamplings} row resamplings" if self.smc else ""
        parts.append(f"effective sample size {ess:.1f} of {total} proposals ({rounds} round{'s' if rounds > 1 else ''}{smc})")
        if ess < self.count:
            chosen = torch.cat(pool_tokens)[picks][:, ~self.known]
            repeats = self.count - len(torch.unique(chosen, dim=0))  # by content: resampled particles can be copies
            parts.append(f"below the {self.count} completions asked for at the cap of {MAX_PROPOSALS} proposals: few proposals "
                         f"fit the known pixels after the hole, so {repeats} completion(s) repeat another")
        report.line = "; ".join(parts)
        return torch.cat(pool_tokens)[picks], report


@torch.inference_mode()
def smc_proposals(model: PixelCNN, values: torch.Tensor, known: torch.Tensor, first_hidden: int, label: int | None,
                  particles: int, generator: torch.Generator, progress=None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sequential Monte Carlo proposals for one image: `particles` completions of `values` (T,) with the
    sub-pixels in `known` (T,) forced and the others drawn from the model's conditionals, the
    particles reweighted by each forced sub-pixel after `first_hidden` as it is read (its probability
    under the model), and resampled (systematically) at the end of every image row where their
    effective sample size has fallen under half. A mask whose hidden and known pixels alternate within
    rows (left, right, center, random, most drawn masks) thus keeps the particles that fit the known
    pixels so far, instead of finding out at the end; for the top mask every forced sub-pixel comes
    after the hole, and this is plain importance sampling.

    Returns (tokens (K, T), log-weights (K,), resamplings). The log-weights are each particle's share
    of the run's estimate of p(known after the hole | known before it), times K: exp(log-weights)
    averages to that estimate, and with no resampling they are the particles' likelihoods of the
    forced sub-pixels after the hole, as `proposal_log_weights` reads them.
    """
    device = next(model.parameters()).device
    T, K = len(values), particles
    row = model.config.width * model.config.channels
    condition = None if label is None else torch.full((K,), label, dtype=torch.long, device=device)
    state = model.start(K, condition)
    tokens = torch.zeros(K, T, dtype=torch.long, device=device)
    log_w = torch.zeros(K, dtype=torch.float64, device=device)
    log_z, resamplings, previous = 0.0, 0, None
    known_list, values = known.tolist(), values.to(device)
    for t in range(T):
        logits, state = model.step(state, previous)
        if known_list[t]:
            token = values[t].expand(K)
            if t > first_hidden:
                log_w += torch.log_softmax(logits.double(), -1)[:, values[t]]
        else:
            token = torch.multinomial(torch.softmax(logits.float(), -1).cpu(), 1, generator=generator).squeeze(1).to(device)
        tokens[:, t] = token
        previous = token
        if (t + 1) % row == 0 and t + 1 < T and t > first_hidden:
            weights = torch.softmax(log_w, 0)
            if float(1.0 / (weights**2).sum()) < K / 2:
                log_z += float(torch.logsumexp(log_w, 0)) - math.log(K)
                index = systematic_resample(weights.cpu(), K, generator).to(device)
                state = model.reorder(state, index)
                tokens, log_w = tokens[index], torch.zeros_like(log_w)
                resamplings += 1
        if progress is not None:
            progress(t + 1, T)
    log_z += float(torch.logsumexp(log_w, 0)) - math.log(K)
    return tokens.cpu(), (log_z + torch.log_softmax(log_w, 0) + math.log(K)).cpu(), resamplings


@torch.inference_mode()
def proposal_log_weights(model: PixelCNN, proposals: torch.Tensor, known_after: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
    """Importance log-weights (K,) of one image's completed proposals (K, T): the model's
    log-likelihood of the known sub-pixels after the first hidden one (`known_after`, (T,) bool),
    read from a forward pass over each proposal. label: () class id, or None."""
    device = next(model.parameters()).device
    log_weights = []
    for start in range(0, len(proposals), 64):
        batch = proposals[start : start + 64].to(device)
        labels = None if label is None else label.expand(len(batch)).to(device)
        nats = token_nats(model, batch, labels).double()  # (b, T)
        log_weights.append(-(nats * known_after.to(device)).sum(1).cpu())
    return torch.cat(log_weights)


def resample(log_weights: torch.Tensor, count: int, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Draw `count` indices with replacement in proportion to exp(log_weights) (K,); returns them
    and the effective sample size (sum w)^2 / sum w^2, between 1 and K."""
    weights = torch.softmax(log_weights.double(), 0)
    return torch.multinomial(weights, count, replacement=True, generator=generator), float(1.0 / (weights**2).sum())


def distinct_ess(hidden_tokens: torch.Tensor, weights: torch.Tensor) -> float:
    """The effective sample size (sum w)^2 / sum w^2 of weighted completions, counted over distinct
    completions (`hidden_tokens` (K, H): the hidden sub-pixels of each): proposals that are copies of
    one another (resampling duplicates particles) pool their weight, so K copies count once."""
    _, group = torch.unique(hidden_tokens, dim=0, return_inverse=True)
    pooled = torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add_(0, group, weights.double())
    return float(pooled.sum() ** 2 / (pooled**2).sum())


def systematic_resample(weights: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` indices drawn in proportion to `weights` (K,), normalised, by systematic resampling:
    one uniform u, then the points (u + i) / count through the cumulative weights. Each index is
    picked floor(count w) or ceil(count w) times, so nothing repeats that the weights do not demand
    (multinomial draws repeat heavy proposals far more often), and the draw stays unbiased."""
    cumulative = torch.cumsum(weights.double(), 0)
    cumulative = cumulative / cumulative[-1]
    points = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(count, dtype=torch.float64)) / count
    return torch.searchsorted(cumulative, points, right=True).clamp(max=len(weights) - 1)


def _method_note(strategy_name: str, beam_size: int, count: int, reports: list[CompletionReport]) -> str:
    if strategy_name == "beam":
        return (f"beam search (beam size {beam_size}): the {count} likeliest completions found, ranked by the likelihood "
                "of the whole image, known pixels included")
    if strategy_name == "greedy":
        return "greedy: each hidden sub-pixel takes its likeliest value in raster order, the known ones before it forced"
    ess = [r.ess for r in reports if r.ess is not None]
    if not ess:
        return ("sampling: every known pixel comes before the first hidden one (raster order), so the completions are exact "
                "samples of p(hidden | known)")
    worst = min(range(len(ess)), key=ess.__getitem__)
    proposals = sum(r.proposals for r in reports) / len(reports)
    return (
        f"importance resampling: the mask leaves known pixels after the first hidden one (raster order), which left-to-right "
        f"sampling cannot look ahead to; proposals were drawn with the known pixels forced, in rounds of "
        f"{max(PROPOSALS_PER_COMPLETION * count, MIN_PROPOSALS)} proposals per candidate class, the pool doubling each round "
        f"after the second, until the effective sample size reached {count} (or {MAX_PROPOSALS} proposals), weighted by the "
        f"likelihood of the known pixels after the hole, "
        f"and {count} picked by systematic resampling; {proposals:.0f} proposals per image on average, effective sample size "
        f"{sum(ess) / len(ess):.1f} on average (lowest {ess[worst]:.1f}, image {worst + 1})"
    )


PIXELCNN = ModelFamily(
    name="pixelcnn",
    modality="image",
    summary="Gated PixelCNN: images, 256-way softmax per sub-pixel, class-conditional",
    config_class=PixelCNNConfig,
    model_class=PixelCNN,
    task=ImageTask(),
    default_checkpoint="pixelcnn-fashion.safetensors",
)
