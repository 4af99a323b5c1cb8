"""Watch a model's trait projections while it trains: `TraitMonitor`, a step hook for emscope's fine-tuning loop.

`TraitMonitor` reads the model on a fixed probe set every `every` optimizer steps with
`trait_projections` (the one function that reads a model for the monitor; the drift
profile of a finished run makes the same reading), subtracts the step-0 reading of the same probes,
and appends one row to ``monitor.jsonl``: per trait the mean drift with a 95% bootstrap
interval over the probes, the calibrated `DriftDetector`'s score when one is given, the
alert flag and the seconds the reading took. Over the detector's threshold it logs a
warning, and with ``stop_on_alert`` it asks the training loop to stop.

The first call (step 0, before any training step) records the baseline, the per-probe
projections, in the log's first row; a resumed run reads it back from there, so its drift
stays relative to the model it started from. (emscope's loop calls its hook after each
step only: call ``monitor(0, lm)`` on the model before `finetune`; for a run that starts
from an adapter, on that organism.) Rows are appended whole (`append_jsonl`); a
run resumed from an earlier checkpoint drops the rows past it before writing again.

Use it as emscope's hook, ``monitor(0, lm)`` then ``finetune(..., lm=lm, on_step=monitor)``
(the hook returns True to stop the loop), or as ``MonitorCallback(monitor, lm)``
(`emscope.monitor.callback`) in ``transformers.Trainer(callbacks=[...])`` and TRL's trainers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emscope.data.transcripts import Transcript, fingerprint
from emscope.errors import ArtifactError, ConfigError, ModelMismatchError
from emscope.models.lineage import Compatibility
from emscope.models.loading import LoadedModel
from emscope.monitor.projections import trait_projections
from emscope.records import append_jsonl, read_jsonl, write_jsonl
from emscope.runtime import reading_mode
from emscope.stats import paired_mean_difference_interval

if TYPE_CHECKING:
    from emscope.monitor.detector import DriftDetector
    from emscope.monitor.traits import TraitSet

__all__ = [
    "DEFAULT_EVERY",
    "MONITOR_LOG",
    "TraitMonitor",
    "drift_rows",
    "probe_subset",
    "read_monitor_log",
]
log = logging.getLogger(__name__)

MONITOR_LOG = "monitor.jsonl"
# Optimizer steps between readings. With the whole built-in probe set (64 probes: the drift a detector is
# calibrated on), a reading costs about 1.6 training steps of SmolLM2 on CPU: ~3% overhead (benchmarks/monitor.py).
DEFAULT_EVERY = 50
N_BOOT = 1000  # bootstrap resamples of the probes for the interval (as drift_profile)


def probe_subset(probes: Sequence[Transcript], n: int | None) -> list[Transcript]:
    """`n` probes spread evenly over `probes` (all of them when `n` is None or not smaller)."""
    probes = list(probes)
    if n is None or n >= len(probes):
        return probes
    if n < 1:
        raise ConfigError(f"the monitor needs at least 1 probe, got {n}")
    return [probes[i] for i in np.linspace(0, len(probes) - 1, n).round().astype(int)]


def drift_rows(projections: torch.Tensor, baseline: torch.Tensor, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per trait: mean projection, mean drift (projection minus baseline, paired by probe) and its 95% interval.

    The interval resamples the probes, as `emscope.monitor.drift` does for a finished run
    (None with a single probe).
    """
    now, base = projections.double().numpy(), baseline.double().numpy()
    out: dict[str, dict[str, Any]] = {"projection": {}, "drift": {}, "ci_low": {}, "ci_high": {}}
    for j, name in enumerate(names):
        low, high = paired_mean_difference_interval(base[:, j], now[:, j], N_BOOT)
        out["projection"][name] = float(now[:, j].mean())
        out["drift"][name] = float((now[:, j] - base[:, j]).mean())
        out["ci_low"][name], out["ci_high"][name] = low, high
    return out


def read_monitor_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a ``monitor.jsonl`` (a torn last line, from a killed run, is skipped)."""
    return read_jsonl(path, missing_ok=True, torn_tail_ok=True)


class TraitMonitor:
    """Trait drift of a model under training, read every `every` steps; a step hook for `finetune`.

    ``monitor(step, lm, row=None)`` at step 0 records the baseline; at a multiple of `every`
    it reads the model and logs a row; it returns True when ``stop_on_alert`` and the
    detector's score reaches its threshold (the training loop then stops).
    """

    def __init__(
        self,
        traits: TraitSet,
        probes: Sequence[Transcript],
        out: str | os.PathLike[str],
        *,
        every: int = DEFAULT_EVERY,
        detector: DriftDetector | None = None,
        stop_on_alert: bool = False,
        batch_size: int = 8,
        compatibility: Compatibility = "same_base",
    ) -> None:
        if every < 1:
            raise ConfigError(f"the monitor reads every N steps with N >= 1, got {every}")
        if not probes:
            raise ConfigError("the monitor needs at least one probe (emscope.monitor.load_probe_set())")
        if stop_on_alert and detector is None:
            raise ConfigError("stop_on_alert needs a calibrated detector (emscope.monitor.DriftDetector.load(DIR))")
        if detector is not None and tuple(detector.names) != tuple(traits.names):
            raise ConfigError(
                f"the detector reads traits {list(detector.names)} but the trait set holds {list(traits.names)}: "
                "use the detector calibrated on this trait set"
            )
        self.traits, self.probes, self.path = traits, list(probes), Path(out)
        self.every, self.detector, self.stop_on_alert = every, detector, stop_on_alert
        self.batch_size, self.compatibility = batch_size, compatibility
        self.baseline: torch.Tensor | None = None  # [n_probes, n_traits] projections at the baseline step
        self.baseline_step: int | None = None
        self.alerts: list[int] = []  # steps whose reading was over the threshold
        self.seconds = 0.0  # spent reading, in this process
        self._last_step: int | None = None

    # -- the hook ----------------------------------------------------------------------------------------

    def __call__(self, step: int, lm: LoadedModel, row: Mapping[str, Any] | None = None) -> bool:
        """Read at step 0 (baseline) and every `every` steps; True asks the training loop to stop."""
        if step == 0:
            self.start(lm)
            return False
        if step % self.every:
            return False
        return bool(self.read(step, lm, row)["stop"])

    def start(self, lm: LoadedModel, step: int = 0) -> dict[str, Any]:
        """Record the baseline on `lm` at `step` (0: before training), or keep the one a resumed run logged."""
        if self._load_baseline():
            assert self.baseline_step is not None  # set by _load_baseline
            log.info("monitor: keeping the step-%d baseline of %s", self.baseline_step, self.path)
            return read_monitor_log(self.path)[0]
        if self.path.is_file() and read_monitor_log(self.path):
            raise ArtifactError(f"{self.path} has rows but no baseline row: delete it or pass another monitor log")
        if step:
            log.warning("monitor: no baseline in %s; the drift is measured from step %d, not 0", self.path, step)
        started = time.perf_counter()
        projections = self._project(lm)
        seconds = round(time.perf_counter() - started, 3)
        self.baseline, self.baseline_step = projections, step
        first = {
            "step": step,
            "baseline": True,
            "baseline_step": step,
            **drift_rows(projections, projections, self.traits.names),
            "score": self._score(torch.zeros(len(self.traits.names))),
            "threshold": self._threshold,
            "alert": False,
            "stop": False,
            "seconds": seconds,
            "n_probes": len(self.probes),
            **self._identity(),
            "probe_ids": [p.meta.get("probe_id", i) for i, p in enumerate(self.probes)],
            "projections": projections.tolist(),
        }
        write_jsonl(self.path, [first])  # a new log: the baseline row first
        self._last_step = step
        self.seconds += seconds
        return first

    def read(self, step: int, lm: LoadedModel, row: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Read `lm` now, append its row to the log and return it (whatever `every` says)."""
        if self.baseline is None and not self._load_baseline():
            raise ConfigError(
                f"the monitor has no baseline in {self.path}: call monitor(0, lm) (or monitor.start(lm)) "
                "on the model before training"
            )
        assert self.baseline is not None and self.baseline_step is not None
        if step <= self.baseline_step:
            raise ConfigError(f"step {step} is not after the monitor's baseline step {self.baseline_step}")
        started = time.perf_counter()
        projections = self._project(lm)
        summary = drift_rows(projections, self.baseline, self.traits.names)
        drift = torch.tensor([summary["drift"][n] for n in self.traits.names])
        score = self._score(drift)
        alert = score is not None and self._threshold is not None and score >= self._threshold
        seconds = round(time.perf_counter() - started, 3)
        out = {
            "step": step,
            "baseline_step": self.baseline_step,
            **summary,
            "score": score,
            "threshold": self._threshold,
            "alert": alert,
            "stop": alert and self.stop_on_alert,
            "seconds": seconds,
            "n_probes": len(self.probes),
        }
        if row is not None and "loss" in row:
            out["loss"] = row["loss"]
        self._append(out)
        self.seconds += seconds
        if alert:
            self.alerts.append(step)
            top = sorted(summary["drift"].items(), key=lambda kv: -abs(kv[1]))[:3]
            log.warning(
                "monitor: step %d: drift score %.3f >= threshold %.3f (%s)%s",
                step,
                score,
                self._threshold,
                ", ".join(f"{n} {v:+.3f}" for n, v in top),
                "; stopping the run" if self.stop_on_alert else "",
            )
        return out

    # -- helpers -----------------------------------------------------------------------------------------

    @property
    def _threshold(self) -> float | None:
        return None if self.detector is None else float(self.detector.threshold)

    def _score(self, drift: torch.Tensor) -> float | None:
        return None if self.detector is None else float(self.detector.score(drift))

    def _project(self, lm: LoadedModel) -> torch.Tensor:
        with reading_mode(lm.model):
            return (
                trait_projections(
                    lm, self.traits, self.probes, batch_size=self.batch_size, compatibility=self.compatibility
                )
                .float()
                .cpu()
            )

    def _identity(self) -> dict[str, Any]:
        """What a resumed run must share with the log it continues: the traits and the probes."""
        h = hashlib.sha256(self.traits.directions.detach().float().cpu().contiguous().numpy().tobytes())
        h.update(repr((tuple(self.traits.names), self.traits.layer)).encode())
        return {
            "traits": list(self.traits.names),
            "layer": self.traits.layer,
            "traits_fingerprint": f"sha256:{h.hexdigest()[:16]}",
            "probes_fingerprint": fingerprint(self.probes),
        }

    def _load_baseline(self) -> bool:
        """Take the baseline from the log a resumed run wrote, checking it was made with these traits and probes."""
        if self.baseline is not None:
            return True
        rows = read_monitor_log(self.path)
        if not rows or not rows[0].get("baseline"):
            return False
        first, mine = rows[0], self._identity()
        differs = [k for k, v in mine.items() if first.get(k) != v]
        if differs:
            raise ModelMismatchError(
                f"{self.path} was written with other {' and '.join(sorted(set(k.split('_')[0] for k in differs)))} "
                f"(different {', '.join(differs)}): monitor with the same ones, or pass another monitor log"
            )
        self.baseline = torch.tensor(first["projections"], dtype=torch.float32)
        self.baseline_step = int(first["step"])
        self._last_step = int(rows[-1]["step"])
        return True

    def _append(self, row: dict[str, Any]) -> None:
        """Append a row; a step at or before the last one logged means the run resumed from an earlier checkpoint."""
        if self._last_step is None or row["step"] <= self._last_step:
            kept = [r for r in read_monitor_log(self.path) if r.get("baseline") or r["step"] < row["step"]]
            write_jsonl(self.path, kept)
        append_jsonl(self.path, [row])
        self._last_step = row["step"]
