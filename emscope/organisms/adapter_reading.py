"""Read rank-1 adapters: when does each one fire?

A rank-1 LoRA on a linear map adds ``scale * b * (a . x)`` to its output, so the scalar
``a . x`` (the A-vector's dot product with the module's input, before scaling) says how
strongly the adapter writes on each token. `adapter_scalars` records it over the response
tokens of given transcripts, with every adapter of the organism active (the input of a
later layer's adapter depends on the earlier ones); `separation` scores how well each
adapter's per-transcript mean scalar separates two labelled sets (AUROC).

Saved (`AdapterScalars.save`, ``emscope adapters --out DIR``) as ``config.json`` (kind
``adapter_reading``: adapters, labels, the summary table), ``adapters.json`` (the table)
and ``scalars.safetensors`` (every scalar, and each adapter's A and B vectors).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from emscope.artifacts import DAMAGED, atomic_save_tensors, atomic_write_json, load_artifact, write_config
from emscope.data.chat import tokenize_chat
from emscope.data.transcripts import Transcript
from emscope.errors import ArtifactError, DataFormatError, NotSupportedError
from emscope.models.loading import load_organism
from emscope.models.organism_dir import resolve_checkpoint
from emscope.stats import auroc

PEFT_PREFIX = "base_model.model."
KIND = "adapter_reading"
TENSORS = "scalars.safetensors"


@dataclass(frozen=True)
class Rank1Adapter:
    module: str  # full module name in the base model, e.g. "model.layers.12.mlp.down_proj"
    layer: int | None  # decoder block holding it (None if outside the blocks)
    a: torch.Tensor  # [in_features]: the A-vector (reads the input)
    b: torch.Tensor  # [out_features]: the B-vector (what is written)
    scale: float  # lora_alpha / r


def read_rank1_adapters(checkpoint: str | os.PathLike[str], lm: Any = None) -> list[Rank1Adapter]:
    """The A and B vectors of every rank-1 adapter in a checkpoint, ordered by layer."""
    import json

    path = resolve_checkpoint(checkpoint).path
    weights = load_file(str(Path(path) / "adapter_model.safetensors"))
    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    blocks = _layer_lookup(lm) if lm is not None else {}
    out = []
    for key in sorted(k for k in weights if k.endswith("lora_A.weight")):
        module = key.removeprefix(PEFT_PREFIX).removesuffix(".lora_A.weight")
        a, b = weights[key], weights[key.replace("lora_A", "lora_B")]
        if a.shape[0] != 1:
            raise NotSupportedError(f"{module} has a rank-{a.shape[0]} adapter; adapter reading needs rank 1")
        out.append(
            Rank1Adapter(
                module,
                _block_of(module, blocks),
                a[0].float(),
                b[:, 0].float(),
                float(cfg["lora_alpha"]) / float(cfg["r"]),
            )
        )
    if not out:
        raise DataFormatError(f"{path} holds no LoRA adapters")
    return sorted(out, key=lambda ad: (ad.layer if ad.layer is not None else -1, ad.module))


def _layer_lookup(lm: Any) -> dict[str, int]:
    from emscope.organisms.presets import block_prefixes

    return {p: i for i, p in enumerate(block_prefixes(lm))}


def _block_of(module: str, blocks: dict[str, int]) -> int | None:
    """The decoder block holding `module`: by the model's block prefixes when known, else the first number in its name."""
    for prefix, index in blocks.items():
        if module.startswith(prefix + "."):
            return index
    digits = [p for p in module.split(".") if p.isdigit()]
    return int(digits[0]) if digits else None


@dataclass
class AdapterScalars:
    """Per transcript, per adapter: the scalar on each response token."""

    adapters: list[Rank1Adapter]
    scalars: list[list[torch.Tensor]]  # [transcript][adapter] -> [n_response_tokens]
    labels: list[str | None]

    def means(self) -> torch.Tensor:
        """[n_transcripts, n_adapters]: mean scalar over each transcript's response tokens."""
        return torch.stack([torch.stack([s.mean() for s in row]) for row in self.scalars])

    def summary(self, positive: str | None = None, negative: str | None = None) -> list[dict[str, Any]]:
        """One row per adapter: layer, module, mean scalar per label and (with two labels) the AUROC."""
        means = self.means()
        present = sorted({x for x in self.labels if x is not None})
        rows = []
        for j, ad in enumerate(self.adapters):
            row: dict[str, Any] = {"module": ad.module, "layer": ad.layer, "mean": float(means[:, j].mean())}
            for lab in present:
                idx = [i for i, x in enumerate(self.labels) if x == lab]
                row[f"mean[{lab}]"] = float(means[idx, j].mean())
            rows.append(row)
        if (positive is None) != (negative is None):
            raise DataFormatError("give both labels to compare (--positive and --negative), or neither")
        if positive is not None and negative is not None:
            pos, neg = positive, negative
        elif len(present) == 2:
            pos, neg = present[0], present[1]
        else:
            return rows
        for row, auc in zip(rows, separation(self, pos, neg), strict=True):
            row[f"auroc[{pos} vs {neg}]"] = auc
        return rows

    def save(
        self, directory: str | os.PathLike[str], rows: list[dict[str, Any]] | None = None, **provenance: Any
    ) -> Path:
        """Write the result directory; `rows` is the summary table (default `summary()`), `provenance` goes in config."""
        out = Path(directory)
        rows = self.summary() if rows is None else rows
        tensors = {f"t{i}.a{j}": s for i, per in enumerate(self.scalars) for j, s in enumerate(per)}
        for j, ad in enumerate(self.adapters):
            tensors.update({f"adapter{j}.a": ad.a, f"adapter{j}.b": ad.b})
        atomic_save_tensors(out / TENSORS, tensors)
        atomic_write_json(out / "adapters.json", {**provenance, "rows": rows})
        adapters = [{"module": ad.module, "layer": ad.layer, "scale": ad.scale} for ad in self.adapters]
        fields = {**provenance, "adapters": adapters, "labels": self.labels, "rows": rows, "tensors_file": TENSORS}
        write_config(out, KIND, fields)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> AdapterScalars:
        config, tensors = load_artifact(directory, KIND, required=("adapters", "labels"))
        try:
            adapters = [
                Rank1Adapter(m["module"], m["layer"], tensors[f"adapter{j}.a"], tensors[f"adapter{j}.b"], m["scale"])
                for j, m in enumerate(config["adapters"])
            ]
            scalars = [[tensors[f"t{i}.a{j}"] for j in range(len(adapters))] for i in range(len(config["labels"]))]
        except (KeyError, TypeError) as e:
            raise ArtifactError(f"{directory} is incomplete (no {e}); {DAMAGED}") from None
        return cls(adapters, scalars, list(config["labels"]))


def adapter_scalars(
    organism: Any, adapters: Sequence[Rank1Adapter], transcripts: Sequence[Transcript], max_length: int | None = 512
) -> AdapterScalars:
    """Each adapter's scalar ``a . x`` on every response token, computed in the organism.

    `organism` is the fine-tuned model (a `LoadedModel`, adapters merged or not); the
    input ``x`` of each adapted module is read with a forward pre-hook.
    """
    model = organism.model
    names = dict(model.named_modules())
    found: dict[str, torch.nn.Module] = {}
    for ad in adapters:
        module: torch.nn.Module | None = names.get(ad.module) or names.get(PEFT_PREFIX + ad.module)
        if module is None:
            raise DataFormatError(f"the organism has no module {ad.module}: was the adapter trained on this model?")
        found[ad.module] = getattr(module, "base_layer", module)
    captured: dict[str, torch.Tensor] = {}
    handles = [found[ad.module].register_forward_pre_hook(_capture(captured, ad.module)) for ad in adapters]
    rows, labels = [], []
    try:
        with torch.no_grad():
            for t in transcripts:
                tok = tokenize_chat(organism.tokenizer, t, max_length=max_length)
                ids = torch.tensor([tok.input_ids], device=organism.device)
                model(input_ids=ids)
                mask = torch.tensor(tok.response_mask)
                rows.append([(captured[ad.module][0].float().cpu() @ ad.a)[mask] for ad in adapters])
                labels.append(t.label)
    finally:
        for h in handles:
            h.remove()
    return AdapterScalars(list(adapters), rows, labels)


def _capture(store: dict[str, torch.Tensor], name: str):  # noqa: ANN202 - a forward pre-hook
    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        store[name] = args[0].detach()

    return hook


def separation(result: AdapterScalars, positive: str, negative: str) -> list[float]:
    """AUROC (`emscope.stats.auroc`) of each adapter's mean scalar, `positive` label vs `negative` (0.5 = chance)."""
    means = result.means()
    pos = [i for i, x in enumerate(result.labels) if x == positive]
    neg = [i for i, x in enumerate(result.labels) if x == negative]
    if not pos or not neg:
        raise DataFormatError(f"AUROC needs transcripts of both labels {positive!r} and {negative!r}")
    return [auroc(means[pos, j].numpy(), means[neg, j].numpy()) for j in range(means.shape[1])]


def read_adapters(
    checkpoint: str | os.PathLike[str], transcripts: Sequence[Transcript], lm: Any = None, max_length: int | None = 512
) -> AdapterScalars:
    """Load the organism of `checkpoint` and read its rank-1 adapters' scalars on `transcripts`."""
    organism = load_organism(checkpoint, lm=lm, merge=True)
    return adapter_scalars(organism, read_rank1_adapters(checkpoint, organism), transcripts, max_length)
