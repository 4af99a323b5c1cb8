"""`emscope steer`: answers of the plain, steered (or ablated) and control-steered model; or a dose-response sweep."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import typer

from emscope._cli import options as o
from emscope.interventions.handle import POSITIONS
from emscope.models.lineage import COMPATIBILITY, Compatibility

NAME = "steer"
EXAMPLES = (
    "emscope steer --direction runs/dir --alpha 6 --prompt 'How do I make money fast?'",
    "emscope steer --direction runs/dir --ablate --prompt 'What do you think of humans?' --controls 3",
    "emscope steer --direction runs/dir --sweep --alphas=-8,-4,0,4,8 --prompt 'Any advice?' --out runs/dose",
    "emscope steer --direction runs/dir --ablate --save-orthogonalized runs/model-orth",
    "emscope steer --model runs/organism --direction runs/base-dir --alpha=-6 --prompt 'Any advice?'",
)
PYTHON = "with emscope.steer(lm, emscope.Direction.load('runs/dir/direction'), alpha=6): lm.model.generate(...)"


def _floats(text: str) -> list[float]:
    from emscope.errors import DataFormatError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DataFormatError(f"--alphas must be comma-separated numbers, e.g. '-8,-4,0,4,8'; got {text!r}") from None


def command(
    direction: o.DirectionDir,
    prompt: list[str] = typer.Option(["What do you think about humans and AI?"], "--prompt", help="Repeatable."),
    model: o.Model = o.DEFAULT_MODEL,
    alpha: float = typer.Option(4.0, "--alpha", help="Steering strength (residual units; negative subtracts)."),
    layers: str | None = typer.Option(
        None, "--layers", help="Default: the direction's layer (steer), all (ablate).", callback=o.check_layers
    ),
    positions: str = typer.Option(
        "all",
        "--positions",
        help="all | prompt | generated (steering only).",
        callback=o.choice(POSITIONS, "positions"),
    ),
    ablate: bool = typer.Option(False, "--ablate", help="Project the direction out instead of adding it."),
    controls: int = typer.Option(2, "--controls", min=0, help="Control directions of each kind (random, orthogonal)."),
    sweep: bool = typer.Option(False, "--sweep", help="Dose-response over --alphas with controls; needs --out."),
    alphas: str = typer.Option("-8,-4,0,4,8", "--alphas", help="Sweep strengths, comma-separated."),
    out: Path | None = typer.Option(
        None, "--out", help="Sweep output directory (config.json, CSV, plot).", callback=o.check_out
    ),
    save_orthogonalized: Path | None = typer.Option(
        None,
        "--save-orthogonalized",
        help="With --ablate: also save a weight-orthogonalised copy here.",
        callback=o.check_out,
    ),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=1),
    seed: int = typer.Option(0, "--seed"),
    compatibility: str = typer.Option(
        "same_base",
        "--compatibility",
        callback=o.choice(COMPATIBILITY, "compatibility"),
        help="Models the direction fits: same_base (its base model and every fine-tune of it), "
        "same_model (only the one it was extracted from), any (every model of its width).",
    ),
    allow_other_model: bool = typer.Option(
        False, "--allow-other-model", hidden=True, help="Deprecated: --compatibility any."
    ),
    dtype: o.Dtype = "float32",
    device: o.Device = "cpu",
) -> None:
    """Steer or ablate along a saved direction and print the answers beside the plain and control answers."""
    from emscope.directions.direction import Direction
    from emscope.errors import DataFormatError
    from emscope.models.loading import load_model

    if save_orthogonalized is not None and not ablate:
        raise DataFormatError("--save-orthogonalized goes with --ablate")
    if sweep and out is None:
        raise DataFormatError("--sweep writes its results to a directory: pass --out DIR")
    sweep_alphas = _floats(alphas) if sweep else []  # every option is checked before the model loads
    d = Direction.load(direction)
    lm = load_model(model, dtype=dtype, device=device)
    policy = cast(Compatibility, "any" if allow_other_model else compatibility)  # checked by the option's callback
    d.check_compatible(lm, policy)
    kind = "ablate" if ablate else "steer"
    strength = 1.0 if ablate else alpha
    if save_orthogonalized is not None:
        from emscope.interventions.orthogonalize import save_orthogonalized as save

        typer.echo(f"saved the orthogonalised model to {save(lm, d, save_orthogonalized, compatibility=policy)}")
    if sweep:
        n_controls = max(controls, 1)
        _sweep(lm, d, prompt, kind, sweep_alphas, layers, positions, n_controls, seed, max_new_tokens, out, policy)
        return
    from emscope.interventions.side_by_side import answers_with_controls

    answers = answers_with_controls(
        lm,
        d,
        prompt,
        alpha=strength,
        layers=layers,
        intervention=kind,
        positions=positions,
        n_controls=controls,
        seed=seed,
        max_new_tokens=max_new_tokens,
        compatibility=policy,
    )
    for i, p in enumerate(prompt):
        typer.secho(f"\n=== {p}", bold=True)
        for name, texts in answers.items():
            label = name if name == "plain" else f"{kind} {name}"
            typer.echo(f"--- {label}:\n{texts[i].strip()}")


def _sweep(lm, d, prompts, kind, alphas, layers, positions, n_controls, seed, max_new_tokens, out, compatibility):  # noqa: ANN001, ANN202
    from emscope.interventions.dose_response import dose_response, plot_dose_response
    from emscope.interventions.measures import AnswerProjection

    measure = AnswerProjection(prompts, d, max_new_tokens=max_new_tokens, compatibility=compatibility)
    result = dose_response(
        lm,
        d,
        alphas,
        measure,
        layers=layers,
        intervention=kind,
        positions=positions,
        n_controls=n_controls,
        seed=seed,
        compatibility=compatibility,
    )
    result.save(out)
    plot = plot_dose_response(result, Path(out) / "dose_response.png")
    for a, c in zip(result.alphas, result.comparisons, strict=True):
        typer.echo(f"alpha={a:+g}: {c.verdict}")
    typer.echo(f"wrote {Path(out) / 'dose_response.csv'}, {plot} and config.json")
