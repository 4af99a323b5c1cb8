"""Sampled answers to evaluation questions: batched, seeded per sample, resumable.

Every sample has its own seed (derived from the run seed, the question id, the paraphrase
and the sample index) and its own random stream: sampling is Gumbel-max on the
temperature-scaled, top-p-filtered logits with a per-row ``torch.Generator``, so an answer
does not depend on which other prompts shared its batch and `regenerate` can reproduce any
single record (up to floating-point differences that padding can cause in near-ties).

Generation goes through ``lm.model.generate`` with left padding, so it runs unchanged
inside `emscope.interventions.steer.steer` / ablation context managers: that is how a mitigation is
evaluated. Records are appended to a JSONL file batch by batch; a killed run restarts
where it stopped and never regenerates a record already written.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from emscope.data.chat import render_prompt
from emscope.data.questions import Question
from emscope.errors import DataFormatError
from emscope.models.context import context_length
from emscope.models.loading import LoadedModel
from emscope.records import append_jsonl, read_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingConfig:
    """How answers are sampled. ``temperature=0`` is greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    batch_size: int = 8

    def record_fields(self) -> dict[str, Any]:
        """What each record stores (batch size does not change answers, so it is left out)."""
        d = asdict(self)
        d.pop("batch_size")
        return d


def sample_seed(run_seed: int, question_id: str, paraphrase_index: int, sample_index: int) -> int:
    raw = f"{run_seed}|{question_id}|{paraphrase_index}|{sample_index}".encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:7], "big")


class _PerRowSampler:
    """A logits processor that turns greedy search into per-row seeded sampling (Gumbel-max)."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device) -> None:
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_scores, order = scores.sort(-1, descending=True)
            cum = sorted_scores.softmax(-1).cumsum(-1)
            drop_sorted = (cum - sorted_scores.softmax(-1)) >= self.top_p  # keeps at least the top token
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        noise = torch.stack(
            [torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.gens]
        ).clamp_(1e-20, 1 - 1e-7)
        return scores - torch.log(-torch.log(noise))


def _eos_ids(lm: LoadedModel) -> list[int]:
    ids: list[int] = []
    for v in (getattr(lm.model.generation_config, "eos_token_id", None), lm.tokenizer.eos_token_id):
        for x in v if isinstance(v, list | tuple) else [v]:
            if x is not None and x not in ids:
                ids.append(int(x))
    return ids


def check_prompts_fit(
    lm: LoadedModel, texts: Sequence[str], max_new_tokens: int, names: Sequence[str] | None = None
) -> None:
    """Refuse a prompt that leaves no room for `max_new_tokens` in the model's context.

    Past its context a model answers with noise (or nothing), and that answer would be judged
    as if it were real; `names` say which prompt in the error (default: its index).
    """
    context = context_length(lm)
    if context is None or not texts:
        return
    lengths = [len(ids) for ids in lm.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    for k, n in enumerate(lengths):
        if n + max_new_tokens > context:
            name = names[k] if names is not None else f"prompt {k}"
            fix = f"lower max_new_tokens to {context - n} or shorten it" if n < context else "shorten it"
            raise DataFormatError(
                f"{name} has {n} tokens; with max_new_tokens={max_new_tokens} that is over the model's context "
                f"of {context} tokens: {fix}"
            )


@torch.no_grad()
def generate(
    lm: LoadedModel,
    conversations: Sequence[Sequence[dict[str, str]]],
    config: SamplingConfig = SamplingConfig(),
    seeds: Sequence[int] | None = None,
) -> list[str]:
    """One sampled answer per conversation (a list of chat messages ending with the user's turn)."""
    from transformers import GenerationConfig, LogitsProcessorList

    seeds = list(seeds) if seeds is not None else [config.seed + i for i in range(len(conversations))]
    if len(seeds) != len(conversations):
        raise ValueError(f"got {len(seeds)} seeds for {len(conversations)} conversations")
    tok = lm.tokenizer
    texts = [render_prompt(tok, list(c)) for c in conversations]
    check_prompts_fit(lm, texts, config.max_new_tokens)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
    out: list[str] = [""] * len(texts)
    eos = _eos_ids(lm)
    gen_config = GenerationConfig(
        max_new_tokens=config.max_new_tokens,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0],
    )
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        for start in range(0, len(order), max(1, config.batch_size)):
            idx = order[start : start + config.batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(lm.device) for k, v in enc.items()}
            procs = LogitsProcessorList()
            if config.temperature > 0:
                procs.append(_PerRowSampler([seeds[i] for i in idx], config.temperature, config.top_p, lm.device))
            ids = lm.model.generate(**enc, generation_config=gen_config, logits_processor=procs)
            new = ids[:, enc["input_ids"].shape[1] :]
            for row, i in enumerate(idx):
                out[i] = tok.decode(new[row], skip_special_tokens=True).strip()
    finally:
        tok.padding_side = old_side
    return out


def question_messages(question: Question, paraphrase_index: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": question.system}] if question.system else []
    return [*msgs, {"role": "user", "content": question.paraphrases[paraphrase_index]}]


def record_key(rec: dict[str, Any]) -> tuple[str, int, int]:
    return (rec["question_id"], int(rec["paraphrase_index"]), int(rec["sample_index"]))


def planned_samples(questions: Sequence[Question], samples: int | None, run_seed: int) -> list[dict[str, Any]]:
    """The records a run will produce, without answers, in a fixed order."""
    plan = []
    for q in questions:
        for p, text in enumerate(q.paraphrases):
            for s in range(samples if samples is not None else q.samples_per_paraphrase):
                plan.append(
                    {
                        "question_id": q.id,
                        "paraphrase_index": p,
                        "sample_index": s,
                        "question": text,
                        "system": q.system,
                        "seed": sample_seed(run_seed, q.id, p, s),
                    }
                )
    return plan


def generate_responses(
    lm: LoadedModel,
    questions: Sequence[Question],
    config: SamplingConfig = SamplingConfig(),
    *,
    samples: int | None = None,
    out_path: str | os.PathLike[str] | None = None,
    model_label: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Answer every (question, paraphrase, sample); with `out_path`, resume from and append to it.

    `samples` overrides each question's ``samples_per_paraphrase``. Each record holds the
    question id, paraphrase index and text, sample index, its seed, the model label and
    the sampling parameters, and the answer.
    """
    from tqdm.auto import tqdm

    model = model_label or lm.spec
    gen = config.record_fields()
    path = Path(out_path) if out_path is not None else None
    done: dict[tuple[str, int, int], dict[str, Any]] = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for rec in read_jsonl(path, missing_ok=True, torn_tail_ok=True):  # a torn last line: see append_jsonl
            if rec.get("model") != model or rec.get("generation") != gen:
                raise DataFormatError(
                    f"{path} holds answers from another run (model {rec.get('model')!r}, sampling "
                    f"{rec.get('generation')}), not {model!r} with {gen}: use a fresh output directory"
                )
            done[record_key(rec)] = rec
        if done:
            log.info("resuming: %d answers already in %s", len(done), path)
    plan = planned_samples(questions, samples, config.seed)
    todo = [r for r in plan if record_key(r) not in done]
    prompts = {(r["question_id"], r["paraphrase_index"]): r for r in todo}  # one check per prompt, before any answer
    check_prompts_fit(
        lm,
        [render_prompt(lm.tokenizer, _messages(r)) for r in prompts.values()],
        config.max_new_tokens,
        [f"question {q!r} (paraphrase {p})" for q, p in prompts],
    )
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="generating", disable=not progress)
    step = max(1, config.batch_size) * 4  # several batches per flush: length-sorting still has room
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        convs = [_messages(r) for r in chunk]
        answers = generate(lm, convs, config, seeds=[r["seed"] for r in chunk])
        rows = [{**r, "model": model, "generation": gen, "answer": a} for r, a in zip(chunk, answers, strict=True)]
        if path is not None:
            append_jsonl(path, rows)
        for r in rows:
            done[record_key(r)] = r
        bar.update(len(rows))
    bar.close()
    return [done[record_key(r)] for r in plan]


def _messages(rec: dict[str, Any]) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": rec["system"]}] if rec.get("system") else []
    return [*msgs, {"role": "user", "content": rec["question"]}]


def regenerate(lm: LoadedModel, record: dict[str, Any]) -> str:
    """Reproduce one record's answer from its seed and sampling parameters."""
    g = record["generation"]
    config = SamplingConfig(g["temperature"], g["top_p"], g["max_new_tokens"], g["seed"], batch_size=1)
    return generate(lm, [_messages(record)], config, seeds=[record["seed"]])[0]
