"""`emscope sae train`: capture a corpus, train a TopK (or GroupMax) SAE with eai-sparsify, measure it, save it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emscope._cli import options as o
from emscope.sae.model import ACTIVATIONS
from emscope.sae.train import SaeTrainConfig

NAME = "train"
GROUP = "sae"
EXAMPLES = (
    "emscope sae train --model smollm2-135m-instruct --data builtin --layers 15 --epochs 2 --out runs/sae",
    "emscope sae train --model smollm2-135m-instruct --data builtin --corpus-pairs 150 --layers 15 "
    "--activation groupmax --out runs/sae-groupmax",
)
PYTHON = (
    "emscope.sae.pipeline.build_sae(emscope.load_model('smollm2-135m-instruct'), "
    "emscope.sae.corpus.sae_corpus(), 'runs/sae', layer=15)"
)


def command(
    out: Annotated[Path, o.out_dir("Output directory: activations, held-out data and the SAE (OUT/sae).")],
    data: Annotated[
        str,
        typer.Option(
            "--data", help="Transcripts (messages JSONL), or 'builtin': emscope's labelled corpus and contrast pairs."
        ),
    ] = "builtin",
    em_data: Annotated[
        Path | None,
        typer.Option(
            "--em-data", help="Directory of the public EM datasets (insecure.jsonl ...) to mix in.", exists=True
        ),
    ] = None,
    per_em_file: Annotated[int, o.count("--per-em-file", "Transcripts drawn from each EM dataset.")] = 50,
    corpus_pairs: Annotated[
        int | None, o.count("--corpus-pairs", "Pairs of the labelled corpus to use (default: all).", minimum=0)
    ] = None,
    model: o.Model = o.DEFAULT_MODEL,
    layers: Annotated[
        str,
        typer.Option(
            "--layers", help="The one layer (block output) to train on, e.g. 15 or -1.", callback=o.check_layers
        ),
    ] = "15",
    activation: Annotated[
        str,
        typer.Option(
            "--activation",
            help=" | ".join(ACTIVATIONS) + " (eai-sparsify architectures).",
            callback=o.choice(ACTIVATIONS, "SAE activation"),
        ),
    ] = "topk",
    expansion_factor: Annotated[int, o.count("--expansion-factor", "Latents per model dimension.")] = 4,
    k: Annotated[int, o.count("--k", "Latents kept per token (topk) or groups (groupmax).")] = 32,
    epochs: Annotated[
        int, o.count("--epochs", "Passes over the training tokens (2 was best on 80k tokens, docs/sae.md).")
    ] = 2,
    batch_size: Annotated[int, o.count("--batch-size", "Tokens per optimizer step.", minimum=2)] = 512,
    heldout_fraction: Annotated[
        float, typer.Option("--heldout-fraction", help="Share of transcripts held out.", callback=o.check_fraction)
    ] = 0.05,
    max_length: o.MaxLength = 256,
    limit: o.Limit = None,
    seed: o.Seed = 0,
    device: o.Device = "cpu",
) -> None:
    """Train an SAE on one layer's block output over a chat corpus; report held-out FVU, L0, dead latents, loss recovered."""
    from emscope.data.transcripts import load_transcripts
    from emscope.errors import ConfigError
    from emscope.models.architecture import resolve_layers
    from emscope.models.loading import load_model
    from emscope.sae.corpus import sae_corpus
    from emscope.sae.pipeline import build_sae

    if data == "builtin":
        transcripts = sae_corpus(em_data, per_em_file=per_em_file, corpus_pairs=corpus_pairs, seed=seed)
    else:
        if not Path(data).is_file():
            raise ConfigError(f"--data {data}: no such file; give a messages JSONL file or 'builtin'")
        transcripts = load_transcripts(data)
    transcripts = transcripts[:limit] if limit is not None else transcripts
    config = SaeTrainConfig(
        activation=activation, expansion_factor=expansion_factor, k=k, epochs=epochs, batch_size=batch_size, seed=seed
    )
    lm = load_model(model, device=device)
    chosen = resolve_layers(layers, lm.n_layers)
    if len(chosen) != 1:
        raise ConfigError(f"--layers {layers} names {len(chosen)} layers: an SAE reads one; give one layer")
    sae = build_sae(lm, transcripts, out, chosen[0], config, heldout_fraction=heldout_fraction, max_length=max_length)
    typer.echo(describe(sae))
    typer.echo(f"saved {out / 'sae'}")


def describe(sae: object) -> str:
    """A few lines: what the SAE is and how good it is."""
    from emscope.sae.model import SparseAutoencoder

    assert isinstance(sae, SparseAutoencoder)
    t, m = sae.training, sae.metrics
    lines = [
        f"SAE {sae.activation} k={sae.k} latents={sae.n_latents} on {sae.model} {sae.site}.{sae.layer} "
        f"({sae.library} {sae.library_version})",
        f"trained on {t.get('tokens_seen', '?')} token-steps ({t.get('rows', '?')} tokens x {t.get('epochs', '?')} "
        f"epochs) in {t.get('seconds', '?')} s",
    ]
    if "heldout" in m:
        h = m["heldout"]
        lines.append(
            f"held-out ({h['n_rows']} tokens): FVU {h['fvu']:.3f}  L0 {h['l0']:.1f}  dead {h['dead_fraction']:.1%}"
        )
    if "loss" in m:
        r = m["loss"]
        lo, hi = r["fraction_recovered_ci"]
        lines.append(
            f"next-token loss: clean {r['clean_loss']:.3f}, SAE spliced {r['spliced_loss']:.3f}, zero-ablated "
            f"{r['ablated_loss']:.3f} -> recovered {r['fraction_recovered']:.3f} [{lo:.3f}, {hi:.3f}] "
            f"({r['n_transcripts']} transcripts, {r['n_tokens']} tokens)"
        )
    return "\n".join(lines)
