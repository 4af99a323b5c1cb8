"""Trait-space drift monitor (issue 14): where a fine-tune moves a model along alignment-relevant traits.

- `traits`: `TraitSet` (one reading-route direction per trait, held-out AUROC, lexical baseline, cosines),
  `fit_traits`, `load_trait_pairs`;
- `projections`: `load_probe_set`, `trait_projections` (the one function that reads a model for the monitor);
- `drift`: `drift_profile` (every checkpoint of a run minus step 0, with intervals over the probes);
- `axis`: PCA of drift over runs and checkpoints, against a null from random directions;
- `detector`, `baselines`: `DriftDetector` and its leave-one-perturbation-type-out evaluation beside baselines;
- `live`, `callback`: `TraitMonitor` (the live monitor; a step hook for `finetune`) and `MonitorCallback`
  (the same as a `transformers.TrainerCallback`, for the HF Trainer and TRL).

Submodules are imported on use: ``import emscope.monitor`` loads nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emscope.monitor.callback import MonitorCallback
    from emscope.monitor.detector import DriftDetector, evaluate_detector
    from emscope.monitor.drift import drift_profile
    from emscope.monitor.live import TraitMonitor
    from emscope.monitor.projections import load_probe_set, trait_projections
    from emscope.monitor.traits import BUILTIN_TRAITS, TraitSet, fit_traits, load_trait_pairs

__all__ = [
    "BUILTIN_TRAITS",
    "DriftDetector",
    "MonitorCallback",
    "TraitMonitor",
    "TraitSet",
    "drift_profile",
    "evaluate_detector",
    "fit_traits",
    "load_probe_set",
    "load_trait_pairs",
    "trait_projections",
]
_WHERE = {
    "BUILTIN_TRAITS": "traits",
    "TraitSet": "traits",
    "fit_traits": "traits",
    "load_trait_pairs": "traits",
    "load_probe_set": "projections",
    "trait_projections": "projections",
    "drift_profile": "drift",
    "DriftDetector": "detector",
    "evaluate_detector": "detector",
    "TraitMonitor": "live",
    "MonitorCallback": "callback",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'emscope.monitor' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"emscope.monitor.{_WHERE[name]}"), name)
