"""emscope: find, measure and remove emergent misalignment in open-weight chat models.

The names below are the ones a user reaches for first; everything else is imported from its subpackage
(`emscope.data`, `emscope.models`, `emscope.activations`, `emscope.directions`, `emscope.interventions`,
`emscope.evaluation`, `emscope.organisms`, `emscope.demos`). Fine-tuning (`finetune`, `FinetuneConfig`) needs the
`train` extra when it runs, not when it is imported.

Layer convention everywhere: layer i = output of decoder block i (HF ``hidden_states[i+1]``, never the final norm).
"""

from __future__ import annotations

from emscope.activations.capture import Activations, capture_activations, capture_to_disk, load_activations
from emscope.artifacts import emscope_version, load_result
from emscope.data.transcripts import Transcript, load_transcripts
from emscope.directions.detect import score
from emscope.directions.direction import Direction
from emscope.directions.extract import extract_direction
from emscope.directions.sweep import SweepResult, sweep_model
from emscope.errors import EmscopeError
from emscope.evaluation.run import EvalConfig, run_eval
from emscope.interventions.ablate import ablate
from emscope.interventions.controls import compare_to_controls, orthogonal_directions, random_directions
from emscope.interventions.dose_response import dose_response
from emscope.interventions.handle import Intervention
from emscope.interventions.orthogonalize import orthogonalize_weights
from emscope.interventions.steer import steer
from emscope.models.loading import LoadedModel, load_model
from emscope.organisms.finetune import FinetuneConfig, finetune

__version__ = emscope_version()

__all__ = [
    "Activations",
    "Direction",
    "EmscopeError",
    "EvalConfig",
    "FinetuneConfig",
    "Intervention",
    "LoadedModel",
    "SweepResult",
    "Transcript",
    "__version__",
    "ablate",
    "capture_activations",
    "capture_to_disk",
    "compare_to_controls",
    "dose_response",
    "extract_direction",
    "finetune",
    "load_activations",
    "load_model",
    "load_result",
    "load_transcripts",
    "orthogonal_directions",
    "orthogonalize_weights",
    "random_directions",
    "run_eval",
    "score",
    "steer",
    "sweep_model",
]
