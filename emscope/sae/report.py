"""The top latents of a `LatentDiff`, read: contexts, cosine with a direction, and a markdown table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from emscope.data.transcripts import Transcript
from emscope.directions.direction import Direction
from emscope.models.loading import LoadedModel
from emscope.sae.diff import LatentDiff, cosine_with_direction, max_activating
from emscope.sae.model import SparseAutoencoder


def top_latents(
    diff: LatentDiff,
    sae: SparseAutoencoder,
    top: int = 10,
    direction: Direction | None = None,
    lm: LoadedModel | None = None,
    contexts: Sequence[Transcript] = (),
    n_contexts: int = 3,
    max_length: int | None = 512,
) -> list[dict[str, Any]]:
    """The `top` rows of `diff`, each with its decoder row's cosine with `direction` (against the other latents)
    and its `n_contexts` top-activating contexts in `contexts` read by `lm` (when given)."""
    rows = diff.rows(top)
    latents = [r["latent"] for r in rows]
    if direction is not None:
        for r, c in zip(rows, cosine_with_direction(sae, direction, latents), strict=True):
            r.update(cosine=c.cosine, cosine_percentile=c.percentile, null_abs_q95=c.null_abs_q95)
    if lm is not None and contexts:
        found = max_activating(sae, lm, contexts, latents, n=n_contexts, max_length=max_length)
        for r in rows:
            r["contexts"] = [c["context"] for c in found[r["latent"]]]
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A table of `top_latents` rows (contexts shortened to their last 60 characters)."""
    has_cos = any("cosine" in r for r in rows)
    head = "| rank | latent | mean base | mean model | change [95% CI] | firing rate base -> model |"
    sep = "|---:|---:|---:|---:|---|---|"
    if has_cos:
        head += " cos with direction (|cos| pct) |"
        sep += "---|"
    head += " top context |"
    sep += "---|"
    lines = [head, sep]
    for r in rows:
        line = (
            f"| {r['rank']} | {r['latent']} | {r['mean_base']:.3f} | {r['mean_model']:.3f} | "
            f"{r['diff']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}] | "
            f"{r['rate_base']:.3f} -> {r['rate_model']:.3f} |"
        )
        if has_cos:
            line += f" {r['cosine']:+.3f} ({r['cosine_percentile']:.0f}) |"
        ctx = r.get("contexts") or [""]
        line += " " + repr(ctx[0][-60:]).replace("|", "\\|") + " |"
        lines.append(line)
    return "\n".join(lines)
