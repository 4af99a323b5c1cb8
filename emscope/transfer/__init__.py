"""Cross-model transfer: activation maps between models, mapped directions judged against their controls.

- `emscope.transfer.paired`: both models read the same transcripts (pooled per transcript);
- `emscope.transfer.maps`: ridge / least-squares / Procrustes maps, saved with provenance and held-out R^2;
- `emscope.transfer.mapped`: `map_direction` and the mapped-random controls;
- `emscope.transfer.pair`, `emscope.transfer.behaviour`: geometry, detection and steering beside controls;
- `emscope.transfer.single`, `emscope.transfer.matrix`: one pair (`transfer_pair`) or every directed pair
  of a set of models (`transfer_matrix`), with donor/receiver scores and bootstrap intervals.

Submodules are imported on use: ``import emscope.transfer`` loads nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emscope.transfer.config import TransferConfig
    from emscope.transfer.mapped import map_direction
    from emscope.transfer.maps import ActivationMap, fit_map
    from emscope.transfer.matrix import TransferMatrix, transfer_matrix
    from emscope.transfer.paired import paired_activations
    from emscope.transfer.single import TransferPair, transfer_pair

__all__ = [
    "ActivationMap",
    "TransferConfig",
    "TransferMatrix",
    "TransferPair",
    "fit_map",
    "map_direction",
    "paired_activations",
    "transfer_matrix",
    "transfer_pair",
]
_WHERE = {
    "ActivationMap": "maps",
    "fit_map": "maps",
    "TransferConfig": "config",
    "TransferMatrix": "matrix",
    "transfer_matrix": "matrix",
    "TransferPair": "single",
    "transfer_pair": "single",
    "map_direction": "mapped",
    "paired_activations": "paired",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'emscope.transfer' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"emscope.transfer.{_WHERE[name]}"), name)
