"""`emscope monitor`: the trait drift of a finished fine-tuning run, read from its checkpoints after the fact.

`live_monitor` builds the same reading for `emscope finetune --monitor` (a `TraitMonitor` hook).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from emscope._cli import options as o
from emscope.artifacts import CONFIG_NAME
from emscope.errors import ConfigError
from emscope.monitor.live import MONITOR_LOG

if TYPE_CHECKING:
    from emscope.monitor.live import TraitMonitor

NAME = "monitor"
EXAMPLES = (
    "emscope monitor runs/organism --traits runs/traits",
    "emscope monitor runs/organism --traits runs/traits --detector runs/drift/detector --out runs/organism-drift",
)
PYTHON = (
    "emscope.monitor.drift_profile('runs/organism', emscope.monitor.TraitSet.load('runs/traits'), "
    "out='runs/organism/drift')"
)
TABLE = "checkpoints.csv"


def command(
    run_dir: Annotated[
        Path, typer.Argument(help="A fine-tuning run directory (its checkpoints/step-*).", show_default=False)
    ],
    traits: Annotated[Path, typer.Option("--traits", help="A saved trait set (emscope traits fit --out DIR).")],
    detector: Annotated[
        Path | None,
        typer.Option("--detector", help="A drift detector (emscope drift --detector --out DIR: DIR/detector)."),
    ] = None,
    probes: Annotated[
        Path | None, o.data_file("Probe set JSONL (id, topic, question, answer; default: built in).", "--probes")
    ] = None,
    out: Annotated[
        Path | None, o.out_dir("Write drift.csv, drift.png, checkpoints.csv here (default: RUN_DIR/drift).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="The run's base model (default: the one its checkpoints record).")
    ] = None,
    device: o.Device = "cpu",
    batch_size: o.BatchSize = 8,
) -> None:
    """Trait drift of every checkpoint of a finished run since step 0, with the detector's alerts; a table."""
    from emscope.monitor.drift import drift_profile
    from emscope.monitor.projections import load_probe_set

    if not run_dir.is_dir():
        raise ConfigError(f"no run directory at {run_dir}: pass the --out of `emscope finetune` (or a zoo run)")
    trait_set = load_traits(traits)
    found = load_detector(detector, trait_set.names)
    lm = None
    if model is not None or device != "cpu":
        from emscope.models.loading import load_model
        from emscope.models.organism_dir import list_checkpoints

        checkpoints = list_checkpoints(run_dir)
        base = model or (checkpoints[0].base_model if checkpoints else None)
        if base is None:
            raise ConfigError(f"{run_dir} holds no checkpoints (RUN/checkpoints/step-*): pass a fine-tuning run")
        lm = load_model(base, device=device)
    target = out or run_dir / "drift"
    profile = drift_profile(
        run_dir, trait_set, load_probe_set(probes) if probes else None, lm=lm, out=target, batch_size=batch_size
    )
    rows = checkpoint_table(profile, found)
    from emscope.records import write_csv

    write_csv(target / TABLE, rows)
    typer.echo(format_table(rows, trait_set.names))
    alerts = [r["step"] for r in rows if r.get("alert")]
    if found is not None:
        typer.echo(f"alerts at steps {alerts}" if alerts else f"no checkpoint reaches the threshold {found.threshold}")
    typer.echo(f"drift.csv, drift.png and {TABLE} in {target}")


def checkpoint_table(profile: Any, detector: Any = None) -> list[dict[str, Any]]:
    """One row per checkpoint: step, loss, each trait's drift and (with a detector) score, threshold, alert."""
    drift = profile.drift
    rows = []
    for i, step in enumerate(profile.steps):
        row: dict[str, Any] = {"step": step, "loss": profile.losses[i]}
        row.update({n: float(drift[i, j]) for j, n in enumerate(profile.names)})
        if detector is not None:
            score = float(detector.score(drift[i]))
            row.update(score=score, threshold=float(detector.threshold), alert=score >= float(detector.threshold))
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], names: tuple[str, ...]) -> str:
    """The drift table as aligned text (drift in projection units, since step 0)."""
    columns = ["step", "loss", *names] + (["score", "alert"] if rows and "score" in rows[0] else [])
    widths = {c: max(len(c), 8) for c in columns}

    def cell(c: str, v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "ALERT" if v else ""
        if isinstance(v, float):
            return f"{v:.3f}" if c in ("loss", "score") else f"{v:+.3f}"
        return str(v)

    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(cell(c, r.get(c)).rjust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def load_traits(path: Path) -> Any:
    """A saved `TraitSet`, or a one-line error naming how to make one."""
    from emscope.monitor.traits import TraitSet

    if not path.is_dir():
        raise ConfigError(f"no trait set at {path}: `emscope traits fit --out DIR` writes one")
    return TraitSet.load(path)


def load_detector(path: Path | None, names: tuple[str, ...]) -> Any:
    """A saved `DriftDetector` (None without a path) that reads the traits `names`, in that order.

    `path` is the detector's directory, or the ``OUT/detector`` of `emscope drift --detector` that holds it.
    """
    if path is None:
        return None
    from emscope.monitor.detector import DriftDetector

    if not path.is_dir():
        raise ConfigError(f"no drift detector at {path}: pass the directory a calibrated DriftDetector was saved to")
    if not (path / CONFIG_NAME).is_file() and (path / "detector" / CONFIG_NAME).is_file():
        path = path / "detector"  # the output of `emscope drift --detector`: OUT/detector holds the fitted one
    found = DriftDetector.load(path)
    if tuple(found.names) != tuple(names):
        raise ConfigError(
            f"the detector at {path} reads traits {list(found.names)} but the trait set holds {list(names)}: "
            "use the detector calibrated on this trait set"
        )
    return found


def live_monitor(
    traits: Path,
    run_dir: Path,
    *,
    every: int,
    detector: Path | None = None,
    stop_on_alert: bool = False,
    probes: Path | None = None,
) -> TraitMonitor:
    """The `TraitMonitor` of `emscope finetune --monitor` (its inputs checked; call it at step 0 for the baseline).

    It reads every probe of `probes` (default: the built-in probe set), as `emscope monitor` and the detector do.
    """
    from emscope.monitor.live import TraitMonitor
    from emscope.monitor.projections import load_probe_set

    if stop_on_alert and detector is None:
        raise ConfigError("--monitor-stop needs --monitor-detector DIR (a calibrated drift detector)")
    trait_set = load_traits(traits)
    return TraitMonitor(
        trait_set,
        load_probe_set(probes),
        run_dir / MONITOR_LOG,
        every=every,
        detector=load_detector(detector, trait_set.names),
        stop_on_alert=stop_on_alert,
    )


def monitor_summary(monitor: TraitMonitor) -> str:
    """One line on what the live monitor logged in this run."""
    from emscope.monitor.live import read_monitor_log

    rows = [r for r in read_monitor_log(monitor.path) if not r.get("baseline")]
    line = f"monitor: {len(rows)} readings after step 0 in {monitor.path} ({monitor.seconds:.1f} s reading)"
    if monitor.detector is not None:
        line += f"; alerts at steps {monitor.alerts}" if monitor.alerts else "; no alert"
    if monitor.stop_on_alert and monitor.alerts:
        line += f"; stopped at step {monitor.alerts[-1]} (re-run the same command to continue)"
    return line
