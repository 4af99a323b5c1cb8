"""Paired activations: two models reading the same transcripts, pooled per transcript over the response.

Tokenizers differ between families, so rows are paired per transcript, never per token: each model
reads every transcript and its block output at one chosen layer is mean-pooled over the assistant's
response tokens. `ModelSide` holds what one model contributes to a transfer study: its pooled
activations on the neutral transcripts (for maps) and on the labelled contrast corpus (for native
directions and detection). With ``out_dir`` the captures go through `capture_to_disk`, so a killed
study resumes where it stopped and later studies reuse them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from emscope.activations.capture import capture_activations, capture_to_disk, load_activations
from emscope.activations.result import Activations
from emscope.data.transcripts import Transcript, fingerprint
from emscope.directions.contrast import ALIGNED, MISALIGNED, ContrastPair, reading_route_transcripts
from emscope.directions.direction import Direction
from emscope.directions.extract import extract_direction
from emscope.errors import DataFormatError
from emscope.models.loading import LoadedModel
from emscope.transfer.maps import Endpoint

DEFAULT_MAX_LENGTH = 256  # tokens per transcript read: pooled activations need no more, and long chats cost time


def default_layer(lm: LoadedModel, depth: float = 0.6) -> int:
    """The block at fraction `depth` of the model's depth (0.6: where EM directions separate well in small models)."""
    if not 0.0 <= depth <= 1.0:
        raise DataFormatError(f"depth must lie in [0, 1], got {depth}")
    return round(depth * (lm.n_layers - 1))


def _capture(
    lm: LoadedModel,
    transcripts: Sequence[Transcript],
    layer: int,
    out: Path | None,
    max_length: int | None,
    batch_size: int,
    progress: bool,
) -> Activations:
    kw = dict(layers=[layer], pool="mean", batch_size=batch_size, max_length=max_length, progress=progress)
    if out is None:
        return capture_activations(lm, transcripts, **kw)  # type: ignore[arg-type]
    capture_to_disk(lm, transcripts, out, **kw)  # type: ignore[arg-type]
    return load_activations(out, layers=[layer])


def paired_activations(
    source: LoadedModel,
    target: LoadedModel,
    transcripts: Sequence[Transcript],
    source_layer: int,
    target_layer: int,
    *,
    max_length: int | None = DEFAULT_MAX_LENGTH,
    batch_size: int = 8,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [N, D_s], y [N, D_t]): each model's response-mean block output on the same `transcripts`."""
    x = _capture(source, transcripts, source_layer, None, max_length, batch_size, progress)
    y = _capture(target, transcripts, target_layer, None, max_length, batch_size, progress)
    return x.pooled[source_layer], y.pooled[target_layer]


@dataclass
class ModelSide:
    """One model's pooled activations at one layer: neutral transcripts, and the corpus read both ways."""

    endpoint: Endpoint
    neutral: torch.Tensor  # [N, D], row i = neutral transcript i
    pos: torch.Tensor  # [P, D], misaligned answer of corpus pair i
    neg: torch.Tensor  # [P, D], aligned answer of corpus pair i
    neutral_fingerprint: str
    corpus_fingerprint: str

    def native_direction(self, test_frac: float = 0.3, seed: int = 0, n_boot: int = 200) -> Direction:
        """The model's own diff-in-means direction (misaligned minus aligned) on the corpus train split."""
        return extract_direction(
            self.pos,
            self.neg,
            self.endpoint.layer,
            method="diff_in_means",
            test_frac=test_frac,
            seed=seed,
            n_boot=n_boot,
            model=self.endpoint.model,
            model_revision=self.endpoint.revision,
            lineage=self.endpoint.lineage,
            dataset_fingerprint=self.corpus_fingerprint,
            labels=(MISALIGNED, ALIGNED),
        )


def capture_side(
    lm: LoadedModel,
    layer: int,
    neutral: Sequence[Transcript],
    pairs: Sequence[ContrastPair],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    max_length: int | None = DEFAULT_MAX_LENGTH,
    batch_size: int = 8,
    progress: bool = False,
) -> ModelSide:
    """Capture `lm` at `layer` on the neutral transcripts and on both answers of every contrast pair.

    With no `pairs` (a donor whose direction is given) only the neutral transcripts are read.
    """
    root = Path(out_dir) if out_dir is not None else None
    n = _capture(lm, neutral, layer, root / "neutral" if root else None, max_length, batch_size, progress)
    corpus: list[Transcript] = []
    rows = torch.empty(0, lm.width)
    if pairs:
        aligned, misaligned = reading_route_transcripts(list(pairs))
        corpus = [*misaligned, *aligned]
        c = _capture(lm, corpus, layer, root / "corpus" if root else None, max_length, batch_size, progress)
        rows = c.pooled[layer]
    return ModelSide(
        endpoint=Endpoint.of(lm, layer),
        neutral=n.pooled[layer].float(),
        pos=rows[: len(pairs)].float(),
        neg=rows[len(pairs) :].float(),
        neutral_fingerprint=fingerprint(list(neutral)),
        corpus_fingerprint=fingerprint(corpus) if corpus else "",
    )
