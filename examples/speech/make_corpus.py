"""Build a small multi-voice speech corpus with espeak-ng and sox.

    python examples/speech/make_corpus.py OUTDIR [--minutes 10] [--voices en-us en-gb+f3 ...]
                                                 [--seed 0] [--text auto|bible|fortunes]

Each espeak-ng voice (a language voice plus an optional `+variant`) is one speaker. The text is the
World English Bible (Debian `sword-text-web`, read with `pysword`), or Debian `fortunes` when those
are not installed. Every text chunk (a clause-aligned piece of a verse, 4-18 words, a few seconds of
speech) is spoken by one voice with a little per-clip pitch and speed jitter, resampled to 16 kHz
mono 16-bit, with leading/trailing silence trimmed and long pauses shortened.

The train/valid split is by text: a chunk goes to `valid` when the hash of its normalised text
falls in one bucket out of `--valid-every`, so the same sentence can never be in both splits (and
the split does not depend on the seed or on which voices are chosen).

Layout written:

    OUTDIR/train/<speaker>/<n>.wav
    OUTDIR/valid/<speaker>/<n>.wav
    OUTDIR/corpus.json      voices, text source, split rule, counts, durations, transcripts, command

The same command, seed and tool versions give the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
# 4 male and 4 female timbres over five accents; all ship with Debian's espeak-ng (no mbrola).
DEFAULT_VOICES = [
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-us+m3",
    "en-us+f2",
    "en-gb+f3",
    "en-gb-x-rp+f4",
    "en-029+f5",
]
PITCH_RANGE = (42, 58)  # espeak-ng -p (0-99, default 50): small jitter, voices stay recognisable
SPEED_RANGE = (150, 180)  # espeak-ng -s words per minute (default 175)
MIN_WORDS, MAX_WORDS = 4, 18  # at ~165 wpm: roughly 1.5 to 7 seconds per clip

SWORD_PATH = "/usr/share/sword"
SWORD_MODULE = "engWEB2015eb"
FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Prose-like fortune files; art, code and poems make poor read speech.
FORTUNE_FILES = [
    "fortunes",
    "wisdom",
    "literature",
    "people",
    "science",
    "education",
    "work",
    "platitudes",
    "humorists",
    "tao",
    "paradoxum",
    "politics",
    "law",
    "miscellaneous",
]

# sox, to 16 kHz mono 16-bit raw without dither (bit-exact across runs): 2 dB of headroom (the
# resampler overshoots a few loud espeak-ng peaks into clipping), drop the leading silence and
# shorten inner pauses to 0.25 s, drop the trailing silence, pad 50 ms of silence at both ends.
SOX_TO_RAW = shlex.split(f"sox -D -t wav - -t raw -r {SAMPLE_RATE} -c 1 -b 16 -e signed-integer -")
SOX_EFFECTS = shlex.split(
    "gain -2 silence -l 1 0.02 0.3% -1 0.25 0.3% reverse silence 1 0.02 0.3% reverse pad 0.05 0.05"
)


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# text


@dataclass
class TextSource:
    description: dict
    passages: Iterator[tuple[str, str]]  # (reference, plain text), in a seeded order


_NOTE = re.compile(r"<note\b.*?</note>", re.DOTALL)
_TITLE = re.compile(r"<title\b.*?</title>", re.DOTALL)  # section headings, acrostic letters
_TAG = re.compile(r"<[^>]*>")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def osis_to_text(osis: str) -> str:
    """Plain verse text from OSIS markup: footnotes and headings removed, then the other tags."""
    text = _NOTE.sub(" ", osis)  # before the tag strip, or a note's words would join the verse
    text = _TITLE.sub(" ", text)
    text = _TAG.sub("", text)
    text = " ".join(text.split())
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def bible_source(seed: int) -> TextSource:
    """Raises LookupError saying what to install when the Bible text is not available."""
    try:
        from pysword.modules import SwordModules
    except ImportError:
        raise LookupError("pysword is not installed (pip install pysword)") from None
    modules = SwordModules(SWORD_PATH)
    try:
        found = modules.parse_modules()
    except FileNotFoundError:
        found = {}
    if SWORD_MODULE not in found:
        raise LookupError(
            f"Sword module {SWORD_MODULE} not found under {SWORD_PATH} "
            "(apt-get install sword-text-web)"
        )
    bible = modules.get_bible_from_module(SWORD_MODULE)
    books = bible.get_structure().get_books()
    chapters = [
        (book.osis_name, c)
        for testament in ("ot", "nt")
        for book in books[testament]
        for c in range(1, book.num_chapters + 1)
    ]
    random.Random(f"chapters:{seed}").shuffle(chapters)

    def passages() -> Iterator[tuple[str, str]]:
        for book, chapter in chapters:
            verses = bible.get_iter(books=[book], chapters=[chapter], clean=False)
            for number, osis in enumerate(verses, start=1):
                yield f"{book} {chapter}:{number}", osis_to_text(osis)

    info = found[SWORD_MODULE]
    return TextSource(
        description={
            "name": "World English Bible",
            "sword_module": SWORD_MODULE,
            "sword_module_version": info.get("version"),
            "debian_package": "sword-text-web",
            "reader": f"pysword {importlib.metadata.version('pysword')}",
            "license": "public domain",
            "order": "all chapters shuffled with the seed, verses in order; <note> and <title> "
            "elements removed before the other OSIS tags",
        },
        passages=passages(),
    )


def fortune_source(seed: int) -> TextSource | None:
    """None when Debian's fortunes are not installed."""
    files = [FORTUNE_DIR / name for name in FORTUNE_FILES if (FORTUNE_DIR / name).is_file()]
    if not files:
        return None
    fortunes = []
    for path in files:
        for number, block in enumerate(
            path.read_text(encoding="utf-8", errors="replace").split("\n%\n")
        ):
            # attributions ("-- Mark Twain") are not part of the sentence
            lines = [line for line in block.splitlines() if not line.strip().startswith("--")]
            text = " ".join(" ".join(lines).split())
            readable = sum(ch.isalpha() or ch in " ,.;:!?'\"-" for ch in text)
            if text and text.isascii() and readable >= 0.95 * len(text):
                fortunes.append((f"{path.name}#{number}", text))
    random.Random(f"fortunes:{seed}").shuffle(fortunes)
    return TextSource(
        description={
            "name": "fortunes",
            "debian_package": "fortunes",
            "files": [str(path) for path in files],
            "order": "all readable fortunes shuffled with the seed; attributions removed",
        },
        passages=iter(fortunes),
    )


_CLAUSE_END = re.compile(r"(?<=[.!?;:,])\s+")
_SENTENCE_END = (".", "!", "?", ";", ":")


def chunk_text(text: str) -> list[str]:
    """Split a passage at clause boundaries into pieces of MIN_WORDS..MAX_WORDS words."""
    chunks: list[list[str]] = []
    current: list[str] = []
    for clause in _CLAUSE_END.split(text):
        words = clause.split()
        if current and len(current) + len(words) > MAX_WORDS:
            chunks.append(current)
            current = []
        current += words
        # a sentence end after enough words is a natural place for a clip to stop
        if len(current) >= MAX_WORDS // 2 and current[-1].endswith(_SENTENCE_END):
            chunks.append(current)
            current = []
    if current:
        if chunks and len(current) < MIN_WORDS and len(chunks[-1]) + len(current) <= MAX_WORDS + 4:
            chunks[-1] += current
        else:
            chunks.append(current)
    # a clause longer than MAX_WORDS without any punctuation: cut it into equal parts
    pieces = []
    for chunk in chunks:
        parts = -(-len(chunk) // (MAX_WORDS + 4))
        size = -(-len(chunk) // parts)
        pieces += [" ".join(chunk[i : i + size]) for i in range(0, len(chunk), size)]
    return pieces


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def split_of(text: str, valid_every: int) -> str:
    digest = hashlib.sha256(normalise(text).encode()).digest()
    return "valid" if int.from_bytes(digest[:8], "big") % valid_every == 0 else "train"


def chunks_for(
    source_passages: list[tuple[str, str]],
    passages: Iterator[tuple[str, str]],
    split: str,
    valid_every: int,
) -> Iterator[tuple[str, str]]:
    """(reference, chunk) of one split, without repeats. Passages read once are cached in
    `source_passages` so that the two splits walk the same text."""
    seen = set()
    index = 0
    while True:
        if index == len(source_passages):
            next_passage = next(passages, None)
            if next_passage is None:
                return
            source_passages.append(next_passage)
        reference, text = source_passages[index]
        index += 1
        for chunk in chunk_text(text):
            key = normalise(chunk)
            if len(key.split()) < 2 or key in seen or split_of(chunk, valid_every) != split:
                continue
            seen.add(key)
            yield reference, chunk


# --------------------------------------------------------------------------------------------
# speech


@dataclass
class Clip:
    split: str
    index: int
    speaker: str
    voice: str
    reference: str
    text: str
    pitch: int
    speed: int


def speaker_name(voice: str) -> str:
    return voice.replace("+", "_")


def synthesize(clip: Clip) -> np.ndarray:
    """int16 samples at SAMPLE_RATE."""
    espeak = subprocess.run(
        ["espeak-ng", "-v", clip.voice, "-p", str(clip.pitch), "-s", str(clip.speed), "--stdout"],
        input=clip.text.encode(),
        capture_output=True,
        check=False,
    )
    if espeak.returncode != 0 or not espeak.stdout:
        raise RuntimeError(
            f"espeak-ng failed on voice {clip.voice!r}: "
            f"{espeak.stderr.decode(errors='replace').strip()}"
        )
    sox = subprocess.run(
        [*SOX_TO_RAW, *SOX_EFFECTS],
        input=espeak.stdout,
        capture_output=True,
        check=False,
    )
    if sox.returncode != 0:
        raise RuntimeError(f"sox failed: {sox.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(sox.stdout, dtype="<i2")


def make_split(
    outdir: Path,
    split: str,
    chunks: Iterator[tuple[str, str]],
    voices: list[str],
    target_seconds: float,
    seed: int,
    jobs: int,
) -> list[dict]:
    """Synthesize chunks in order, round-robin over voices, until `target_seconds` of speech."""

    def clips() -> Iterator[Clip]:
        for index, (reference, text) in enumerate(chunks):
            voice = voices[index % len(voices)]
            rng = random.Random(f"{seed}:{split}:{index}")  # independent of thread scheduling
            pitch, speed = rng.randint(*PITCH_RANGE), rng.randint(*SPEED_RANGE)
            yield Clip(split, index, speaker_name(voice), voice, reference, text, pitch, speed)

    records: list[dict] = []
    per_speaker: dict[str, int] = {speaker_name(v): 0 for v in voices}
    total = 0.0
    next_report = 0.1
    pending: deque[tuple[Clip, Future]] = deque()
    clip_iter = clips()
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads wait on espeak-ng/sox processes
        while True:
            while len(pending) < 4 * jobs:
                clip = next(clip_iter, None)
                if clip is None:
                    break
                pending.append((clip, pool.submit(synthesize, clip)))
            if not pending:
                log(f"{split}: ran out of text after {total / 60:.1f} minutes")
                break
            clip, future = pending.popleft()
            try:
                samples = future.result()
            except RuntimeError as error:
                fail(str(error))
            if len(samples) < SAMPLE_RATE // 4:  # nothing audible was said
                continue
            number = per_speaker[clip.speaker]
            per_speaker[clip.speaker] += 1
            relative = Path(split) / clip.speaker / f"{number:04d}.wav"
            (outdir / relative).parent.mkdir(parents=True, exist_ok=True)
            sf.write(outdir / relative, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
            seconds = len(samples) / SAMPLE_RATE
            total += seconds
            records.append(
                {
                    "path": relative.as_posix(),
                    "speaker": clip.speaker,
                    "voice": clip.voice,
                    "pitch": clip.pitch,
                    "speed": clip.speed,
                    "seconds": round(seconds, 4),
                    "source": clip.reference,
                    "text": clip.text,
                }
            )
            if total >= next_report * target_seconds:
                log(
                    f"{split}: {total / 60:5.2f} / {target_seconds / 60:.2f} min, "
                    f"{len(records)} clips"
                )
                while next_report * target_seconds <= total:
                    next_report += 0.1
            if total >= target_seconds:
                break
        for _, future in pending:
            future.cancel()
    return records


# --------------------------------------------------------------------------------------------


def tool_version(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip().splitlines()[0]


def check_tools(voices: list[str]) -> None:
    for tool, package in (("espeak-ng", "espeak-ng"), ("sox", "sox")):
        if shutil.which(tool) is None:
            fail(f"{tool} not found; install it with: apt-get install {package}")
    for voice in voices:
        probe = subprocess.run(
            ["espeak-ng", "-v", voice, "--stdout"], input=b"test", capture_output=True, check=False
        )
        if probe.returncode != 0 or len(probe.stdout) <= 44:
            fail(
                f"espeak-ng cannot speak with voice {voice!r} (list voices with: "
                "espeak-ng --voices=en; variants with: espeak-ng --voices=variant)"
            )


def summary(records: list[dict]) -> dict:
    speakers: dict[str, dict] = {}
    for record in records:
        entry = speakers.setdefault(record["speaker"], {"clips": 0, "seconds": 0.0})
        entry["clips"] += 1
        entry["seconds"] += record["seconds"]
    for entry in speakers.values():
        entry["seconds"] = round(entry["seconds"], 2)
    seconds = sum(r["seconds"] for r in records)
    return {
        "clips": len(records),
        "seconds": round(seconds, 2),
        "minutes": round(seconds / 60, 3),
        "speakers": dict(sorted(speakers.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("outdir", type=Path, help="folder to create (train/, valid/, corpus.json)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="minutes of training speech over all speakers (default 10)",
    )
    parser.add_argument(
        "--valid-minutes",
        type=float,
        default=None,
        help="minutes of validation speech (default: --minutes / 10)",
    )
    parser.add_argument(
        "--voices",
        nargs="+",
        default=DEFAULT_VOICES,
        metavar="VOICE",
        help="espeak-ng voices, one speaker each (default: %(default)s)",
    )
    parser.add_argument(
        "--text",
        choices=["auto", "bible", "fortunes"],
        default="auto",
        help="text source; auto: the Bible if pysword and sword-text-web are "
        "installed, else fortunes",
    )
    parser.add_argument(
        "--valid-every",
        type=int,
        default=11,
        help="one text chunk in N (by hash) goes to valid (default 11)",
    )
    parser.add_argument("--seed", type=int, default=0, help="text order, voice jitter (default 0)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="parallel espeak-ng/sox processes (default: number of CPUs)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing corpus (train/, valid/, corpus.json) in OUTDIR",
    )
    args = parser.parse_args()
    valid_minutes = args.minutes / 10 if args.valid_minutes is None else args.valid_minutes
    if args.minutes <= 0 or valid_minutes <= 0:
        fail("--minutes and --valid-minutes must be positive")
    if args.valid_every < 2:
        fail("--valid-every must be at least 2")
    if len({speaker_name(v) for v in args.voices}) != len(args.voices):
        fail("--voices has duplicates")

    check_tools(args.voices)
    source = None
    if args.text in ("auto", "bible"):
        try:
            source = bible_source(args.seed)
        except LookupError as missing:
            if args.text == "bible":
                fail(str(missing))
            log(f"{missing}; using fortunes instead")
    if source is None:
        source = fortune_source(args.seed)
    if source is None:
        fail(
            "no text source: apt-get install sword-text-web && pip install pysword "
            "(or apt-get install fortunes)"
        )

    outdir: Path = args.outdir
    existing = [
        outdir / name for name in ("train", "valid", "corpus.json") if (outdir / name).exists()
    ]
    if existing and not args.overwrite:
        fail(f"'{outdir}' already holds a corpus; pass --overwrite to replace it")
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    outdir.mkdir(parents=True, exist_ok=True)
    log(f"text: {source.description['name']}; voices: {' '.join(args.voices)}; jobs: {args.jobs}")

    started = time.monotonic()
    read_passages: list[tuple[str, str]] = []
    splits = {}
    for split, minutes in (("train", args.minutes), ("valid", valid_minutes)):
        chunks = chunks_for(read_passages, source.passages, split, args.valid_every)
        splits[split] = make_split(
            outdir, split, chunks, args.voices, minutes * 60, args.seed, args.jobs
        )
    elapsed = time.monotonic() - started

    corpus = {
        "description": "multi-voice synthetic English read speech (espeak-ng), for arcli examples",
        "command": shlex.join(["python", *sys.argv]),
        "seed": args.seed,
        "sample_rate": SAMPLE_RATE,
        "format": "WAV, 16-bit signed PCM, mono",
        "tools": {
            "espeak-ng": tool_version(["espeak-ng", "--version"]),
            "sox": tool_version(["sox", "--version"]),
        },
        "text_source": source.description,
        "split": {
            "rule": "a text chunk is in valid when sha256(normalised text) % valid_every == 0",
            "valid_every": args.valid_every,
            "unit": f"clause-aligned chunk of one passage, {MIN_WORDS}-{MAX_WORDS} words",
        },
        "voices": [{"speaker": speaker_name(v), "espeak_voice": v} for v in args.voices],
        "assignment": "chunks go round-robin over the voices; each clip draws espeak-ng pitch "
        f"-p from {list(PITCH_RANGE)} and speed -s (wpm) from {list(SPEED_RANGE)}",
        "processing": shlex.join(["espeak-ng", "--stdout"])
        + " | "
        + shlex.join(SOX_TO_RAW + SOX_EFFECTS),
        "splits": {split: summary(records) for split, records in splits.items()},
        "clips": [record for records in splits.values() for record in records],
    }
    temporary = outdir / "corpus.json.tmp"
    temporary.write_text(json.dumps(corpus, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, outdir / "corpus.json")
    for split, info in corpus["splits"].items():
        log(
            f"{split}: {info['minutes']:.2f} min, {info['clips']} clips, "
            f"{len(info['speakers'])} speakers"
        )
    log(f"wrote {outdir} in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
