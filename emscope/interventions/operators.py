"""What an intervention does to a hidden state: small pure functions, chosen by name.

An operator takes the hidden states ``[..., width]``, the *unit* direction ``[width]``
and a coefficient, and returns the new hidden states. It never mutates its input. New
operators are added to `OPERATORS`; the hook machinery (`emscope.interventions.handle`) only
looks them up, it never branches on their names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from emscope.errors import lookup

# (hidden [..., D], unit [D], coefficient) -> new hidden [..., D]
Operator = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def add(hidden: torch.Tensor, unit: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Steering: ``h + coefficient * u`` (a negative coefficient subtracts)."""
    return hidden + coefficient * unit


def project_out(hidden: torch.Tensor, unit: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
    """Directional ablation: ``h - coefficient * (h . u) u`` (coefficient 1 removes the component)."""
    return hidden - coefficient * (hidden @ unit).unsqueeze(-1) * unit


def set_component(hidden: torch.Tensor, unit: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Clamp the component along ``u`` to ``coefficient``: ``h - (h . u) u + coefficient * u``."""
    return hidden + (coefficient - hidden @ unit).unsqueeze(-1) * unit


OPERATORS: dict[str, Operator] = {"add": add, "project_out": project_out, "set": set_component}


def bind(op: Operator, unit: torch.Tensor, coefficient: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """`op` with its direction and coefficient fixed: a function of the hidden states alone."""

    def apply(hidden: torch.Tensor) -> torch.Tensor:
        return op(hidden, unit, coefficient)

    return apply


def get_operator(name: str) -> Operator:
    return lookup(OPERATORS, name, "operator")
