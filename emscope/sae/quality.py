"""How good an SAE is: held-out reconstruction, sparsity, dead latents, and next-token loss recovered.

- `reconstruction_metrics(sae, rows)`: on held-out activation rows (those within the SAE's
  `max_norm`): the fraction of variance unexplained, ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``;
  L0, the mean number of non-zero latents per row; the dead fraction, latents that fire on
  no held-out row (and, from training, ``train_dead_fraction``).
- `loss_recovered(lm, sae, transcripts)`: the model's mean next-token cross-entropy on the
  transcripts clean, with the SAE's reconstruction replacing the site's hidden states
  (spliced in with `emscope.activations.sites.hook_site`; tokens outside the SAE's norm
  range pass through), and with those hidden states zero-ablated. The fraction recovered is
  ``(ablated - spliced) / (ablated - clean)``; 1 means the reconstruction loses nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from emscope.activations.capture import load_activations
from emscope.activations.inputs import prepare_inputs
from emscope.activations.sites import Site, hook_site
from emscope.data.transcripts import Transcript, as_transcripts
from emscope.errors import DataFormatError
from emscope.models.loading import LoadedModel
from emscope.sae.model import SparseAutoencoder
from emscope.stats import percentile_interval


@dataclass(frozen=True)
class Reconstruction:
    fvu: float
    l0: float
    dead_fraction: float  # latents that fire on no held-out row
    n_rows: int
    n_rows_over_max_norm: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def reconstruction_metrics(sae: SparseAutoencoder, rows: torch.Tensor, chunk: int = 8192) -> Reconstruction:
    """FVU, L0 and dead fraction of `sae` on activation rows [N, width] (rows above `max_norm` left out)."""
    rows = rows.reshape(-1, rows.shape[-1])
    keep = sae.in_domain(rows)
    x = rows[keep].to(sae.device, sae.dtype)
    if len(x) < 2:
        raise DataFormatError(f"need at least 2 held-out rows within the SAE's norm range, got {len(x)}")
    mean = x.mean(0)
    err = total = l0 = 0.0
    fired = torch.zeros(sae.n_latents, dtype=torch.bool, device=sae.device)
    for a in range(0, len(x), chunk):
        part = x[a : a + chunk]
        values, indices = sae.encode_sparse(part)
        active = values > 0
        fired[indices[active]] = True
        l0 += float(active.sum())
        err += float((part - sae(part)).pow(2).sum())
        total += float((part - mean).pow(2).sum())
    return Reconstruction(
        fvu=err / total,
        l0=l0 / len(x),
        dead_fraction=float((~fired).float().mean()),
        n_rows=len(x),
        n_rows_over_max_norm=int((~keep).sum()),
    )


def heldout_rows(source: str | os.PathLike[str] | torch.Tensor, layer: int) -> torch.Tensor:
    """Rows [N, width] of `layer` in a capture directory (pool="tokens"), or `source` itself when a tensor."""
    if isinstance(source, torch.Tensor):
        return source
    acts = load_activations(source, layers=[layer], dtype="float32")
    return torch.cat(acts.tokens[layer]) if acts.tokens else acts.pooled[layer]


@dataclass(frozen=True)
class LossRecovered:
    clean_loss: float
    spliced_loss: float
    ablated_loss: float
    fraction_recovered: float
    fraction_recovered_ci: tuple[float | None, float | None]  # 95% bootstrap over transcripts
    delta_loss: float  # spliced - clean, nats per token
    n_transcripts: int
    n_tokens: int
    ablation: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _splice(sae: SparseAutoencoder, mode: str):  # noqa: ANN202 - a block hook
    def hook(hidden: torch.Tensor) -> torch.Tensor:
        keep = sae.in_domain(hidden).unsqueeze(-1)
        if mode == "sae":
            new = sae(hidden.to(sae.dtype)).to(hidden.dtype)
        else:
            new = torch.zeros_like(hidden)
        return torch.where(keep, new, hidden)

    return hook


@torch.inference_mode()
def loss_recovered(
    lm: LoadedModel,
    sae: SparseAutoencoder,
    data: str | os.PathLike[str] | Sequence[Transcript | dict[str, Any]],
    max_length: int | None = 256,
    n_boot: int = 1000,
    seed: int = 0,
) -> LossRecovered:
    """Next-token loss recovered when `sae`'s reconstruction replaces its site (see the module docstring)."""
    sae.check_compatible(lm)
    transcripts = as_transcripts(data)
    inputs = prepare_inputs(lm, transcripts, "all", max_length)
    site = Site(sae.site, sae.layer)
    local = sae.to(lm.device)
    per: dict[str, list[torch.Tensor]] = {"clean": [], "sae": [], "zero": []}
    for x in inputs:
        ids = torch.tensor([x.input_ids], device=lm.device)
        if ids.shape[1] < 2:
            continue
        for mode in per:
            handle = hook_site(lm, site, _splice(local, mode)) if mode != "clean" else None
            try:
                logits = lm.model(input_ids=ids, use_cache=False).logits[0, :-1].float()
            finally:
                if handle is not None:
                    handle.remove()
            per[mode].append(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none").cpu())
    if not per["clean"]:
        raise DataFormatError("no transcript has two tokens or more to predict")
    sums = {m: torch.stack([v.sum() for v in vs]).double() for m, vs in per.items()}
    counts = torch.tensor([len(v) for v in per["clean"]], dtype=torch.float64)
    clean, spliced, ablated = (float(sums[m].sum() / counts.sum()) for m in ("clean", "sae", "zero"))
    rng = torch.Generator().manual_seed(seed)
    draw = torch.randint(0, len(counts), (n_boot, len(counts)), generator=rng)
    c, s, z = (sums[m][draw].sum(1) for m in ("clean", "sae", "zero"))
    boot = ((z - s) / (z - c)).numpy()
    ci = percentile_interval(boot)
    return LossRecovered(
        clean_loss=clean,
        spliced_loss=spliced,
        ablated_loss=ablated,
        fraction_recovered=(ablated - spliced) / (ablated - clean),
        fraction_recovered_ci=ci,
        delta_loss=spliced - clean,
        n_transcripts=len(counts),
        n_tokens=int(counts.sum()),
        ablation="zero",
    )
