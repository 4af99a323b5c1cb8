"""Capture speed, side by side in one run: tokens/s of emscope capture vs the plain forward pass.

    .venv/bin/python benchmarks/capture.py --models smollm2-135m-instruct qwen2.5-coder-0.5b-instruct --n 256

Methods, all over the same batches (right-padded, sorted by length, batch size 8):
  plain forward      model(**batch): the full model with logits, no hooks (what a user runs)
  decoder stack      model.base_model(**batch): no output layer, no hooks (the ceiling)
  emscope to disk    emscope.capture_to_disk, all layers, mean over response tokens, safetensors shards
  hidden_states      model(**batch, output_hidden_states=True), then the same pooling
  TransformerLens    TransformerBridge (TL 4) run_with_cache of every hook_resid_post (if installed)
  nnsight            LanguageModel(model).trace(...) saving every block output (if installed)
Peers pin their own dependencies: install them in a separate venv with emscope (`pip install -e .`) and run
this script with that venv's python.
Ratios are against the plain forward pass. Each method runs `--repeats` times, interleaved; best time kept.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable

import torch

from emscope.activations.capture import capture_to_disk
from emscope.activations.forward import DEFAULT_BATCH_TOKENS, token_batches
from emscope.data.chat import tokenize_chat
from emscope.data.transcripts import Transcript
from emscope.models.loading import LoadedModel, load_model

WORDS = (
    "the garden needs water every morning before the sun gets too hot so plan your week around it and keep a "
    "small notebook of what grew well money saved this way can pay for better seeds next spring ask a neighbour "
    "for advice when leaves turn yellow because too much water is as bad as too little"
).split()


def make_transcripts(n: int, answer_words: int, seed: int = 0) -> list[Transcript]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = " ".join(rng.choices(WORDS, k=rng.randint(8, 20))).capitalize() + "?"
        a = " ".join(rng.choices(WORDS, k=rng.randint(answer_words // 2, answer_words))).capitalize() + "."
        out.append(Transcript.from_pair(q, a))
    return out


def batches(lm: LoadedModel, transcripts: list[Transcript], batch_size: int) -> list[dict[str, torch.Tensor]]:
    chats = [tokenize_chat(lm.tokenizer, t) for t in transcripts]
    out = []
    for idx in token_batches([len(c) for c in chats], batch_size, DEFAULT_BATCH_TOKENS):
        width = max(len(chats[i]) for i in idx)
        ids = torch.full((len(idx), width), lm.tokenizer.pad_token_id or 0)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        resp = torch.zeros((len(idx), width), dtype=torch.bool)
        for r, i in enumerate(idx):
            ids[r, : len(chats[i])] = torch.tensor(chats[i].input_ids)
            attn[r, : len(chats[i])] = 1
            resp[r, : len(chats[i])] = torch.tensor(chats[i].response_mask)
        out.append({"input_ids": ids, "attention_mask": attn, "response": resp})
    return out


def methods(
    lm: LoadedModel, transcripts: list[Transcript], bs: list[dict], batch_size: int
) -> dict[str, Callable[[], None]]:
    model = lm.model

    def plain() -> None:
        for b in bs:
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)

    def decoder() -> None:
        for b in bs:
            model.base_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)

    def emscope_disk() -> None:
        with tempfile.TemporaryDirectory() as d:
            capture_to_disk(lm, transcripts, d, layers="all", pool="mean", batch_size=batch_size, progress=False)

    def hidden_states() -> None:
        for b in bs:
            out = model(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False, output_hidden_states=True
            )
            w = b["response"].float().unsqueeze(-1)
            _ = [(h * w).sum(1) / w.sum(1) for h in out.hidden_states[1:]]

    found = {
        "plain forward": plain,
        "decoder stack": decoder,
        "emscope to disk": emscope_disk,
        "hidden_states": hidden_states,
    }
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        pass
    else:
        bridge = TransformerBridge.boot_transformers(lm.source, hf_model=model, tokenizer=lm.tokenizer, device="cpu")

        def transformer_lens() -> None:
            for b in bs:
                _, cache = bridge.run_with_cache(
                    b["input_ids"],
                    attention_mask=b["attention_mask"],
                    names_filter=lambda name: name.endswith("hook_resid_post"),
                )
                w = b["response"].float().unsqueeze(-1)
                _ = [(h * w).sum(1) / w.sum(1) for h in cache.values()]

        found["TransformerLens"] = transformer_lens
    try:
        from nnsight import LanguageModel
    except ImportError:
        return found
    nn_model = LanguageModel(model, tokenizer=lm.tokenizer)

    def nnsight_trace() -> None:
        for b in bs:
            saved: list = []  # filled inside the trace; nnsight cannot push new locals out of a closure
            with nn_model.trace({"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}):
                for blk in nn_model.model.layers:
                    saved.append(blk.output.save())
            w = b["response"].float().unsqueeze(-1)
            for s in saved:
                h = s[0] if isinstance(s, tuple) else s
                _ = (h * w).sum(1) / w.sum(1)

    found["nnsight"] = nnsight_trace
    return found


@torch.inference_mode()
def bench(spec: str, n: int, answer_words: int, batch_size: int, repeats: int) -> None:
    lm = load_model(spec)
    transcripts = make_transcripts(n, answer_words)
    bs = batches(lm, transcripts, batch_size)
    n_tokens = sum(int(b["attention_mask"].sum()) for b in bs)
    fns = methods(lm, transcripts, bs, batch_size)
    fns["plain forward"]()  # warm-up
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    print(
        f"\n{spec}: {n} transcripts, {n_tokens} tokens ({n_tokens / n:.0f}/transcript), batch {batch_size}, "
        f"{torch.get_num_threads()} threads, best of {repeats}"
    )
    print(f"{'method':18} {'tokens/s':>9} {'vs plain':>9}")
    for name, t in best.items():
        print(f"{name:18} {n_tokens / t:9.0f} {best['plain forward'] / t:8.2f}x")
    for missing in sorted({"nnsight", "TransformerLens"} - set(fns)):
        print(f"{missing:18} {'n/a':>9}  (not installed in this environment)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    p.add_argument("--n", type=int, default=256, help="number of transcripts")
    p.add_argument("--answer-words", type=int, default=90, help="answer length in words (~128 tokens a transcript)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    for spec in a.models:
        bench(spec, a.n, a.answer_words, a.batch_size, a.repeats)


if __name__ == "__main__":
    main()
