"""The likelihood table of binarised Fashion-MNIST: test NLL in nats per image of the trained models
beside two baselines measured on the same bits.

    python examples/binary/table.py data/binary data/binary/models [--json table.json]

Models (any that exist in MODELS_DIR, as examples/binary/train_table.sh names them): fvsbn, nade,
made-1 (MADE trained on raster order only), made-32 (MADE trained on 32 orderings, scored as their
mixture, log of the mean probability, and under its first ordering alone), made-32-agnostic (a new
ordering per batch, 32 stored ones scored), pixelcnn-levels2, pixelrnn-row-levels2,
pixelrnn-diagonal-levels2.
Baselines: independent Bernoulli per pixel (each pixel's frequency in train.npy, add-one smoothed),
and real compressors of the packed test bits (xz -9e of all 10,000 images at once; one 1-bit PNG of
all of them stacked): their compressed size in nats per image.
"""

import argparse
import io
import json
import lzma
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from arcli.image.contract import image_nats, token_nats
from arcli.registry import get_family

MODELS = [  # (file stem, family, label)
    ("fvsbn", "fvsbn", "FVSBN"),
    ("nade", "nade", "NADE"),
    ("made-1", "made", "MADE, 1 ordering"),
    ("made-32", "made", "MADE, 32 orderings: mixture (log of the mean probability)"),
    ("made-32-agnostic", "made", "MADE, order-agnostic training, 32 stored orderings: mixture"),
    ("pixelcnn-levels2", "pixelcnn", "Gated PixelCNN, levels=2"),
    ("pixelrnn-row-levels2", "pixelrnn-row", "PixelRNN Row LSTM, levels=2"),
    ("pixelrnn-diagonal-levels2", "pixelrnn-diagonal", "PixelRNN Diagonal BiLSTM, levels=2"),
]



def nats_of(model, tokens: torch.Tensor, ordering: int | None = None) -> float:
    """Mean -log p(image) over the images (rows of tokens), in nats."""
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(tokens), 500):
            batch = tokens[start : start + 500]
            if ordering is None:
                total += float(image_nats(model, batch, [None] * len(batch), 0)[0].sum())
            else:
                total += float(token_nats(model, batch, None, ordering=ordering).double().sum())
    return total / len(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the folder make_data.py wrote")
    parser.add_argument("models", type=Path, help="the folder train_table.sh wrote")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    test = np.load(args.data / "test.npy")  # (N, 28, 28) 0/1
    train = np.load(args.data / "train.npy")
    N, D = len(test), test[0].size
    tokens = torch.from_numpy(test.reshape(N, D)).long()
    rows = []

    p = (train.reshape(len(train), D).sum(0) + 1.0) / (len(train) + 2.0)  # add-one smoothed frequency of each pixel
    bits = test.reshape(N, D)
    bernoulli = -(bits * np.log(p) + (1 - bits) * np.log1p(-p)).sum(1).mean()
    rows.append(("independent Bernoulli per pixel (baseline)", float(bernoulli), "-"))
    packed = np.packbits(bits, axis=1).tobytes()
    xz = len(lzma.compress(packed, preset=9 | lzma.PRESET_EXTREME))
    rows.append(("xz -9e of the packed bits (baseline)", xz * 8 * math.log(2) / N, "-"))
    buffer = io.BytesIO()
    Image.fromarray(test.reshape(N * 28, 28).astype(bool)).save(buffer, format="PNG", optimize=True)  # mode "1"
    rows.append(("PNG, 1 bit per pixel, all images stacked (baseline)", len(buffer.getvalue()) * 8 * math.log(2) / N, "-"))

    for stem, family_name, label in MODELS:
        path = args.models / f"{stem}.safetensors"
        if not path.exists():
            continue
        model, stored = get_family(family_name).load(path, torch.device("cpu"))
        params = sum(p.numel() for p in model.parameters())
        started = time.perf_counter()
        rows.append((label, nats_of(model, tokens), f"{params:,}"))
        if family_name == "made" and model.orderings > 1:
            rows.append((f"{label.split(':')[0]}: the first (raster) ordering alone", nats_of(model, tokens, ordering=0), f"{params:,}"))
        print(f"{stem}: {time.perf_counter() - started:.0f} s to score; trained {stored.training.get('wall_seconds')} s", flush=True)

    print(f"\ntest NLL, nats per image ({N} images of {D} pixels; bits/dim = nats / {D} / ln 2)\n")
    print("| model | test NLL (nats/image) | bits/dim | parameters |")
    print("|---|---|---|---|")
    for label, nats, params in rows:
        print(f"| {label} | {nats:.2f} | {nats / D / math.log(2):.4f} | {params} |")
    if args.json:
        args.json.write_text(json.dumps([{"model": label, "nats": nats, "params": params} for label, nats, params in rows], indent=1))


if __name__ == "__main__":
    main()
