"""One call from transcripts to a measured SAE: capture, train, measure, save (what `emscope sae train` runs).

Layout of `out`:

- ``activations/``, ``heldout-activations/``: the token activations of the training and
  held-out transcripts (`capture_to_disk`, bfloat16, resumable);
- ``heldout.jsonl``: the held-out transcripts (the last `heldout_fraction` of the data);
- ``sae/``: the `SparseAutoencoder` with its held-out quality in ``metrics``.

A killed run resumes its captures; training starts again (it takes minutes, not hours, at the
sizes emscope trains on a CPU).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from emscope.activations.capture import capture_to_disk
from emscope.data.transcripts import Transcript, write_transcripts
from emscope.errors import ConfigError
from emscope.models.architecture import resolve_layers
from emscope.models.loading import LoadedModel
from emscope.sae.model import SparseAutoencoder
from emscope.sae.quality import heldout_rows, loss_recovered, reconstruction_metrics
from emscope.sae.train import SaeTrainConfig, train_sae

log = logging.getLogger(__name__)


def build_sae(
    lm: LoadedModel,
    transcripts: Sequence[Transcript],
    out: str | os.PathLike[str],
    layer: int,
    config: SaeTrainConfig | None = None,
    heldout_fraction: float = 0.05,
    loss_transcripts: int = 12,
    max_length: int | None = 256,
    progress: bool = True,
) -> SparseAutoencoder:
    """Capture `transcripts` at `layer` of `lm`, train an SAE, measure it on held-out transcripts, save ``out/sae``."""
    if not 0 < heldout_fraction < 1:
        raise ConfigError(f"heldout_fraction must lie strictly between 0 and 1, got {heldout_fraction}")
    layer = resolve_layers(layer, lm.n_layers)[0]
    n_held = max(1, round(len(transcripts) * heldout_fraction))
    if len(transcripts) - n_held < 1:
        raise ConfigError(f"{len(transcripts)} transcripts leave none to train on after holding out {n_held}")
    train, held = list(transcripts[:-n_held]), list(transcripts[-n_held:])
    out = Path(out)
    write_transcripts(out / "heldout.jsonl", held)
    common = dict(layers=[layer], pool="tokens", token_selection="all", max_length=max_length, dtype="bfloat16")
    capture_to_disk(lm, held, out / "heldout-activations", progress=progress, **common)  # type: ignore[arg-type]
    capture_to_disk(lm, train, out / "activations", progress=progress, **common)  # type: ignore[arg-type]
    sae = train_sae(out / "activations", layer, config, progress=progress, device=lm.device)
    quality = reconstruction_metrics(sae, heldout_rows(out / "heldout-activations", layer).float())
    loss = loss_recovered(lm, sae, held[:loss_transcripts], max_length=max_length)
    sae = replace(sae, metrics={"heldout": quality.to_dict(), "loss": loss.to_dict()})
    sae.save(out / "sae")
    log.info("saved %s: %s; %s", out / "sae", quality, loss)
    return sae
