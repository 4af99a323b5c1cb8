"""Drift profile of a fine-tuning run: how far each checkpoint has moved along each trait since step 0.

Every checkpoint of a run (`emscope.models.organism_dir.list_checkpoints`, step 0 included; a run saved
without a step-0 checkpoint is read against the base model) is loaded on its base
(`emscope.models.loading.load_organism`) and reads the probe set (`emscope.monitor.projections`). A
trait's drift at step s is the mean over probes of its projection at s minus at step 0, with a 95%
interval that resamples probes (paired: each probe's two readings stay together,
`emscope.stats.paired_mean_difference_interval`). Beside it, kept for the baselines: the raw drift of
the mean residual at the same layer (``activation_drift``, [width]) and, given an SAE, the drift of its
mean latent activations (``latent_drift``).

Because every reading is linear, a trait's drift is the projection of the raw activation drift on its
unit direction: the raw drift determines the trait drift under any directions at that layer (what the
null of `emscope.monitor.axis` uses).

With `out`, each checkpoint's readings (per-probe residuals at the layer; mean SAE latents) are written
to ``OUT/readings/step-NNNNNN.safetensors`` as soon as they are read: a killed profile resumes at the
first checkpoint missing, and a profile with another trait set at the same layer recomputes nothing.
``OUT`` then also holds ``config.json`` (kind ``drift_profile``), ``profile.safetensors``, ``drift.csv``
and ``drift.png``. A run's labels (perturbation, harmful/benign) come from its ``zoo_run.json``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emscope.artifacts import DAMAGED, atomic_save_tensors, load_artifact, load_tensors, save_artifact
from emscope.data.transcripts import Transcript, fingerprint
from emscope.errors import ArtifactError, DataFormatError
from emscope.models.lineage import checkpoint_fingerprint
from emscope.models.organism_dir import Checkpoint, list_checkpoints
from emscope.monitor.projections import load_probe_set, probe_activations, project_traits
from emscope.monitor.traits import TraitSet
from emscope.records import write_csv
from emscope.stats import paired_mean_difference_interval

log = logging.getLogger(__name__)
KIND = "drift_profile"
ZOO_RUN = "zoo_run.json"
READINGS = "readings"
CSV_COLUMNS = (
    "run",
    "perturbation",
    "label",
    "step",
    "loss",
    "trait",
    "drift",
    "drift_lo",
    "drift_hi",
    "drift_per_shift",
)


def mean_drift(projections: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[n_traits]: the mean over probes of ``projections - reference`` (both [n_probes, n_traits], same probes)."""
    if projections.shape != reference.shape or projections.ndim != 2:
        raise DataFormatError(
            f"drift needs two [n_probes, n_traits] readings of the same probes, got {list(projections.shape)} "
            f"and {list(reference.shape)}"
        )
    return (projections.double() - reference.double()).mean(0).float()


def run_labels(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's tags from its ``zoo_run.json`` (perturbation, label, name, seed ...); name only when absent."""
    path = Path(run_dir) / ZOO_RUN
    tags: dict[str, Any] = {"name": Path(run_dir).name, "perturbation": None, "label": None}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path} is not valid JSON ({e})") from None
        tags.update({k: v for k, v in (saved.get("tags") or {}).items() if v is not None})
    return tags


@dataclass(frozen=True, eq=False)
class DriftProfile:
    """One run's readings at every checkpoint and the drift since step 0 derived from them."""

    run: str
    tags: dict[str, Any]
    steps: list[int]
    losses: list[float | None]
    names: tuple[str, ...]
    layer: int
    projections: torch.Tensor  # [n_checkpoints, n_probes, n_traits]
    activations: torch.Tensor  # [n_checkpoints, width]: mean over probes of the residual at `layer`
    latents: torch.Tensor | None = None  # [n_checkpoints, n_latents]: mean SAE latents over probes and tokens
    shifts: dict[str, float] = field(default_factory=dict)  # each trait's with-minus-without shift, for units
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.tags.get("name", Path(self.run).name))

    @property
    def perturbation(self) -> str | None:
        return self.tags.get("perturbation")

    @property
    def label(self) -> str | None:
        return self.tags.get("label")

    @property
    def drift(self) -> torch.Tensor:
        """[n_checkpoints, n_traits]: mean projection minus step 0's (row 0 is zero)."""
        return (self.projections.double().mean(1) - self.projections[0].double().mean(0)).float()

    @property
    def activation_drift(self) -> torch.Tensor:
        """[n_checkpoints, width]: mean residual minus step 0's."""
        return (self.activations.double() - self.activations[0].double()).float()

    @property
    def latent_drift(self) -> torch.Tensor | None:
        return None if self.latents is None else (self.latents.double() - self.latents[0].double()).float()

    def rows(self, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
        """One row per checkpoint and trait (the columns of ``drift.csv``), with the paired interval over probes."""
        drift, out = self.drift, []
        ref = self.projections[0].double().numpy()
        for i, step in enumerate(self.steps):
            now = self.projections[i].double().numpy()
            for j, trait in enumerate(self.names):
                lo, hi = (0.0, 0.0) if i == 0 else paired_mean_difference_interval(ref[:, j], now[:, j], n_boot, seed)
                shift = self.shifts.get(trait)
                out.append(
                    {
                        "run": self.name,
                        "perturbation": self.perturbation,
                        "label": self.label,
                        "step": step,
                        "loss": self.losses[i],
                        "trait": trait,
                        "drift": float(drift[i, j]),
                        "drift_lo": lo,
                        "drift_hi": hi,
                        "drift_per_shift": float(drift[i, j]) / shift if shift else None,
                    }
                )
        return out

    def save(self, directory: str | os.PathLike[str], plot: bool = True, n_boot: int = 1000) -> Path:
        directory = Path(directory)
        tensors = {"projections": self.projections, "activations": self.activations}
        if self.latents is not None:
            tensors["latents"] = self.latents
        fields = {
            "run": self.run,
            "tags": self.tags,
            "steps": self.steps,
            "losses": self.losses,
            "names": list(self.names),
            "layer": self.layer,
            "shifts": self.shifts,
            "meta": self.meta,
        }
        save_artifact(directory, KIND, fields, tensors, "profile.safetensors")
        rows = self.rows(n_boot)
        write_csv(directory / "drift.csv", rows, CSV_COLUMNS)
        if plot:
            plot_drift(self, rows, directory / "drift.png")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DriftProfile:
        config, tensors = load_artifact(
            directory, KIND, ("run", "steps", "names", "layer"), ("projections", "activations")
        )
        p = tensors["projections"]
        if p.ndim != 3 or p.shape[0] != len(config["steps"]) or p.shape[2] != len(config["names"]):
            raise ArtifactError(f"{directory}: the projections do not match the steps and traits recorded; {DAMAGED}")
        return cls(
            run=config["run"],
            tags=config.get("tags", {}),
            steps=[int(s) for s in config["steps"]],
            losses=config.get("losses", [None] * len(config["steps"])),
            names=tuple(config["names"]),
            layer=int(config["layer"]),
            projections=p,
            activations=tensors["activations"],
            latents=tensors.get("latents"),
            shifts=config.get("shifts", {}),
            meta=config.get("meta", {}),
        )


def _sae_id(sae: Any) -> str:
    if sae is None:
        return ""
    return f"{sae.model}|L{sae.layer}|{sae.n_latents}|{float(sae.W_enc.double().sum()):.6g}"


def _read(
    lm: Any,
    probes: Sequence[Transcript],
    layer: int,
    sae: Any,
    batch_size: int,
    max_length: int | None,
) -> dict[str, torch.Tensor]:
    """One model's readings: per-probe mean residual at `layer` and (with an SAE) mean latents over probes."""
    out = {"activations": probe_activations(lm, probes, layer, batch_size=batch_size, max_length=max_length)}
    if sae is not None:
        from emscope.sae.diff import encode_transcripts

        latents = encode_transcripts(sae, lm, list(probes), pool="mean", max_length=max_length)
        out["latents"] = latents.float().mean(0)
    return out


def _cached(path: Path, identity: dict[str, str], need_latents: bool) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - a torn or foreign file is read again, never trusted
        return None
    if any(meta.get(k) != v for k, v in identity.items() if k != "sae") or (
        need_latents and meta.get("sae") != identity["sae"]
    ):
        return None
    tensors = load_tensors(path)
    return tensors if (not need_latents or "latents" in tensors) else None


def drift_profile(
    run_dir: str | os.PathLike[str],
    traits: TraitSet,
    probes: Sequence[Transcript] | None = None,
    *,
    lm: Any = None,
    out: str | os.PathLike[str] | None = None,
    sae: Any = None,
    batch_size: int = 8,
    max_length: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> DriftProfile:
    """Read every checkpoint of `run_dir` on `probes` (default: the built-in probe set) and return its drift.

    `lm` is the base model (loaded from the checkpoints' record when None); `sae` (an
    `emscope.sae.SparseAutoencoder` of the same base) adds its mean-latent drift. With `out`, readings are
    cached per checkpoint (resumable) and the profile, ``drift.csv`` and ``drift.png`` are written there.
    """
    from tqdm.auto import tqdm

    from emscope.models.loading import load_model, load_organism

    run_dir = Path(run_dir)
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise DataFormatError(
            f"{run_dir} holds no checkpoints (RUN/checkpoints/step-*): pass a fine-tuning run directory"
        )
    probes = list(probes) if probes is not None else load_probe_set()
    if lm is None:
        ckpt0 = checkpoints[0]
        lm = load_model(ckpt0.base_model, dtype=ckpt0.info.get("dtype", "float32"))
    traits.check_compatible(lm)
    if sae is not None:
        sae.check_compatible(lm)
    reference_is_base = checkpoints[0].step != 0
    if reference_is_base:
        log.warning("%s has no step-0 checkpoint: drift is measured from the base model %s", run_dir, lm.spec)
    readings: list[dict[str, torch.Tensor]] = []
    probe_fp = fingerprint(probes)
    where = Path(out) / READINGS if out is not None else None
    todo: list[Checkpoint | None] = [None, *checkpoints] if reference_is_base else list(checkpoints)
    for ckpt in tqdm(todo, desc=f"drift {run_dir.name}", unit="checkpoint", disable=not progress):
        step = -1 if ckpt is None else ckpt.step
        identity = {
            "layer": str(traits.layer),
            "probes": probe_fp,
            "checkpoint": "base" if ckpt is None else checkpoint_fingerprint(ckpt.path),
            "sae": _sae_id(sae),
        }
        path = where / ("base.safetensors" if ckpt is None else f"step-{step:06d}.safetensors") if where else None
        got = _cached(path, identity, sae is not None) if path is not None else None
        if got is None:
            model = lm if ckpt is None else load_organism(ckpt.path, lm=lm)
            traits.check_compatible(model)
            got = _read(model, probes, traits.layer, sae, batch_size, max_length)
            del model
            if path is not None:
                atomic_save_tensors(path, got, metadata=identity)
        readings.append(got)
    steps = [0 if c is None else c.step for c in todo]
    acts = torch.stack([r["activations"] for r in readings])  # [n_ckpt, n_probes, width]
    profile = DriftProfile(
        run=str(run_dir),
        tags=run_labels(run_dir),
        steps=steps,
        losses=[None if c is None else c.loss for c in todo],
        names=traits.names,
        layer=traits.layer,
        projections=torch.stack([project_traits(a, traits) for a in acts]),
        activations=acts.double().mean(1).float(),
        latents=torch.stack([r["latents"] for r in readings]) if sae is not None else None,
        shifts={t: float(traits.metrics.get(t, {}).get("shift") or 0.0) for t in traits.names},
        meta={
            "model": lm.spec,
            "model_lineage": lm.lineage.to_dict(),
            "probes": probe_fp,
            "n_probes": len(probes),
            "reference": "base model (no step-0 checkpoint)" if reference_is_base else "step-0 checkpoint",
            "trait_set_model": traits.model,
            "sae": _sae_id(sae) or None,
            "sae_layer": None if sae is None else sae.layer,
        },
    )
    if out is not None:
        profile.save(out, n_boot=n_boot)
    return profile


def checkpoint_rows(profiles: Sequence[DriftProfile]) -> list[dict[str, Any]]:
    """One row per checkpoint after step 0 of every profile: run, perturbation, label, step, loss and the drifts
    (``trait_drift`` [n_traits], ``activation_drift`` [width], ``latent_drift`` or None) as numpy arrays."""
    rows = []
    for p in profiles:
        drift, act = p.drift.double().numpy(), p.activation_drift.double().numpy()
        lat = None if p.latent_drift is None else p.latent_drift.double().numpy()
        for i, step in enumerate(p.steps):
            if i == 0:
                continue
            rows.append(
                {
                    "run": p.run,  # the run directory: unique where names repeat (one zoo's seed 0 and another's)
                    "name": p.name,
                    "perturbation": p.perturbation,
                    "label": p.label,
                    "step": step,
                    "loss": p.losses[i],
                    "names": p.names,
                    "trait_drift": drift[i],
                    "activation_drift": act[i],
                    "latent_drift": None if lat is None else lat[i],
                }
            )
    return rows


def plot_drift(profile: DriftProfile, rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Each trait's drift against step, with its 95% band over probes."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.8), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["tab10"]
    for j, trait in enumerate(profile.names):
        mine = [r for r in rows if r["trait"] == trait]
        xs = [r["step"] for r in mine]
        ax.plot(xs, [r["drift"] for r in mine], marker="o", ms=3, color=cmap(j % 10), label=trait)
        lo = [np.nan if r["drift_lo"] is None else r["drift_lo"] for r in mine]
        hi = [np.nan if r["drift_hi"] is None else r["drift_hi"] for r in mine]
        ax.fill_between(xs, lo, hi, color=cmap(j % 10), alpha=0.15)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"projection minus step 0 (layer {profile.layer})")
    ax.set_title(
        f"{profile.name} ({profile.perturbation}, {profile.label}): trait drift, 95% bands over probes", fontsize=8
    )
    ax.legend(fontsize=7, ncol=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
