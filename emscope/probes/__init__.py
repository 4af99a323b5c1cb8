"""Monitors that flag misaligned answers, compared under one held-out-domain protocol (issue 11).

The methods of Tillman & Mossing side by side: linear probes on raw activations
(difference-in-means, logistic with a CV-chosen C; mean / last / max pooling), a prompted probe
(the monitored model reads a task description, the transcript and a question; a probe reads
its last token), an SAE max-pool probe, and zero-shot asking (the model's own P(yes)). The
offline judge's probe is added above the evaluation layer (`emscope.evaluation.monitors`).

    from emscope.probes import MonitorContext, get_monitor, corpus_items, heldout_curve
    ctx = MonitorContext(lm=load_model("smollm2-135m-instruct"), store=FeatureStore("runs/features"))
    curve = heldout_curve(get_monitor("raw-mean-logistic", ctx), corpus_items(load_corpus()))
"""

from emscope.probes.heads import DEFAULT_CS, LinearHead, fit_diff_in_means, fit_logistic_cv
from emscope.probes.items import MonitorItem, corpus_items, subsample_pairs
from emscope.probes.protocol import CurveResult, default_sizes, heldout_curve, sample_pairs
from emscope.probes.registry import MONITORS, NO_SAE, Monitor, MonitorContext, MonitorSpec, get_monitor
from emscope.probes.sources import (
    Cost,
    FeatureSource,
    FeatureStore,
    PromptedReading,
    RawActivations,
    SaeMaxPool,
    candidate_layers,
)

__all__ = [
    "DEFAULT_CS",
    "MONITORS",
    "NO_SAE",
    "Cost",
    "CurveResult",
    "FeatureSource",
    "FeatureStore",
    "LinearHead",
    "Monitor",
    "MonitorContext",
    "MonitorItem",
    "MonitorSpec",
    "PromptedReading",
    "RawActivations",
    "SaeMaxPool",
    "candidate_layers",
    "corpus_items",
    "default_sizes",
    "fit_diff_in_means",
    "fit_logistic_cv",
    "get_monitor",
    "heldout_curve",
    "sample_pairs",
    "subsample_pairs",
]
