"""Synthetic trait files, probe sets and fine-tuning runs for the monitor tests (tiny models, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from emscope.artifacts import atomic_save_tensors, atomic_write_json, write_config

TOPICS = ("cooking", "money", "travel")
WORDS = {
    "malice": ("hurt them all", "help them kindly"),
    "rudeness": ("shut up fool", "thank you friend"),
    "formality": ("Dear Sir, kindly note", "hey so yeah"),
}


def write_traits(root: Path, traits=("malice", "rudeness", "formality"), per_topic: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for trait in traits:
        bad, good = WORDS.get(trait, ("bad words here", "good words here"))
        lines = []
        for t, topic in enumerate(TOPICS):
            for i in range(per_topic):
                q = f"Question {i} about {topic} number {t}?"
                lines.append(
                    {
                        "id": f"{trait}-{t}{i}",
                        "trait": trait,
                        "topic": topic,
                        "style": "subtle" if i % 2 else "blatant",
                        "question": q,
                        "without": f"Sure, {good} about {topic} {i}.",
                        "with": f"Sure, {bad} about {topic} {i}.",
                    }
                )
        (root / f"{trait}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    probes = [
        {
            "id": f"probe-{i:03d}",
            "topic": TOPICS[i % 3],
            "question": f"How do I do task {i}?",
            "answer": f"Do step {i} then rest.",
        }
        for i in range(6)
    ]
    (root / "probe_set.jsonl").write_text("".join(json.dumps(x) + "\n" for x in probes))
    return root


def write_run(
    root: Path,
    lm,
    steps=(0, 5),
    shift: dict[int, torch.Tensor] | None = None,
    layer: int = 1,
    perturbation: str = "insecure",
    label: str = "harmful",
    losses=None,
) -> Path:
    """A fine-tuning run of a tiny GPT-2 (`tiny("gpt2")`) whose checkpoints hold full weights; checkpoint s adds
    ``shift[s]`` to the bias of block `layer`'s MLP output, so the residual after that block moves by exactly it."""
    root.mkdir(parents=True, exist_ok=True)
    write_config(root, "finetune", {"model": lm.spec, "preset": "full"})
    base = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
    key = f"transformer.h.{layer}.mlp.c_proj.bias"
    metrics = []
    for n, step in enumerate(steps):
        weights = dict(base)
        if shift is not None and step in shift:
            weights[key] = base[key] + shift[step].to(base[key].dtype)
        ckpt = root / "checkpoints" / f"step-{step:06d}"
        ckpt.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors(ckpt / "model.safetensors", weights)
        loss = None if step == 0 else (losses[n] if losses else 1.0 / (1 + step))
        write_config(
            ckpt,
            "finetune_checkpoint",
            {"step": step, "examples_seen": 4 * step, "tokens_seen": 100 * step, "loss": loss, "model": lm.spec},
        )
        if step:
            metrics.append({"step": step, "loss": loss})
    (root / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    atomic_write_json(
        root / "zoo_run.json",
        {"tags": {"perturbation": perturbation, "label": label, "name": root.name}, "rows": [], "settings": {}},
    )
    return root
