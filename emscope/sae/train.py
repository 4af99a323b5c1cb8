"""Train an SAE on captured activations with eai-sparsify's sparse coder, and convert the result.

eai-sparsify (`sparsify`, the ``sae`` extra) trains its TopK (and GroupMax) sparse coders
while it runs the model; emscope's activations are already on disk (`capture_to_disk`,
streamed shuffled by `ActivationStream`). So this module takes the library's pieces as
they are (`SparseCoder` with its fused encoder, AuxK loss and decoder-norm handling, the
`SignSGD` optimizer in a schedule-free wrapper, its learning-rate rule) and writes by hand
only the loop over the stream, step for step the library's own ``Trainer``: decoder bias
set to the data mean before the first step, decoder rows renormalised before each step and
the gradient parallel to them removed, FVU (+ AuxK) loss, latents counted dead after
`dead_after_tokens` tokens without firing. The trained coder becomes a
`SparseAutoencoder`, which needs no library to load or use.

`from_sparsify_dir` reads an SAE that sparsify's own trainer saved (``cfg.json`` +
``sae.safetensors``), also without importing the library.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from emscope.activations.reader import ActivationStream
from emscope.activations.result import KIND as ACTIVATIONS_KIND
from emscope.artifacts import load_tensors, read_config
from emscope.errors import ArtifactError, ConfigError, lookup, require
from emscope.models.lineage import Lineage
from emscope.sae.model import ACTIVATIONS, SparseAutoencoder

log = logging.getLogger(__name__)
LIBRARY = "eai-sparsify"


@dataclass(frozen=True)
class SaeTrainConfig:
    """How to train: architecture (`activation`, `expansion_factor` or `n_latents`, `k`) and optimisation."""

    activation: str = "topk"  # "topk" or "groupmax" (both eai-sparsify architectures)
    expansion_factor: int = 4
    n_latents: int = 0  # 0: width * expansion_factor
    k: int = 32
    epochs: int = 2  # best held-out FVU of 1, 2, 5 on 80k SmolLM2 tokens (docs/sae.md)
    batch_size: int = 512  # tokens per step
    lr: float | None = None  # None: the library's rule, 5e-3 / sqrt(n_latents / 2**14)
    auxk_alpha: float = 1 / 32  # weight of the AuxK loss that revives dead latents
    dead_after_tokens: int = 20_000  # a latent that has not fired for this many tokens counts as dead
    max_norm_factor: float | None = 10.0  # leave out rows above this many times the median norm (sinks)
    buffer_size: int = 2**15
    seed: int = 0

    def __post_init__(self) -> None:
        lookup(ACTIVATIONS, self.activation, "SAE activation")
        if self.k < 1 or self.epochs < 1 or self.batch_size < 2 or self.expansion_factor < 1:
            raise ConfigError(
                f"need k >= 1, epochs >= 1, batch_size >= 2, expansion_factor >= 1; got k={self.k}, "
                f"epochs={self.epochs}, batch_size={self.batch_size}, expansion_factor={self.expansion_factor}"
            )
        if self.max_norm_factor is not None and self.max_norm_factor <= 1:
            raise ConfigError(f"max_norm_factor must be > 1 (or None), got {self.max_norm_factor}")


def library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(LIBRARY)
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Source:
    """Where training rows come from: batches of one layer, and what the capture recorded about them."""

    batches: Any  # a re-iterable of [rows, width] tensors (an ActivationStream or a list)
    n_rows: int
    layer: int
    model: str
    lineage: Lineage | None
    site: str
    fingerprint: str | None


def source_from(
    data: str | os.PathLike[str] | torch.Tensor,
    layer: int | None,
    batch_size: int,
    seed: int = 0,
    buffer_size: int = 2**15,
    model: str | None = None,
) -> Source:
    """A capture directory (streamed shuffled, `layer` required when it holds several) or a tensor [N, width]."""
    if isinstance(data, torch.Tensor):
        if data.ndim != 2 or model is None or layer is None:
            raise ConfigError("a tensor of training rows must be 2-D [N, width], with model= and layer= given")
        gen = torch.Generator().manual_seed(seed)
        rows = data

        class _Shuffled:
            def __init__(self) -> None:
                self.epoch = 0

            def set_epoch(self, epoch: int) -> None:
                self.epoch = epoch

            def __iter__(self) -> Iterator[torch.Tensor]:
                order = torch.randperm(len(rows), generator=gen)
                for a in range(0, len(rows), batch_size):
                    yield rows[order[a : a + batch_size]]

        return Source(_Shuffled(), len(data), layer, model, None, "resid_post", None)
    config = read_config(data, ACTIVATIONS_KIND)
    layers = config["layers"]
    if layer is None:
        if len(layers) != 1:
            raise ConfigError(f"{data} holds layers {layers}: choose one with layer= (--layer)")
        layer = layers[0]
    if config.get("pool") != "tokens":
        raise ConfigError(
            f"{data} holds pooled activations (pool={config.get('pool')!r}): an SAE trains on tokens; capture with "
            "pool='tokens' (--pool tokens)"
        )
    stream = ActivationStream(
        data, layer, batch_size=batch_size, buffer_size=max(buffer_size, batch_size), seed=seed, dtype="float32"
    )
    lineage = config.get("model_lineage")
    return Source(
        stream,
        stream.n_rows,
        layer,
        config["model"],
        Lineage.from_dict(lineage) if lineage else None,
        config.get("site", "resid_post"),
        config.get("dataset_fingerprint"),
    )


def _keep(x: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    return x if max_norm is None else x[x.norm(dim=-1) <= max_norm]


def train_sae(
    data: str | os.PathLike[str] | torch.Tensor,
    layer: int | None = None,
    config: SaeTrainConfig | None = None,
    *,
    model: str | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> SparseAutoencoder:
    """Train an SAE with eai-sparsify on a capture directory (pool="tokens") or on rows [N, width].

    The result records the model, lineage, layer and site from the capture, the library and its
    version, the settings and training statistics (``training``); measure its quality with
    `emscope.sae.quality`.
    """
    require("sparsify", extra="sae", pip_name=LIBRARY)
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD
    from tqdm.auto import tqdm

    cfg = config or SaeTrainConfig()
    src = source_from(data, layer, cfg.batch_size, cfg.seed, cfg.buffer_size, model)
    torch.manual_seed(cfg.seed)
    first = next(iter(src.batches), None)
    if first is None or len(first) < 2:
        raise ConfigError(f"{data} holds too few rows to train an SAE")
    width = int(first.shape[-1])
    max_norm = None
    if cfg.max_norm_factor is not None:
        max_norm = float(first.float().norm(dim=-1).median()) * cfg.max_norm_factor
    coder = SparseCoder(
        width,
        SparseCoderConfig(
            activation=cfg.activation, expansion_factor=cfg.expansion_factor, num_latents=cfg.n_latents, k=cfg.k
        ),
        device=device,
        dtype=torch.float32,
    )
    n = coder.num_latents
    if cfg.activation == "groupmax" and n % cfg.k:
        raise ConfigError(f"groupmax needs n_latents ({n}) divisible by k ({cfg.k})")
    with torch.no_grad():
        coder.b_dec.data = _keep(first.float(), max_norm).mean(0).to(device)
    lr = cfg.lr or 5e-3 / math.sqrt(n / 2**14)  # the library's rule for its default optimizer
    opt = ScheduleFreeWrapper(SignSGD([{"params": coder.parameters(), "lr": lr}]), momentum=0.95)
    opt.train()
    since_fired = torch.zeros(n, dtype=torch.long, device=device)
    steps = seen = dropped = 0
    fvus: list[float] = []
    t0 = time.perf_counter()
    with tqdm(total=src.n_rows * cfg.epochs, desc="sae train", unit="tok", disable=not progress) as bar:
        for epoch in range(cfg.epochs):
            src.batches.set_epoch(epoch)
            for batch in src.batches:
                x = batch.to(device, torch.float32)
                bar.update(len(x))
                x = _keep(x, max_norm)
                dropped += len(batch) - len(x)
                if len(x) < 2:
                    continue
                coder.set_decoder_norm_to_unit_norm()
                dead = since_fired > cfg.dead_after_tokens if cfg.auxk_alpha > 0 else None
                out = coder(x, dead_mask=dead)
                loss = out.fvu + cfg.auxk_alpha * out.auxk_loss
                loss.backward()
                coder.remove_gradient_parallel_to_decoder_directions()
                opt.step()
                opt.zero_grad()
                with torch.no_grad():
                    fired = torch.zeros(n, dtype=torch.bool, device=device)
                    fired[out.latent_indices.flatten()] = True
                    since_fired += len(x)
                    since_fired[fired] = 0
                steps += 1
                seen += len(x)
                fvus.append(float(out.fvu.detach()))
                bar.set_postfix(fvu=f"{fvus[-1]:.3f}", refresh=False)
    opt.eval()  # schedule-free: the averaged weights are the trained ones
    seconds = time.perf_counter() - t0
    training = {
        **asdict(cfg),
        "lr": lr,
        "steps": steps,
        "tokens_seen": seen,
        "rows": src.n_rows,
        "rows_dropped_over_max_norm": dropped,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(seen / max(seconds, 1e-9), 1),
        "final_train_fvu": float(sum(fvus[-10:]) / max(1, len(fvus[-10:]))),
        "train_dead_fraction": float((since_fired > cfg.dead_after_tokens).float().mean()),
        "optimizer": "sparsify SignSGD + ScheduleFreeWrapper(momentum=0.95)",
        "data": str(data) if not isinstance(data, torch.Tensor) else "tensor",
        "dataset_fingerprint": src.fingerprint,
    }
    return from_sparsify(
        coder,
        layer=src.layer,
        model=src.model,
        lineage=src.lineage,
        site=src.site,
        max_norm=max_norm,
        training=training,
    )


def from_sparsify(coder: Any, *, layer: int, model: str, **fields: Any) -> SparseAutoencoder:
    """A `SparseAutoencoder` from an eai-sparsify `SparseCoder` (autoencoder, no skip connection)."""
    if getattr(coder.cfg, "transcode", False) or getattr(coder, "W_skip", None) is not None:
        raise ConfigError("only plain sparse autoencoders convert (no transcoder, no skip connection)")
    return SparseAutoencoder(
        W_enc=coder.encoder.weight.detach().float().cpu().clone(),
        b_enc=coder.encoder.bias.detach().float().cpu().clone(),
        W_dec=coder.W_dec.detach().float().cpu().clone(),
        b_dec=coder.b_dec.detach().float().cpu().clone(),
        k=int(coder.cfg.k),
        activation=str(coder.cfg.activation),
        layer=layer,
        model=model,
        library=fields.pop("library", LIBRARY),
        library_version=fields.pop("library_version", library_version()),
        **fields,
    )


def from_sparsify_dir(path: str | os.PathLike[str], *, layer: int, model: str, **fields: Any) -> SparseAutoencoder:
    """Read an SAE that eai-sparsify saved (``cfg.json`` + ``sae.safetensors``) without importing the library."""
    path = Path(path)
    try:
        cfg = json.loads((path / "cfg.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} is not an eai-sparsify SAE directory (cfg.json: {e})") from None
    if cfg.get("transcode") or cfg.get("skip_connection"):
        raise ConfigError(f"{path}: only plain sparse autoencoders convert (no transcoder, no skip connection)")
    t = load_tensors(path / "sae.safetensors")
    return SparseAutoencoder(
        W_enc=t["encoder.weight"].float(),
        b_enc=t["encoder.bias"].float(),
        W_dec=t["W_dec"].float(),
        b_dec=t["b_dec"].float(),
        k=int(cfg["k"]),
        activation=cfg.get("activation", "topk"),
        layer=layer,
        model=model,
        library=fields.pop("library", LIBRARY),
        library_version=fields.pop("library_version", library_version()),
        **fields,
    )
