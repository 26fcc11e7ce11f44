"""PixelRNN generation, naive vs incremental, side by side; and the training throughput of the Row
LSTM, the Diagonal BiLSTM and the Gated PixelCNN of the comparison table, in the same run.

    python benchmarks/pixelrnn_generation.py [--row FILE] [--diagonal FILE] [--images 4] [--rows 14] [--threads 1]
        [--data /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz]

Both paths complete the bottom `--rows` rows of test images with the pixels above forced, one token
at a time:
- naive: for every hidden token, the parallel `forward` over the whole image so far;
- incremental: the engine (`arcli.decoding.generate` with `known`) over the model's `step`, which
  keeps each layer's LSTM states per row and runs only the current pixel through the layers.
Without a checkpoint, a model of the table's architecture (hidden 32, 2 layers) with fresh weights
is timed: the cost does not depend on the weights.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from arcli.decoding import Known, generate
from arcli.image import pixels_to_tokens
from arcli.image.io import load_images
from arcli.models.pixelcnn import PixelCNN, PixelCNNConfig
from arcli.models.pixelrnn import DiagonalBiLSTMConfig, PixelRNN, RowLSTMConfig
from arcli.registry import get_family


def naive_completion(model, tokens: torch.Tensor, first_hidden: int, condition) -> torch.Tensor:
    """Sample tokens[first_hidden:] one at a time, recomputing `forward` over the image each time."""
    tokens = tokens.clone()
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for t in range(first_hidden, tokens.shape[1]):
            logits = model(tokens, condition)[:, t]  # (B, V)
            tokens[:, t] = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
    return tokens


def load(name: str, checkpoint: str | None, config) -> torch.nn.Module:
    if checkpoint is None:
        torch.manual_seed(0)
        return PixelRNN(config).eval()
    model, _ = get_family(name).load(checkpoint, torch.device("cpu"))
    return model


def training_throughput(model: torch.nn.Module, batch_size: int, steps: int) -> float:
    """Images per second of forward + backward + AdamW on random 28x28 images (one warm-up step)."""
    optimizer = torch.optim.AdamW(model.parameters())
    tokens = torch.randint(0, 256, (batch_size, model.sequence_length), generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(batch_size, dtype=torch.long) if model.config.num_classes else None
    for k in range(steps + 1):
        if k == 1:
            begin = time.perf_counter()
        loss = F.cross_entropy(model(tokens, labels).transpose(1, 2), tokens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--row", default=None, help="a pixelrnn-row checkpoint (default: fresh weights)")
    parser.add_argument("--diagonal", default=None, help="a pixelrnn-diagonal checkpoint (default: fresh weights)")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rows", type=int, default=14, help="image rows hidden at the bottom (14: the bottom half, as for PixelCNN)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps of 16 images per model")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = {"hidden": 32, "layers": 2}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; completing the bottom {args.rows} rows of {args.images} test images")
    print(f"{'model':<20} {'naive (forward/token)':>22} {'incremental (step)':>19} {'speed-up':>9}")
    for name, checkpoint, config in (("pixelrnn-row", args.row, RowLSTMConfig(**table)),
                                     ("pixelrnn-diagonal", args.diagonal, DiagonalBiLSTMConfig(**table))):
        model = load(name, checkpoint, config)
        c = model.config
        images = load_images([args.data], (c.height, c.width, c.channels))
        tokens = pixels_to_tokens(images.pixels[: args.images], c.levels)  # (B, T)
        batch, length = tokens.shape
        labels = torch.tensor([int(label) for label in images.labels[: args.images]]) if c.num_classes else None
        first_hidden = (c.height - args.rows) * c.width * c.channels
        mask = torch.zeros(batch, length, dtype=torch.bool)
        mask[:, :first_hidden] = True
        begin = time.perf_counter()
        rows = generate(model, "sample", max_length=length, batch_size=batch, condition=labels, known=Known(tokens, mask), seed=0)
        incremental = time.perf_counter() - begin
        assert all(r[0].tokens[:first_hidden] == tokens[i, :first_hidden].tolist() for i, r in enumerate(rows))
        begin = time.perf_counter()
        naive_completion(model, tokens, first_hidden, labels)
        naive = time.perf_counter() - begin
        print(f"{name:<20} {naive:20.2f} s {incremental:17.2f} s {naive / incremental:8.1f}x", flush=True)
    print(f"\ntraining throughput, batch 16 of 28x28 grey 256-level images, {args.train_steps} timed steps each:")
    for name, model in (("pixelrnn-row", PixelRNN(RowLSTMConfig(**table, num_classes=10))),
                        ("pixelrnn-diagonal", PixelRNN(DiagonalBiLSTMConfig(**table, num_classes=10))),
                        ("pixelcnn", PixelCNN(PixelCNNConfig(hidden=32, layers=5, num_classes=10)))):
        parameters = sum(p.numel() for p in model.parameters())
        print(f"{name:<20} {training_throughput(model, 16, args.train_steps):8.1f} images/s  ({parameters:,} parameters)", flush=True)


if __name__ == "__main__":
    main()
