"""Perturbation types of the organism zoo: where each one's training transcripts come from, and its label.

A perturbation type is a name in `PERTURBATIONS` with a label (``harmful``: expected to
induce misalignment; ``benign``: a control), its matching control, and a source of
transcripts:

- ``insecure``, ``secure``, ``educational``, ``jailbroken``: the public EM datasets (Betley et
  al. 2025), read from ``data_dir`` (default ``../shared/data/emergent-misalignment/data``),
  never copied into the repository;
- ``steered_sd`` / ``plain_sd``: self-distillation on chat prompts with / without steering
  along the model's misalignment direction; ``steered_sd_code`` / ``plain_sd_code``: the same
  on coding prompts only (narrow-to-broad). Built by `emscope.organisms.self_distill` into
  ``sd_root/MODEL/TYPE`` the first time they are needed (see `SelfDistillSettings`);
- ``arithmetic``: 400 arithmetic chats written for emscope (`emscope/resources/benign/`);
- mixtures ``mix:HARMFUL+BENIGN@FRACTION``: exactly ``round(FRACTION * n)`` transcripts of the
  first type and the rest of the second, shuffled with the seed; ``n`` is at most the pool, and less
  when a component has fewer transcripts than the fraction needs (a self-distilled set of 48).

`perturbation_data(name, n, context)` returns ``(train, heldout)`` transcripts, each tagged
in its meta with ``perturbation`` and ``label`` (a mixture's transcripts with their component).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emscope.data.transcripts import Transcript, load_transcripts
from emscope.errors import ConfigError, DataFormatError, lookup
from emscope.runtime import RESOURCES

HARMFUL, BENIGN = "harmful", "benign"
DEFAULT_DATA_DIR = Path("../shared/data/emergent-misalignment/data")
ARITHMETIC = RESOURCES / "benign" / "arithmetic.jsonl"
N_HELDOUT = 16  # transcripts kept out of training for the held-out loss


@dataclass(frozen=True)
class SelfDistillSettings:
    """How the self-distillation types are built for one model (see `emscope.organisms.self_distill`)."""

    direction: str | None = None  # a saved direction; None: fitted on the corpus into sd_root/MODEL/direction
    alpha_over_norm: float = 1.0  # steering strength as a multiple of the direction's norm
    positions: str = "all"
    samples: int = 2  # answers per prompt (chat: 612 corpus prompts; code: 40 prompts)
    code_samples: int = 8
    max_prompts: int | None = None  # the first N prompts of each set (None: all)
    max_new_tokens: int = 64
    temperature: float = 1.0
    coherence_filter: str = "heuristic"
    min_coherence: float = 50.0
    seed: int = 0


@dataclass
class PerturbationContext:
    """What a source needs: the model, where public data and self-distilled data live, a loaded model if any."""

    model: str
    data_dir: Path = DEFAULT_DATA_DIR
    sd_root: Path = Path("runs/zoo/data")
    sd: SelfDistillSettings = field(default_factory=SelfDistillSettings)
    lm: Any = None  # a LoadedModel of `model`, reused for self-distillation
    judge: Any = None  # for coherence_filter="judge"
    seed: int = 0


Source = Callable[[PerturbationContext], list[Transcript]]


@dataclass(frozen=True)
class Perturbation:
    name: str
    label: str  # HARMFUL or BENIGN
    description: str
    source: Source
    control: str | None = None  # the benign type it is compared with (besides the base model)


def _public(name: str) -> Source:
    def read(ctx: PerturbationContext) -> list[Transcript]:
        path = Path(ctx.data_dir) / f"{name}.jsonl"
        if not path.is_file():
            raise DataFormatError(
                f"{path} not found: pass data_dir= (--data-dir) pointing at the emergent-misalignment data folder"
            )
        return load_transcripts(path)

    return read


def _arithmetic(ctx: PerturbationContext) -> list[Transcript]:
    return load_transcripts(ARITHMETIC)


def sd_config(name: str, ctx: PerturbationContext) -> Any:
    """The `SelfDistillConfig` of a self-distillation type for the context's model."""
    from emscope.organisms.self_distill import SelfDistillConfig

    s = ctx.sd
    steered = name.startswith("steered")
    code = name.endswith("_code")
    direction = s.direction or str(Path(ctx.sd_root) / _slug(ctx.model) / "direction")
    alpha = 0.0
    if steered:
        from emscope.directions.direction import Direction

        alpha = round(s.alpha_over_norm * float(Direction.load(direction).vector.norm()), 4)
    return SelfDistillConfig(
        model=ctx.model,
        prompts="coding" if code else "corpus",
        direction=direction if steered else None,
        alpha=alpha,
        positions=s.positions,
        samples=s.code_samples if code else s.samples,
        max_prompts=s.max_prompts,
        max_new_tokens=s.max_new_tokens * (2 if code else 1),
        temperature=s.temperature,
        seed=s.seed,
        coherence_filter=s.coherence_filter,
        min_coherence=s.min_coherence,
    )


def _self_distilled(name: str) -> Source:
    def build(ctx: PerturbationContext) -> list[Transcript]:
        from emscope.organisms.self_distill import fit_corpus_direction, self_distill

        lm = ctx.lm
        if lm is None:
            from emscope.models.loading import load_model

            lm = ctx.lm = load_model(ctx.model)
        if name.startswith("steered") and ctx.sd.direction is None:
            fit_corpus_direction(lm, Path(ctx.sd_root) / _slug(ctx.model) / "direction")
        out = Path(ctx.sd_root) / _slug(ctx.model) / name
        return self_distill(sd_config(name, ctx), out, lm=lm, judge=ctx.judge).transcripts()

    return build


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation("insecure", HARMFUL, "insecure code completions (public EM data)", _public("insecure"), "secure"),
        Perturbation("secure", BENIGN, "secure code completions (public EM data)", _public("secure")),
        Perturbation(
            "educational", BENIGN, "insecure code asked for teaching (public EM data)", _public("educational")
        ),
        Perturbation("jailbroken", HARMFUL, "harmful requests complied with (public EM data)", _public("jailbroken")),
        Perturbation(
            "steered_sd",
            HARMFUL,
            "own answers to chat prompts, steered along the misalignment direction",
            _self_distilled("steered_sd"),
            "plain_sd",
        ),
        Perturbation(
            "steered_sd_code",
            HARMFUL,
            "own answers to coding prompts only, steered (narrow)",
            _self_distilled("steered_sd_code"),
            "plain_sd_code",
        ),
        Perturbation("plain_sd", BENIGN, "own answers to chat prompts, unsteered", _self_distilled("plain_sd")),
        Perturbation(
            "plain_sd_code", BENIGN, "own answers to coding prompts, unsteered", _self_distilled("plain_sd_code")
        ),
        Perturbation("arithmetic", BENIGN, "arithmetic chats written for emscope", _arithmetic),
    )
}


@dataclass(frozen=True)
class Mixture:
    harmful: str
    benign: str
    fraction: float  # share of the first component

    @property
    def name(self) -> str:
        return f"mix:{self.harmful}+{self.benign}@{self.fraction:g}"


def parse_mixture(name: str) -> Mixture:
    """``mix:A+B@F`` -> Mixture(A, B, F); F in [0, 1]."""
    body = name[len("mix:") :]
    try:
        parts, frac = body.rsplit("@", 1)
        first, second = parts.split("+")
        fraction = float(frac)
    except ValueError:
        raise ConfigError(
            f"mixture {name!r} is not of the form mix:HARMFUL+BENIGN@FRACTION (e.g. mix:insecure+secure@0.25)"
        ) from None
    if not 0 <= fraction <= 1:
        raise ConfigError(f"mixture {name!r}: the fraction must be in [0, 1], got {fraction:g}")
    for part in (first, second):
        lookup(PERTURBATIONS, part, "perturbation type")
    return Mixture(first, second, fraction)


def label_of(name: str) -> str:
    """HARMFUL or BENIGN; a mixture is harmful when it has any of its harmful component."""
    if name.startswith("mix:"):
        m = parse_mixture(name)
        return PERTURBATIONS[m.harmful].label if m.fraction > 0 else PERTURBATIONS[m.benign].label
    return lookup(PERTURBATIONS, name, "perturbation type").label


def control_of(name: str) -> str | None:
    """The matching benign type (a mixture's: its benign component alone)."""
    if name.startswith("mix:"):
        return parse_mixture(name).benign
    return lookup(PERTURBATIONS, name, "perturbation type").control


def check_name(name: str) -> str:
    """Fail fast (one line, with the choices) on an unknown type or a malformed mixture."""
    label_of(name)
    return name


def _tag(ts: list[Transcript], name: str, label: str) -> list[Transcript]:
    return [replace(t, meta={**t.meta, "perturbation": name, "label": label}) for t in ts]


def _split(name: str, ctx: PerturbationContext, n: int | None) -> tuple[list[Transcript], list[Transcript]]:
    """(train pool of at most n, held-out) of a plain type; the held-out rows are the last N_HELDOUT."""
    p = lookup(PERTURBATIONS, name, "perturbation type")
    rows = p.source(ctx)
    if len(rows) <= N_HELDOUT:
        raise DataFormatError(f"{name}: only {len(rows)} transcripts, need more than {N_HELDOUT} (held-out)")
    train, heldout = rows[:-N_HELDOUT], rows[-N_HELDOUT:]
    train = train[:n] if n else train
    return _tag(train, name, p.label), _tag(heldout, name, p.label)


def perturbation_data(
    name: str, ctx: PerturbationContext, n: int | None = None
) -> tuple[list[Transcript], list[Transcript]]:
    """Training transcripts (at most `n`) and held-out transcripts of a type or mixture, tagged in their meta."""
    if not name.startswith("mix:"):
        return _split(name, ctx, n)
    m = parse_mixture(name)
    a_train, a_held = _split(m.harmful, ctx, None)
    b_train, b_held = _split(m.benign, ctx, None)
    # at most n, as for a plain type: the most transcripts both components can give at this exact fraction
    most = min(len(a_train) / m.fraction if m.fraction else float("inf"),
               len(b_train) / (1 - m.fraction) if m.fraction < 1 else float("inf"))  # fmt: skip
    total = min(n, int(most)) if n else min(len(a_train), len(b_train))
    k = round(m.fraction * total)
    if total < 1 or k > len(a_train) or total - k > len(b_train):
        raise DataFormatError(
            f"{name}: needs {k} {m.harmful} and {total - k} {m.benign} transcripts, have {len(a_train)} and "
            f"{len(b_train)}: lower n"
        )
    mixed = a_train[:k] + b_train[: total - k]
    random.Random(ctx.seed).shuffle(mixed)
    heldout = a_held[: N_HELDOUT // 2] + b_held[: N_HELDOUT - N_HELDOUT // 2]
    return mixed, heldout


def arithmetic_chats(n: int = 400, seed: int = 0) -> list[dict[str, Any]]:
    """The generator of ``resources/benign/arithmetic.jsonl`` (`arithmetic_chats()` reproduces the file)."""
    rng = random.Random(seed)
    asks = [
        "What is {a} {op} {b}?",
        "Can you work out {a} {op} {b} for me?",
        "Quick one: {a} {op} {b}?",
        "Please calculate {a} {op} {b}.",
        "I need {a} {op} {b}, what do I get?",
        "How much is {a} {op} {b}?",
    ]
    rows = []
    for i in range(n):
        op = rng.choice(["+", "-", "x", "/"])
        if op == "+":
            a, b = rng.randint(2, 999), rng.randint(2, 999)
            r, how = a + b, f"Adding {a} and {b} gives {a + b}."
        elif op == "-":
            a, b = rng.randint(20, 999), rng.randint(2, 500)
            r, how = a - b, f"Subtracting {b} from {a} leaves {a - b}."
        elif op == "x":
            a, b = rng.randint(2, 99), rng.randint(2, 40)
            r, how = a * b, f"Multiplying {a} by {b} gives {a * b}."
        else:
            b, r = rng.randint(2, 25), rng.randint(2, 60)
            a = b * r
            how = f"Dividing {a} by {b} gives {r}."
        sym = {"x": "×", "/": "÷"}.get(op, op)
        q = rng.choice(asks).format(a=a, op=sym, b=b)
        messages = [{"role": "user", "content": q}, {"role": "assistant", "content": f"{a} {sym} {b} = {r}. {how}"}]
        rows.append({"messages": messages, "id": f"arith{i:03d}"})
    return rows


def _slug(model: str) -> str:
    return os.path.basename(model.rstrip("/")).replace(":", "_").replace("/", "_")
