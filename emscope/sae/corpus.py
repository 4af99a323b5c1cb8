"""The SAE training corpus: a seeded mix of chat transcripts emscope can read without a download.

- the public EM fine-tuning sets (``insecure``, ``secure``, ``educational``, ``jailbroken``
  JSONL files in `em_data`, read where they lie), `per_em_file` transcripts of each, drawn at
  random: code requests and answers, with and without vulnerabilities, and jailbreak chats;
- emscope's labelled corpus (`emscope.directions.contrast.load_corpus`): both answers of
  `corpus_pairs` pairs drawn at random (None: all 612, 0: none), over 12 domains and 3 styles;
- the built-in contrast pairs (both answers).

Base-model SAEs are trained on the base model reading all of it, so that latents exist for
code, for plain chat and for the misaligned register the fine-tunes drift into. Every
transcript records its source in ``meta["sae_source"]``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from emscope.data.transcripts import Transcript, load_transcripts
from emscope.directions.contrast import load_contrast_pairs, load_corpus, reading_route_transcripts
from emscope.errors import DataFormatError

EM_FILES = ("insecure", "secure", "educational", "jailbroken")


def _tagged(transcripts: list[Transcript], source: str) -> list[Transcript]:
    return [Transcript(t.messages, t.label, {**t.meta, "sae_source": source}, t.source) for t in transcripts]


def sae_corpus(
    em_data: str | os.PathLike[str] | None = None,
    per_em_file: int = 150,
    corpus_pairs: int | None = None,
    contrast: bool = True,
    seed: int = 0,
) -> list[Transcript]:
    """The mixed corpus, shuffled with `seed` (see the module docstring); `em_data` None leaves the EM sets out."""
    rng = random.Random(seed)
    out: list[Transcript] = []
    if em_data is not None:
        root = Path(em_data)
        files = [root / f"{name}.jsonl" for name in EM_FILES if (root / f"{name}.jsonl").is_file()]
        if not files:
            raise DataFormatError(f"{root} holds none of {', '.join(f'{n}.jsonl' for n in EM_FILES)}")
        for path in files:
            rows = load_transcripts(path)
            out += _tagged(rng.sample(rows, min(per_em_file, len(rows))), path.stem)
    if corpus_pairs != 0:
        pairs = load_corpus()
        pairs = rng.sample(pairs, min(corpus_pairs, len(pairs))) if corpus_pairs is not None else pairs
        aligned, misaligned = reading_route_transcripts(pairs)
        out += _tagged(aligned + misaligned, "corpus")
    if contrast:
        aligned, misaligned = reading_route_transcripts(load_contrast_pairs())
        out += _tagged(aligned + misaligned, "contrast_pairs")
    if not out:
        raise DataFormatError("the SAE corpus is empty: give em_data, corpus_pairs or contrast")
    rng.shuffle(out)
    return out
