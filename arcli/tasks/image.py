"""Images: every image family (PixelCNN over 8-bit sub-pixels, FVSBN, NADE and MADE over binary
images) trained on image files, sampled to PNG grids, completed under a mask, and scored in nats and
bits per dimension.

An image is T = H * W * C tokens in raster order, R G B within a pixel; the loss and every score
count all T of them (nats summed over sub-pixels; bits/dim divides by T and ln 2). What the task
needs of a family is the small contract of `arcli/image/contract.py`: the config's shape, levels and
classes, its `describe()` and `fit()`, and, for mixtures over orderings (MADE), `orderings` and
`in_order`. A binary model (2 levels) takes a grey pixel as on where its value is >= 128, and says so.

Completion (which classes, which proposals, how they are weighted and picked) lives in
`arcli/tasks/completion.py`; this module turns its results into grids and files.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from arcli.decoding import Sample, generate
from arcli.errors import DataError, OptionError
from arcli.image import pixels_to_tokens, tokens_to_pixels
from arcli.image.contract import any_order, image_nats, image_shape, mixture_nats, orderings, token_nats, training_ordering
from arcli.image.io import ImageSet, convert_pixels, describe_shape, load_images, occlude, write_grid, write_heatmap, write_png
from arcli.image.masks import known_first_order, mask_pixels
from arcli.models.fvsbn import FVSBN, FVSBNConfig
from arcli.models.made import MADE, MADEConfig
from arcli.models.nade import NADE, NADEConfig
from arcli.models.pixelcnn import PixelCNN, PixelCNNConfig, context  # noqa: F401  (context: re-exported)
from arcli.models.pixelrnn import DiagonalBiLSTMConfig, PixelRNN, RowLSTMConfig
from arcli.outputs import check_new, open_output
from arcli.outputs import note as _note
from arcli.registry import ModelFamily
from arcli.tasks import LN2, CompleteRequest, Loaded, SampleRequest, ScoreRequest, Task, TrainingSetup, TrainRequest
from arcli.tasks.completion import Completer, completion_files, method_note
from arcli.training import LossOutput

HEATMAP_IMAGES = 8  # --heatmap draws the first images scored, at most this many
LISTED = 5  # items named in a note or an error line
LISTED_CLASSES = 16  # images whose drawn class `sample` names


class ImageBatch(NamedTuple):
    tokens: torch.Tensor  # (B, T) sub-pixel values in raster order
    labels: torch.Tensor | None  # (B,) class ids, None for an unconditional model
    ordering: object = None  # a training batch of a model with several orderings: the one it trains (None: the model's own)


class ImageData:
    """Random training images (drawn with the given generator only); fixed held-out slices. For a
    model with several orderings each training batch also draws the ordering it trains
    (`draw_ordering`, the config's `training_ordering`, with the same generator, so a resumed run
    draws the same ones)."""

    def __init__(self, train: torch.Tensor, train_labels: torch.Tensor | None, valid: torch.Tensor, valid_labels: torch.Tensor | None,
                 draw_ordering=None):
        self.train, self.train_labels = train, train_labels  # (N, T) uint8/int32, (N,) long
        self.valid, self.valid_labels = valid, valid_labels
        self.draw_ordering = draw_ordering

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> ImageBatch:
        picks = torch.randint(len(self.train), (batch_size,), generator=generator, device=generator.device).cpu()
        ordering = None if self.draw_ordering is None else self.draw_ordering(generator)
        return ImageBatch(self.train[picks].long(), None if self.train_labels is None else self.train_labels[picks], ordering)

    def valid_batches(self, batch_size: int):
        for start in range(0, len(self.valid), batch_size):
            labels = None if self.valid_labels is None else self.valid_labels[start : start + batch_size]
            yield ImageBatch(self.valid[start : start + batch_size].long(), labels)


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


def _binarised(pixels: np.ndarray, levels: int, what: str) -> str:
    """The note a binary model owes about grey input: how it was turned into bits ("" if it was not grey)."""
    if levels != 2:
        return ""
    grey = int((~np.isin(pixels, (0, 255))).reshape(len(pixels), -1).any(1).sum())
    if not grey:
        return ""
    return (f"{what}: {grey} of {len(pixels)} image(s) have grey levels; binarised for this binary model by a fixed threshold: "
            "a pixel is on where its value is >= 128 (colour is made grey first)")


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
    options = {
        "sample": frozenset({"--count", "--label", "--strategy", "--temperature", "--top-k", "--top-p", "--beam-size", "--length-penalty", "--seed"}),
        "complete-image": frozenset({
            "--count", "--label", "--output-dir", "--strategy", "--temperature", "--top-k", "--top-p", "--beam-size", "--length-penalty", "--seed",
        }),
    }
    option_notes = {
        "--max-length": "an image has a fixed size", "--min-length": "an image has a fixed size",
        "--nbest": "ask for several with -n COUNT (-n N: N images, or N completions of each image)",
    }

    def info(self, family: ModelFamily, model: torch.nn.Module) -> dict[str, str]:
        config = model.config
        levels = "2 per pixel (binary: a Bernoulli per pixel)" if config.levels == 2 else \
            f"{config.levels} per sub-pixel (a {config.levels}-way softmax)"
        return {
            "image": f"{describe_shape(image_shape(config))} ({config.channels} channel{'s' if config.channels > 1 else ''}, "
            f"{config.height * config.width * config.channels} sub-pixels{', R then G then B' if config.channels == 3 else ''})",
            "levels": levels,
            "classes": f"{config.num_classes} (class-conditional)" if config.num_classes else "none (unconditional)",
            **config.describe(),
        }

    # --- training --------------------------------------------------------------------------------

    def prepare_training(self, family: ModelFamily, config, request: TrainRequest) -> TrainingSetup:
        if not 0 < request.valid_fraction < 1:
            raise ValueError(f"valid_fraction must lie in (0, 1), got {request.valid_fraction}")
        data = load_images(request.data)
        classes = _class_list(data.labels, "--data", data.files)
        config, config_notes = config.fit(data.shape, len(classes))
        notes = data.notes + config_notes
        shape = image_shape(config)
        if shape != data.shape:  # a grey-only (binary) model given colour images
            notes.append(f"--data: the {describe_shape(data.shape)} images were made {describe_shape(shape)} (luma) for this model")
            data = dataclasses.replace(data, pixels=convert_pixels(data.pixels, shape))
        notes += [note for note in [_binarised(data.pixels, config.levels, "--data")] if note]
        if request.valid:
            held = load_images(request.valid, shape)
            notes += [note for note in [_binarised(held.pixels, config.levels, "--valid")] if note]
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
            pixels_to_tokens(valid_set.pixels, levels), as_labels(valid_ids), draw_ordering=training_ordering(config),
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
        """Training batches of a model with several orderings train the batch's ordering; held-out
        batches (no ordering) score the mixture over all of them, as `score-likelihood` does."""
        count = batch.tokens.numel()
        if batch.ordering is not None or orderings(model) == 1:
            nll = token_nats(model, batch.tokens, batch.labels, ordering=batch.ordering).sum()
            return LossOutput(objective=nll / max(count, 1), nll=nll.detach(), count=count)
        nll = mixture_nats(model, batch.tokens, batch.labels)[0].sum()
        return LossOutput(objective=(nll / max(count, 1)).float(), nll=nll.detach(), count=count)

    # --- sampling --------------------------------------------------------------------------------

    def sample(self, loaded: Loaded, request: SampleRequest) -> None:
        self.check_options(loaded.family, "sample", request)
        decoding = request.decoding
        _check_png_output(request.output, request.force)
        model, config = loaded.model, loaded.model.config
        strategy = decoding.build(self.default_strategy).strategy
        seed = getattr(strategy, "seed", None)
        seed = seed if seed is not None else decoding.seed if decoding.seed is not None else secrets.randbits(63)
        labels, label_note = _sample_labels(loaded, request.label, request.count, seed)
        columns = math.ceil(math.sqrt(request.count))
        if decoding.seed is None and (isinstance(strategy, Sample) or labels is not None and request.label is None):
            _note(f"seed {seed} (pass --seed {seed} to repeat this run)")
        if label_note:
            _note(label_note)
        started = time.perf_counter()
        if orderings(model) > 1:
            tokens = _sample_mixture(model, strategy, request.count, labels, seed, request.progress)
        else:
            rows = generate(model, strategy, max_length=model.sequence_length, batch_size=request.count, condition=labels,
                            progress=request.progress)
            tokens = torch.tensor([row[0].tokens for row in rows])
        elapsed = time.perf_counter() - started
        pixels = tokens_to_pixels(tokens, image_shape(config), config.levels)
        write_grid(request.output, [list(pixels[i : i + columns]) for i in range(0, len(pixels), columns)])
        grid_rows = math.ceil(request.count / columns)
        _note(
            f"generated {request.count} image(s) of {describe_shape(image_shape(config))} in {elapsed:.1f} s; "
            f"{'wrote ' + request.output if request.output != '-' else 'PNG on stdout'}: a grid of {grid_rows} x {columns}"
        )

    # --- completion ------------------------------------------------------------------------------

    def complete_image(self, loaded: Loaded, request: CompleteRequest) -> None:
        model, config = loaded.model, loaded.model.config
        shape, count, decoding = image_shape(config), request.count, request.decoding
        self.check_options(loaded.family, "complete-image", request)
        strategy_name = decoding.strategy or self.default_strategy
        if strategy_name == "greedy" and count > 1:
            raise OptionError(f"--strategy greedy makes one completion per image, not {count}: pass -n 1, or use --strategy sample or beam")
        if strategy_name == "beam" and count > decoding.beam_size:
            raise OptionError(f"-n {count} completions with --strategy beam need --beam-size {count} or more (beam search keeps beam-size hypotheses)")
        if not request.images:
            raise OptionError("give the images to complete")
        _check_png_output(request.output, request.force)
        seed = decoding.seed if decoding.seed is not None else secrets.randbits(63)
        hidden = mask_pixels(request.mask, shape[:2], seed)  # (H, W) bool, True = hidden
        images = load_images(request.images, shape)
        if request.label is not None:
            _check_label(loaded, request.label)
        files = completion_files(request.output_dir, images, count, request.force)

        channels, T = shape[2], model.sequence_length
        hidden_tokens = torch.from_numpy(np.repeat(hidden.reshape(-1), channels))  # (T,) sub-pixels of hidden pixels
        order = None
        if any_order(model):  # generate in an ordering with every known pixel first: every mask is the exact case
            order = known_first_order(hidden)
            model, hidden_tokens = model.in_order(order), hidden_tokens[order]
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

        values = pixels_to_tokens(images.pixels, config.levels).long()  # (N, T) in raster order
        values = (values if order is None else model.from_raster(values)) * (~hidden_tokens)  # in generation order, hidden ones zeroed
        for note in [_binarised(images.pixels, config.levels, "input")]:
            if note:
                _note(note)
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
            chosen.append(tokens if order is None else model.to_raster(tokens))
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

        _note(method_note(strategy_name, decoding.beam_size, count, reports) if order is None or not sampling
              else _any_order_note(loaded.model, order, int(hidden.sum())))
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
        shape = image_shape(config)
        images = load_images(request.inputs, shape)
        labels, unlabelled = _score_labels(loaded, images)
        for note in images.notes:
            _note(note)
        binarised = _binarised(images.pixels, config.levels, "input")
        if binarised:
            _note(binarised)
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
                nats, per_token = image_nats(model, batch, labels[start : start + request.batch_size], config.num_classes)
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
        raise OptionError(f"--label: this {loaded.family.name} model is unconditional (trained without class labels); leave --label out")
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


def _any_order_note(model: torch.nn.Module, order: torch.Tensor, hidden: int) -> str:
    trained = any(torch.equal(order, model.in_order(k).order) for k in range(orderings(model)))
    where = "one of the orderings it was trained on" if trained else \
        f"an ordering it was not trained on (it was trained on {orderings(model)}; its first ordering's connectivity)"
    return (f"exact completion: {model.config.pixels - hidden} known pixels first (raster order), then the {hidden} hidden ones "
            f"(raster order), {where}; each completion is an exact sample of p(hidden | known) under that ordering's model "
            "(no importance resampling)")


def _group_progress(progress, before: int, size: int, count: int):
    """The progress of `size` images generated together after `before` others, out of `count`."""
    return lambda step, total: progress(before * total + step * size, count * total)


def _sample_mixture(model: torch.nn.Module, strategy, count: int, labels: torch.Tensor | None, seed: int, progress) -> torch.Tensor:
    """`count` images (count, T) in raster order from the uniform mixture of a model's K orderings:
    image i's ordering is drawn from (seed, i), the images of one ordering are generated together
    in it (rows numbered within the ordering, so the first images do not change with -n)."""
    drawn = [int(torch.randint(orderings(model), (), generator=torch.Generator().manual_seed((seed * 1_000_003 + i) % 2**63)))
             for i in range(count)]
    tokens = torch.zeros(count, model.sequence_length, dtype=torch.long)
    done = 0
    for k in sorted(set(drawn)):
        rows = [i for i, d in enumerate(drawn) if d == k]
        view = model.in_order(k)
        condition = None if labels is None else labels[rows]
        report = None if progress is None else _group_progress(progress, done, len(rows), count)
        found = generate(view, strategy, max_length=model.sequence_length, batch_size=len(rows), condition=condition,
                         row_offset=k << 24, progress=report)  # each ordering its own random streams
        tokens[rows] = view.to_raster(torch.tensor([row[0].tokens for row in found]))
        done += len(rows)
    return tokens


PIXELCNN = ModelFamily(
    name="pixelcnn",
    modality="image",
    summary="Gated PixelCNN: images, 256-way softmax per sub-pixel, class-conditional",
    config_class=PixelCNNConfig,
    model_class=PixelCNN,
    task=ImageTask(),
    default_checkpoint="pixelcnn-fashion.safetensors",
)

FVSBN_FAMILY = ModelFamily(
    name="fvsbn",
    modality="image",
    summary="FVSBN: binary images, one logistic regression per pixel (raster order)",
    config_class=FVSBNConfig,
    model_class=FVSBN,
    task=ImageTask(),
    default_checkpoint="fvsbn-fashion-binary.safetensors",
)

NADE_FAMILY = ModelFamily(
    name="nade",
    modality="image",
    summary="NADE: binary images, one shared sigmoid hidden layer, O(H) per pixel",
    config_class=NADEConfig,
    model_class=NADE,
    task=ImageTask(),
    default_checkpoint="nade-fashion-binary.safetensors",
)

MADE_FAMILY = ModelFamily(
    name="made",
    modality="image",
    summary="MADE: binary images, masked autoencoder over K orderings; exact completion for any mask",
    config_class=MADEConfig,
    model_class=MADE,
    task=ImageTask(),
    default_checkpoint="made-fashion-binary.safetensors",
)

PIXELRNN_ROW = ModelFamily(name="pixelrnn-row", modality="image", config_class=RowLSTMConfig, model_class=PixelRNN, task=ImageTask(),
                           summary="PixelRNN Row LSTM: images, row-by-row LSTM layers (triangular context), 256-way softmax",
                           default_checkpoint="pixelrnn-row-fashion.safetensors")
PIXELRNN_DIAGONAL = ModelFamily(name="pixelrnn-diagonal", modality="image", config_class=DiagonalBiLSTMConfig, model_class=PixelRNN,
                                task=ImageTask(), summary="PixelRNN Diagonal BiLSTM: images, diagonal LSTMs both ways (the whole past), 256-way softmax",
                                default_checkpoint="pixelrnn-diagonal-fashion.safetensors")
