"""`TransferConfig`: the settings of a transfer study (one pair or a matrix), and the data it reads.

One frozen dataclass is the CLI's options and the saved ``config.json`` record. The data: the neutral
transcripts the maps are fitted on (`emscope.transfer.neutral`), the labelled corpus pairs
(`emscope.directions.contrast.load_corpus`, the first `pairs_per_domain` of each domain, every style)
and the prompts behaviour is measured on (the first paraphrase of the first `n_prompts` built-in
``em_core`` questions).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emscope.data.questions import load_questions
from emscope.data.transcripts import Transcript
from emscope.directions.contrast import ContrastPair, corpus_domains, load_corpus
from emscope.errors import ConfigError, lookup
from emscope.transfer.maps import MAP_KINDS
from emscope.transfer.neutral import check_disjoint, neutral_transcripts


@dataclass(frozen=True)
class TransferConfig:
    """Settings of a transfer study; every field is recorded with its results."""

    map_kind: str = "ridge"  # a key of emscope.transfer.maps.MAP_KINDS
    neutral: tuple[str, ...] = ()  # chat JSONL files for the maps (beside the built-in neutral answers)
    n_neutral: int = 300
    pairs_per_domain: int = 10  # corpus pairs per domain (12 domains)
    depth: float = 0.6  # default layer: this fraction of each model's depth
    layers: dict[str, int] = field(default_factory=dict)  # model spec -> layer, overriding `depth`
    max_length: int = 256  # tokens read per transcript (neutral chats are at most 600 characters)
    batch_size: int = 8
    test_frac: float = 0.3  # corpus pairs held out (native direction and detection)
    map_test_frac: float = 0.25  # neutral transcripts held out (map R^2)
    n_random: int = 100  # random directions for geometry (20 of them for detection)
    n_boot: int = 500
    behaviour: bool = True
    behaviour_receivers: tuple[str, ...] | None = None  # None: every receiver
    n_prompts: int = 8
    n_controls: int = 5  # of each kind: random, orthogonal, mapped-random
    alpha_scale: float = 1.0  # steering strength, in units of the receiver's median pooled activation norm
    max_new_tokens: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        lookup(MAP_KINDS, self.map_kind, "map kind")
        if self.n_controls < 5:
            raise ConfigError(f"n_controls must be at least 5 per kind (a verdict needs them), got {self.n_controls}")
        if self.pairs_per_domain < 2:
            raise ConfigError(f"pairs_per_domain must be at least 2, got {self.pairs_per_domain}")
        if self.n_prompts < 2:
            raise ConfigError(f"n_prompts must be at least 2 (CIs over prompts), got {self.n_prompts}")

    def record(self) -> dict[str, Any]:
        return asdict(self)


def corpus_pairs(config: TransferConfig) -> list[ContrastPair]:
    """The first `pairs_per_domain` pairs of every corpus domain (all styles, in file order)."""
    out: list[ContrastPair] = []
    for domain in corpus_domains():
        out.extend(load_corpus(domains=[domain])[: config.pairs_per_domain])
    return out


def study_data(config: TransferConfig) -> tuple[list[Transcript], list[ContrastPair]]:
    """(neutral transcripts, corpus pairs), checked to share no text."""
    pairs = corpus_pairs(config)
    neutral = neutral_transcripts(config.neutral, config.n_neutral, config.seed)
    check_disjoint(neutral, load_corpus())
    return neutral, pairs


def behaviour_prompts(n: int) -> list[str]:
    """The first paraphrase of the first `n` built-in em_core questions."""
    return [q.paraphrases[0] for q in load_questions("builtin:em_core")[:n]]


def slug(spec: str, taken: Sequence[str] = ()) -> str:
    """A file-name-safe short name for a model spec, unique among `taken`."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(spec.rstrip("/")).name or spec).strip("._") or "model"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name
