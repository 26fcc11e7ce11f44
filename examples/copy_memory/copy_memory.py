"""The copy-memory task of Bai et al. 2018 (section 4.4), TCN against LSTM, one budget for both.

Each sequence is 10 symbols drawn from 1..8, then T-1 blanks (0), a delimiter (9), and the same 10
symbols again: length T + 20. Here the models are arcli's language models, trained as such (next
token given the ones before), so the last 10 positions are the recall: to predict them a model must
carry 10 symbols across T steps. The loss, as in the paper, is the cross-entropy over the
T + 20 positions per position, with the first 10 (random by construction, ln 8 each for any model)
left out; blanks and the delimiter are predictable from the position. A model that remembers
nothing but predicts everything else pays ln 8 for each recalled symbol: 10 ln 8 / (T + 20).
(In the paper's tagging form the recall outputs are not fed back in; in this language-model form the
model sees the symbols it has recalled so far, which does not remove the need to carry them.)

    python examples/copy_memory/copy_memory.py data/copy_memory --lengths 50 100 200 500 --steps 600
    # writes OUT/results.json and OUT/copy_memory.png (loss against T, beside the baseline)

One CPU thread; both models about 20k parameters (the paper's copy-memory TCN has 10 channels).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from arcli.models.rnn_lm import RNNLM, RNNLMConfig
from arcli.models.tcn import TCN, TCNConfig

BLANK, DELIMITER, SYMBOLS = 0, 9, 8


def batch(T: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(size, T + 20) sequences: 10 symbols, T - 1 blanks, the delimiter, the 10 symbols."""
    symbols = torch.randint(1, SYMBOLS + 1, (size, 10), generator=generator)
    middle = torch.full((size, T), BLANK)
    middle[:, -1] = DELIMITER
    return torch.cat([symbols, middle, symbols], dim=1)


def losses(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss per the paper's convention: summed NLL of positions 10.. over T + 20 positions, the
    recall accuracy on the last 10 positions), both scalars."""
    logits = model(tokens)  # (B, T+20, V)
    nll = F.cross_entropy(logits[:, 10:].transpose(1, 2), tokens[:, 10:], reduction="none")  # (B, T+10)
    accuracy = (logits[:, -10:].argmax(-1) == tokens[:, -10:]).float().mean()
    return nll.sum(1).mean() / tokens.shape[1], accuracy


def build(kind: str) -> torch.nn.Module:
    if kind == "tcn":  # kernel 8, dilations 1..32: receptive field 1 + 2*7*63 = 883 > 520
        return TCN(TCNConfig(vocab_size=10, eos_id=DELIMITER, channels=16, levels=6, kernel_size=8, dropout=0.0, norm="weight"))
    return RNNLM(RNNLMConfig(vocab_size=10, eos_id=DELIMITER, cell="lstm", embed_dim=8, hidden=64, dropout=0.0))


def train_one(kind: str, T: int, steps: int, batch_size: int, lr: float, seed: int, log) -> dict:
    torch.manual_seed(seed)
    model = build(kind)
    data, held = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(10_000 + T)
    valid = batch(T, 256, held)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    curve, began = [], time.process_time()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:  # 50 warm-up steps, then constant
            group["lr"] = lr * min(1.0, step / 50)
        loss, _ = losses(model, batch(T, batch_size, data))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                held_loss, accuracy = losses(model, valid)
            model.train()
            curve.append({"step": step, "train": loss.item(), "valid": held_loss.item(), "recall_accuracy": accuracy.item()})
            log(f"{kind} T={T} step {step}: train {loss.item():.4f}, held-out {held_loss.item():.4f}, recall {accuracy.item():.3f}")
    return {"model": kind, "T": T, "steps": steps, "batch_size": batch_size, "lr": lr,
            "parameters": sum(p.numel() for p in model.parameters()), "cpu_seconds": round(time.process_time() - began, 1),
            "loss": curve[-1]["valid"], "recall_accuracy": curve[-1]["recall_accuracy"],
            "baseline": 10 * math.log(SYMBOLS) / (T + 20), "curve": curve}


def draw(results: list[dict], path: Path) -> None:
    """Held-out loss against T on log axes, TCN and LSTM beside the memoryless baseline (Pillow)."""
    from PIL import Image, ImageDraw

    width, height, left, right, top, bottom = 720, 460, 80, 150, 40, 60
    image = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(image)
    lengths = sorted({r["T"] for r in results})
    values = [r["loss"] for r in results] + [10 * math.log(SYMBOLS) / (T + 20) for T in lengths]
    low, high = math.floor(math.log10(max(min(values), 1e-6))), math.ceil(math.log10(max(values)))
    high = max(high, low + 1)
    x_of = lambda T: left + (math.log(T) - math.log(lengths[0])) / max(1e-9, math.log(lengths[-1]) - math.log(lengths[0])) * (width - left - right)  # noqa: E731
    y_of = lambda v: top + (high - math.log10(max(v, 10.0**low))) / (high - low) * (height - top - bottom)  # noqa: E731
    pen.rectangle([left, top, width - right, height - bottom], outline="black")
    for e in range(low, high + 1):
        y = y_of(10.0**e)
        pen.line([left - 5, y, left, y], fill="black")
        pen.text((left - 45, y - 6), f"1e{e}", fill="black")
    for T in lengths:
        pen.line([x_of(T), height - bottom, x_of(T), height - bottom + 5], fill="black")
        pen.text((x_of(T) - 10, height - bottom + 10), str(T), fill="black")
    pen.text((width // 2 - 60, height - 25), "T (blank steps)", fill="black")
    pen.text((10, 10), "copy memory: held-out loss per position (log scale)", fill="black")
    series = [("baseline 10 ln8/(T+20)", "gray", [(T, 10 * math.log(SYMBOLS) / (T + 20)) for T in lengths])]
    for kind, colour in (("tcn", "blue"), ("lstm", "red")):
        series.append((kind.upper(), colour, sorted((r["T"], r["loss"]) for r in results if r["model"] == kind)))
    for row, (name, colour, points) in enumerate(series):
        xy = [(x_of(T), y_of(v)) for T, v in points]
        if len(xy) > 1:
            pen.line(xy, fill=colour, width=2)
        for x, y in xy:
            pen.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        pen.line([width - right + 10, top + 20 * row + 6, width - right + 30, top + 20 * row + 6], fill=colour, width=2)
        pen.text((width - right + 35, top + 20 * row), name, fill="black")
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for results.json and copy_memory.png")
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 100, 200, 500])
    parser.add_argument("--models", nargs="+", default=["tcn", "lstm"], choices=["tcn", "lstm"])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 1 or args.batch_size < 1 or any(T < 1 for T in args.lengths):
        print("error: --steps, --batch-size and every length must be >= 1", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []  # runs already done are kept
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    for T in args.lengths:
        for kind in args.models:
            if any(r["model"] == kind and r["T"] == T and r["steps"] == args.steps for r in results):
                continue
            results = [r for r in results if not (r["model"] == kind and r["T"] == T)]
            results.append(train_one(kind, T, args.steps, args.batch_size, args.lr, args.seed, log))
            tmp = results_path.with_name(".results.json.tmp")
            tmp.write_text(json.dumps(results, indent=1))
            tmp.replace(results_path)
    draw(results, args.out / "copy_memory.png")
    print(f"{'T':>5} {'model':>6} {'loss':>9} {'baseline':>9} {'recall':>7} {'cpu s':>7}")
    for r in sorted(results, key=lambda r: (r["T"], r["model"])):
        print(f"{r['T']:>5} {r['model']:>6} {r['loss']:>9.5f} {r['baseline']:>9.5f} {r['recall_accuracy']:>7.3f} {r['cpu_seconds']:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
