"""SAE training, side by side in one run: emscope's path against eai-sparsify's own trainer, on the same tokens.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sae.py --model smollm2-135m-instruct --layer 15 --n 48 --seq 128

Same transcripts (the SAE corpus: labelled corpus + contrast pairs, and the public EM sets when --em-data is
given), each rendered with the chat template and cut to --seq tokens; same SAE (TopK, --expansion x width
latents, --k), same optimizer and learning-rate rule (the library's defaults), same batch of tokens per step:

  plain forward       model(ids) over the same batches: what reading the activations costs at least
  emscope capture     capture_to_disk(pool="tokens", token_selection="all", bf16 shards) at --layer
  emscope train       train_sae over the captured shards (ActivationStream), --epochs passes
  sparsify Trainer    sparsify.Trainer(loss_fn="fvu") on the token ids: the model runs on every step of every
                      epoch (padding and the chat's <|im_start|> token excluded via exclude_tokens)

Quality: held-out FVU and L0 of both SAEs on the same held-out tokens (the last --heldout transcripts), rows above
10x the median norm (attention-sink tokens) left out of both measurements. Times are wall seconds, one repeat;
run it on a quiet machine for numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from emscope.activations.capture import capture_to_disk
from emscope.data.chat import tokenize_chat
from emscope.models.loading import load_model
from emscope.sae.corpus import sae_corpus
from emscope.sae.quality import heldout_rows, reconstruction_metrics
from emscope.sae.train import SaeTrainConfig, from_sparsify_dir, train_sae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--n", type=int, default=48, help="training transcripts")
    ap.add_argument("--heldout", type=int, default=8, help="held-out transcripts")
    ap.add_argument("--seq", type=int, default=128, help="tokens per transcript, at most")
    ap.add_argument("--expansion", type=int, default=4)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-seqs", type=int, default=4, help="transcripts per step (x --seq tokens at most)")
    ap.add_argument("--em-data", default=None)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    lm = load_model(args.model)
    data = sae_corpus(args.em_data, per_em_file=max(1, args.n // 8), corpus_pairs=args.n, seed=0)
    train, held = data[: args.n], data[args.n : args.n + args.heldout]
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = [tokenize_chat(tok, t).input_ids[: args.seq] for t in train]
    n_tokens = sum(len(x) for x in ids)
    results: dict[str, object] = {"model": args.model, "layer": args.layer, "tokens": n_tokens, "args": vars(args)}
    print(f"{len(train)} transcripts, {n_tokens} tokens, layer {args.layer}, epochs {args.epochs}")

    with tempfile.TemporaryDirectory() as tmp:
        # plain forward over the same batches (padding on the right, as capture does)
        padded = torch.full((len(ids), args.seq), pad)
        attn = torch.zeros_like(padded)
        for i, x in enumerate(ids):
            padded[i, : len(x)] = torch.tensor(x)
            attn[i, : len(x)] = 1
        t = time.perf_counter()
        with torch.inference_mode():
            for a in range(0, len(ids), 8):
                lm.model(input_ids=padded[a : a + 8], attention_mask=attn[a : a + 8], use_cache=False)
        forward_s = time.perf_counter() - t

        common = dict(layers=[args.layer], pool="tokens", token_selection="all", max_length=args.seq, progress=False)
        t = time.perf_counter()
        capture_to_disk(lm, train, f"{tmp}/train", dtype="bfloat16", **common)  # type: ignore[arg-type]
        capture_s = time.perf_counter() - t
        capture_to_disk(lm, held, f"{tmp}/held", **common)  # type: ignore[arg-type]
        rows = heldout_rows(f"{tmp}/held", args.layer).float()

        batch_tokens = args.batch_seqs * args.seq
        cfg = SaeTrainConfig(expansion_factor=args.expansion, k=args.k, epochs=args.epochs, batch_size=batch_tokens)
        warm = SaeTrainConfig(expansion_factor=1, k=1, batch_size=8)  # one-time imports and set-up, not timed
        train_sae(torch.randn(16, lm.width), 0, warm, model="warm-up", progress=False)
        t = time.perf_counter()
        ours = train_sae(f"{tmp}/train", config=cfg, progress=False)
        train_s = time.perf_counter() - t

        # the library's own trainer: the model runs on every step
        from datasets import Dataset
        from sparsify import SaeConfig, TrainConfig, Trainer

        padded_lib = torch.full((len(ids), args.seq), pad)
        for i, x in enumerate(ids):
            padded_lib[i, : len(x)] = torch.tensor(x)
        sink = tok.convert_tokens_to_ids("<|im_start|>")
        exclude = [pad] + ([sink] if isinstance(sink, int) and sink != tok.unk_token_id else [])
        lib_cfg = TrainConfig(
            SaeConfig(expansion_factor=args.expansion, k=args.k),
            batch_size=args.batch_seqs,
            layers=[args.layer],
            loss_fn="fvu",
            log_to_wandb=False,
            save_every=10**9,
            save_dir=f"{tmp}/lib",
            run_name="run",
            exclude_tokens=exclude,
        )
        full = Dataset.from_dict({"input_ids": sum([padded_lib.tolist()] * args.epochs, [])}).with_format("torch")
        t = time.perf_counter()
        Trainer(lib_cfg, full, lm.model).fit()
        lib_s = time.perf_counter() - t
        layer_dir = next(Path(f"{tmp}/lib/run").glob(f"*layers.{args.layer}*"))
        theirs = from_sparsify_dir(layer_dir, layer=args.layer, model=args.model, max_norm=ours.max_norm)

    q_ours, q_theirs = reconstruction_metrics(ours, rows), reconstruction_metrics(theirs, rows)
    results.update(
        plain_forward_s=forward_s,
        capture_s=capture_s,
        emscope_train_s=train_s,
        emscope_total_s=capture_s + train_s,
        sparsify_trainer_s=lib_s,
        capture_over_forward=capture_s / forward_s,
        emscope_total_over_sparsify=(capture_s + train_s) / lib_s,
        heldout_emscope=q_ours.to_dict(),
        heldout_sparsify=q_theirs.to_dict(),
    )
    print("| method | seconds | ratio | held-out FVU | L0 | dead |\n|---|---:|---:|---:|---:|---:|")
    print(f"| plain forward (full model, once) | {forward_s:.1f} | 1.00 | | | |")
    print(f"| emscope capture (to layer {args.layer}, once) | {capture_s:.1f} | {capture_s / forward_s:.2f} | | | |")
    print(f"| emscope train ({args.epochs} epochs on the shards) | {train_s:.1f} | {train_s / forward_s:.2f} | | | |")
    print(
        f"| emscope capture + train | {capture_s + train_s:.1f} | {(capture_s + train_s) / forward_s:.2f} | "
        f"{q_ours.fvu:.3f} | {q_ours.l0:.1f} | {q_ours.dead_fraction:.1%} |"
    )
    print(
        f"| sparsify Trainer ({args.epochs} epochs, model on every step) | {lib_s:.1f} | {lib_s / forward_s:.2f} | "
        f"{q_theirs.fvu:.3f} | {q_theirs.l0:.1f} | {q_theirs.dead_fraction:.1%} |"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
