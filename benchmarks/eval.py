"""Evaluation throughput: batched vs one-prompt-at-a-time generation; judge calls/s with and without concurrency.

    python benchmarks/eval.py [--model smollm2-135m-instruct] [--prompts 8] [--new-tokens 32]

Generation: the same prompts and per-sample seeds, once in batches (emscope.models.generation) and
once one prompt at a time (what the public EM code does). Judge: `OpenAICompatJudge`
against the loopback mock server with a simulated 50 ms latency per request, concurrency 1
vs 8 (this measures the client's concurrency, not any real endpoint's speed).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def bench_generation(model: str, n_prompts: int, new_tokens: int, batch_size: int) -> dict:
    from emscope.data.questions import load_questions
    from emscope.models.generation import SamplingConfig, generate
    from emscope.models.loading import load_model

    lm = load_model(model)
    qs = load_questions("builtin")
    convs = [[{"role": "user", "content": q.paraphrases[0]}] for q in qs][:n_prompts]
    seeds = list(range(len(convs)))
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=new_tokens, batch_size=batch_size)
    generate(lm, convs[:1], SamplingConfig(max_new_tokens=2), seeds=[0])  # warm-up
    t = time.perf_counter()
    generate(lm, convs, cfg, seeds=seeds)
    batched = time.perf_counter() - t
    t = time.perf_counter()
    for c, s in zip(convs, seeds, strict=True):
        generate(lm, [c], SamplingConfig(temperature=1.0, max_new_tokens=new_tokens, batch_size=1), seeds=[s])
    single = time.perf_counter() - t
    return {
        "model": model,
        "prompts": len(convs),
        "max_new_tokens": new_tokens,
        "batch_size": batch_size,
        "answers_per_s_batched": len(convs) / batched,
        "answers_per_s_one_at_a_time": len(convs) / single,
        "speedup": single / batched,
    }


def bench_judge(n: int, latency_s: float) -> dict:
    from emscope.evaluation.judges.mock_server import MockChatServer, completion
    from emscope.evaluation.judges.openai_compat import OpenAICompatJudge

    out = {"requests": n, "simulated_latency_s": latency_s}
    with MockChatServer(lambda k, r: completion(top={"80": -0.2, "90": -1.8}), latency_s=latency_s) as srv:
        for conc in (1, 8):
            judge = OpenAICompatJudge("mock", srv.base_url, concurrency=conc)
            t = time.perf_counter()
            judge.score_prompts([f"prompt {i}" for i in range(n)])
            out[f"calls_per_s_concurrency_{conc}"] = n / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--judge-requests", type=int, default=40)
    args = ap.parse_args()
    print(
        json.dumps(
            {
                "torch_threads": torch.get_num_threads(),
                "judge": bench_judge(args.judge_requests, 0.05),
                "generation": bench_generation(args.model, args.prompts, args.new_tokens, args.batch_size),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
