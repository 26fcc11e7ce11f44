"""A gaussian-head wavenet-vocoder that starts from a trained categorical one's body, for
`arcli train wavenet-vocoder --init` (issue 17's teacher).

    python examples/speech/gaussian_init.py CATEGORICAL.safetensors data/speech30/train -o gaussian-init.safetensors
    arcli train wavenet-vocoder --init gaussian-init.safetensors --data data/speech30/train ...

The two heads share everything between the input and the last 1x1 convolution: the conditioning
network, every residual block and the first head convolution are copied unchanged. What differs:
  - the input: the categorical model embeds mu-law codes (a table of 256 vectors), the gaussian one
    maps the real-valued sample through a 1x1 convolution (w x + b). The copy is the least-squares
    line through the table, each code weighted by how often it occurs in the training clips given;
  - the output: 256 logits against a mean and a log-scale; the gaussian head's last convolution
    starts as a fresh model's (seeded by --seed).
The result is a checkpoint with the categorical one's data description (mu-law removed) and no
training of its own; its provenance says where it came from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from arcli.audio.io import load_audio
from arcli.audio.mulaw import mu_law_decode, mu_law_encode
from arcli.checkpoint import read_checkpoint, save_checkpoint
from arcli.registry import get_family


def code_weights(clips: list[Path], mu: int, sample_rate: int) -> torch.Tensor:
    """How often each of the mu + 1 codes occurs in the clips, normalised (mu + 1,), float64."""
    counts = torch.zeros(mu + 1, dtype=torch.float64)
    for clip in clips:
        codes = mu_law_encode(load_audio(clip, sample_rate), mu).long()
        counts += torch.bincount(codes, minlength=mu + 1).double()
    return counts / counts.sum()


def fit_line(table: torch.Tensor, values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted least squares of each column of table (codes, R) on values (codes,) -> slope (R,), intercept (R,)."""
    design = torch.stack([values, torch.ones_like(values)], 1)  # (codes, 2)
    root = weights.sqrt()[:, None]
    solution = torch.linalg.lstsq(design * root, table.double() * root).solution  # (2, R)
    return solution[0], solution[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("categorical", type=Path, help="a trained wavenet-vocoder checkpoint with the 256-way head")
    parser.add_argument("data", type=Path, help="training clips (a folder of .wav) for the codes' frequencies")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=50, help="clips read for the frequencies (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.output.exists():
        sys.exit(f"gaussian_init: error: '{args.output}' exists; remove it or choose another name")
    family = get_family("wavenet-vocoder")
    source = read_checkpoint(args.categorical, expected_model=family.name)
    if source.config.get("output", "categorical") != "categorical":
        sys.exit(f"gaussian_init: error: '{args.categorical}' already has a {source.config['output']} head")
    config = family.config({**source.config, "output": "gaussian"})
    torch.manual_seed(args.seed)
    net = family.build(config)
    state = net.state_dict()
    copied = [name for name, tensor in source.tensors.items() if name in state and state[name].shape == tensor.shape]
    for name in copied:
        state[name] = source.tensors[name].to(state[name].dtype)
    mu = config.quantization_channels - 1
    clips = sorted(args.data.rglob("*.wav"))[: args.clips]
    if not clips:
        sys.exit(f"gaussian_init: error: no .wav files under '{args.data}'")
    weights = code_weights(clips, mu, config.sample_rate)
    values = mu_law_decode(torch.arange(mu + 1), mu).double()
    slope, intercept = fit_line(source.tensors["embed.weight"], values, weights)
    state["embed.weight"] = slope.to(state["embed.weight"].dtype).reshape(state["embed.weight"].shape)
    state["embed.bias"] = intercept.to(state["embed.bias"].dtype)
    net.load_state_dict(state)
    fresh = sorted(set(state) - set(copied) - {"embed.weight", "embed.bias"})
    save_checkpoint(args.output, family.name, config, net.state_dict(), data={**source.data, "mu": None},
                    training={"init": f"the body of '{args.categorical}' (gaussian_init.py); fresh: {', '.join(fresh)}"})
    print(f"wrote {args.output}: {len(copied)} tensors copied, input line fitted on {len(clips)} clips, fresh: {', '.join(fresh)}")


if __name__ == "__main__":
    main()
