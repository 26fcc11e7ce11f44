"""Pack a speech corpus into one small file of 8-bit mu-law codes, and unpack it back into WAVs.

    python examples/speech/pack_codes.py pack data/speech30 speech30.codes.xz
    python examples/speech/pack_codes.py unpack speech30.codes.xz data/speech30

For moving a corpus to a machine that cannot build it (no espeak-ng, a size limit on what travels):
a 16-bit corpus of 30 minutes is 61 MB of WAV; its mu-law codes, xz-compressed, about a third of that.
`unpack` writes every clip as 16-bit WAV at the mu-law bin centres, so `arcli train wavenet` reads
back exactly the codes that were packed (mu-law encoding of a bin centre gives its bin; checked on
every clip by `unpack --check`, a quick self-test that encodes again after writing).

The layout (split/speaker/name.wav) is kept, with any `name.json` beside a clip (the phoneme
timing of examples/speech/make_tts_corpus.py) and the corpus.json at the top; the archive is an xz
stream of a JSON header line (paths, lengths, rates, those JSON files) followed by the concatenated codes.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import wave
from pathlib import Path

import numpy as np
import torch

from arcli.audio.io import find_audio_files, load_audio
from arcli.audio.mulaw import mu_law_decode, mu_law_encode

MU = 255


def pack(corpus: Path, archive: Path, sample_rate: int) -> None:
    found = sorted(path for path, _ in find_audio_files([corpus]))
    if not found:
        sys.exit(f"pack: no audio files under '{corpus}'")
    clips, chunks = [], []
    for path in found:
        codes = mu_law_encode(load_audio(path, sample_rate), MU).to(torch.uint8).numpy()
        clip = {"path": str(path.relative_to(corpus)), "samples": int(codes.size)}
        if path.with_suffix(".json").is_file():
            clip["sidecar"] = path.with_suffix(".json").read_text(encoding="utf-8")
        clips.append(clip)
        chunks.append(codes)
    header = {"sample_rate": sample_rate, "mu": MU, "clips": clips}
    if (corpus / "corpus.json").is_file():
        header["corpus"] = (corpus / "corpus.json").read_text(encoding="utf-8")
    with lzma.open(archive, "wb", preset=6) as f:
        f.write((json.dumps(header) + "\n").encode())
        f.write(np.concatenate(chunks).tobytes())
    total = sum(c["samples"] for c in clips)
    print(f"packed {len(clips)} clips, {total / sample_rate / 60:.2f} min, into {archive} ({archive.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


def unpack(archive: Path, corpus: Path, check: bool) -> None:
    with lzma.open(archive, "rb") as f:
        header = json.loads(f.readline())
        codes = np.frombuffer(f.read(), dtype=np.uint8)
    rate, mu, offset = header["sample_rate"], header["mu"], 0
    for clip in header["clips"]:
        piece = torch.from_numpy(codes[offset : offset + clip["samples"]].astype(np.int64))
        offset += clip["samples"]
        pcm = (mu_law_decode(piece, mu) * 32767.0).round().clamp(-32768, 32767).to(torch.int16).numpy()
        path = corpus / clip["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
        if "sidecar" in clip:
            path.with_suffix(".json").write_text(clip["sidecar"], encoding="utf-8")
        if check and not torch.equal(mu_law_encode(load_audio(path, rate), mu), piece):
            sys.exit(f"unpack: '{path}' does not read back as the packed codes")
    if "corpus" in header:
        (corpus / "corpus.json").write_text(header["corpus"], encoding="utf-8")
    if offset != codes.size:
        sys.exit(f"unpack: the archive holds {codes.size} codes, its header {offset}")
    print(f"unpacked {len(header['clips'])} clips, {offset / rate / 60:.2f} min, into {corpus}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="corpus folder -> archive")
    p.add_argument("corpus", type=Path)
    p.add_argument("archive", type=Path)
    p.add_argument("--sample-rate", type=int, default=16000)
    u = sub.add_parser("unpack", help="archive -> corpus folder of WAVs")
    u.add_argument("archive", type=Path)
    u.add_argument("corpus", type=Path)
    u.add_argument("--check", action="store_true", help="read every written clip back and compare its codes")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.corpus, args.archive, args.sample_rate)
    else:
        unpack(args.archive, args.corpus, args.check)


if __name__ == "__main__":
    main()
