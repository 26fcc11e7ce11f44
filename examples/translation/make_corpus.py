"""Build the English-Spanish Bible corpus for `arcli train transformer` / `rnn-attention`.

Reads the World English Bible (Debian `sword-text-web`) and the Reina-Valera 1909 (Debian
`sword-text-sparv`) with PyPI `pysword`, aligns them verse by verse, and writes plain UTF-8 text,
one verse per line:

    OUT/train.en OUT/train.es   every book not named below (pairs with an odd length ratio dropped)
    OUT/valid.en OUT/valid.es   Jonah, Joel, Titus, Colossians
    OUT/test.en  OUT/test.es    Ruth, Esther, Philippians, James, I John (569 verses, none dropped)
    OUT/corpus.json             sources, versions, counts

    apt-get install sword-text-web sword-text-sparv && pip install pysword
    python examples/translation/make_corpus.py data/bible
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import sys
from pathlib import Path

SWORD_PATH = "/usr/share/sword"
ENGLISH, SPANISH = "engWEB2015eb", "spaRV1909eb"
TEST_BOOKS = ("Ruth", "Esth", "Phil", "Jas", "1John")
VALID_BOOKS = ("Jonah", "Joel", "Titus", "Col")
MAX_RATIO = 2.0  # training pairs whose character lengths differ more than this are dropped

_NOTE = re.compile(r"<note\b.*?</note>", re.DOTALL)
_TITLE = re.compile(r"<title\b.*?</title>", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def osis_to_text(osis: str) -> str:
    """Plain verse text: <note> and <title> elements go first (their words are not the verse's),
    then every other tag; whitespace is collapsed."""
    text = _TITLE.sub(" ", _NOTE.sub(" ", osis))
    text = " ".join(_TAG.sub("", text).split())
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def split_of(book: str) -> str:
    return "test" if book in TEST_BOOKS else "valid" if book in VALID_BOOKS else "train"


def read_pairs():
    """(split, reference, english, spanish) for every verse both Bibles have, in canonical order."""
    from pysword.modules import SwordModules

    modules = SwordModules(SWORD_PATH)
    found = modules.parse_modules()
    missing = [name for name in (ENGLISH, SPANISH) if name not in found]
    if missing:
        raise LookupError(f"Sword modules {missing} not under {SWORD_PATH}: apt-get install sword-text-web sword-text-sparv")
    english, spanish = modules.get_bible_from_module(ENGLISH), modules.get_bible_from_module(SPANISH)
    spanish_books = {book.osis_name: book for books in spanish.get_structure().get_books().values() for book in books}
    versions = {name: found[name].get("version") for name in (ENGLISH, SPANISH)}
    pairs, skipped = [], []
    for testament in ("ot", "nt"):
        for book in english.get_structure().get_books()[testament]:
            if book.osis_name not in spanish_books:  # the WEB's deuterocanonical books
                continue
            en = iter(english.get_iter(books=[book.osis_name], clean=False))
            es = iter(spanish.get_iter(books=[book.osis_name], clean=False))
            for chapter, (en_count, es_count) in enumerate(zip(book.chapter_lengths, spanish_books[book.osis_name].chapter_lengths, strict=True), 1):
                en_verses = [next(en) for _ in range(en_count)]
                es_verses = [next(es) for _ in range(es_count)]
                if en_count != es_count:  # the two versifications differ here: no verse alignment
                    skipped.append(f"{book.osis_name} {chapter}")
                    continue
                for verse, (a, b) in enumerate(zip(en_verses, es_verses, strict=True), start=1):
                    pairs.append((split_of(book.osis_name), f"{book.osis_name} {chapter}:{verse}", osis_to_text(a), osis_to_text(b)))
    return pairs, versions, skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    args = parser.parse_args()
    try:
        pairs, versions, skipped = read_pairs()
    except (ImportError, LookupError) as error:
        print(f"error: {error} (pip install pysword; apt-get install sword-text-web sword-text-sparv)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    counts = {"train": 0, "valid": 0, "test": 0}
    dropped = {"empty": 0, "ratio": 0}
    files = {(split, lang): open(args.out / f"{split}.{lang}", "w", encoding="utf-8") for split in counts for lang in ("en", "es")}
    for split, _, en, es in pairs:
        if not en or not es:
            dropped["empty"] += 1
            continue
        if split == "train" and not (1 / MAX_RATIO <= len(en) / len(es) <= MAX_RATIO):
            dropped["ratio"] += 1
            continue
        files[split, "en"].write(en + "\n")
        files[split, "es"].write(es + "\n")
        counts[split] += 1
    for handle in files.values():
        handle.close()
    description = {
        "sources": {ENGLISH: "World English Bible (Debian sword-text-web)", SPANISH: "Reina-Valera 1909 (Debian sword-text-sparv)"},
        "module_versions": versions,
        "reader": f"pysword {importlib.metadata.version('pysword')}",
        "splits": {"test": TEST_BOOKS, "valid": VALID_BOOKS, "train": "every other book both Bibles have"},
        "verses": counts,
        "dropped": dropped,
        "chapters_skipped_versification_differs": skipped,
        "cleaning": "<note> and <title> elements removed, then all other OSIS tags; whitespace collapsed; "
        f"train pairs with a character-length ratio beyond {MAX_RATIO} dropped",
    }
    (args.out / "corpus.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v} verses" for k, v in counts.items()) + f"; dropped {dropped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
