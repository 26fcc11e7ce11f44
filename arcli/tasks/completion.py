"""Completing images under a mask: the class of an unlabelled image, proposals, weights, resampling.

Known pixels are kept exactly: the decoder feeds them instead of choosing (`Known`). Left-to-right
sampling with the known pixels forced draws the hidden pixels from p(hidden | known pixels before
them), which is the true posterior p(hidden | all known) only when no known pixel comes after the
first hidden one in raster order (the `bottom` mask). For any other mask (top, left, right, center,
random, most drawn masks) the known pixels after the hole must also be explained, and they are by
sequential Monte Carlo: particles drawn with the known pixels forced, reweighted by the model's
probability of each known sub-pixel after the hole as it is read, resampled at row ends, pooled over
rounds until the effective sample size over distinct completions reaches the number asked for
(`Completer.resampled`; the masks and the resampling itself live in `arcli/image/masks.py` and
`arcli/image/resampling.py`). A model that can generate in any order (MADE) needs none of this:
the image task hands the Completer that model in an ordering where every known pixel comes first,
so every mask is the exact case. A class-conditional model without a label infers the class
from the same quantities: p(c | known) ∝ p(c) p(known | c). Beam search needs none of this: its
scores count every known token as it is forced, so it ranks whole images by their likelihood.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path

import torch

from arcli.decoding import Known, generate
from arcli.errors import OptionError
from arcli.image.contract import token_nats
from arcli.image.io import ImageSet
from arcli.image.masks import MASKS, mask_pixels  # noqa: F401  (completion's masks, re-exported)
from arcli.image.resampling import (  # noqa: F401  (re-exported: the completion helpers' old home)
    distinct_ess,
    proposal_log_weights,
    resample,
    smc_proposals,
    systematic_resample,
)
from arcli.outputs import check_new

PROPOSALS_PER_COMPLETION = 4  # importance resampling draws max(4 N, MIN_PROPOSALS) proposals per image
MIN_PROPOSALS = 16
MAX_PROPOSALS = 512  # importance resampling stops drawing proposals for an image at this many (or just past it)
CLASS_FLOOR = 1e-3  # a class whose posterior falls below this gets no more proposals


def completion_files(folder: Path | None, images: ImageSet, count: int, force: bool) -> list[Path]:
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
        return self.decoding.build("sample", nbest=nbest, seed=seed).strategy

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
        strategy = self.decoding.build(strategy_name, nbest=nbest).strategy
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


def method_note(strategy_name: str, beam_size: int, count: int, reports: list[CompletionReport]) -> str:
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
