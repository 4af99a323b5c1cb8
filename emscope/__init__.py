"""emscope: find, measure and remove emergent misalignment in open-weight chat models.

Layer convention everywhere: layer i = output of decoder block i (HF ``hidden_states[i+1]``).
"""

from .ablation import ablate
from .architecture import decoder_blocks, model_width, num_layers, resolve_layers
from .capture import Activations, capture_activations, capture_to_disk, load_activations
from .controls import compare_to_controls, orthogonal_directions, random_directions
from .data import Transcript, load_transcripts, write_transcripts
from .direction import Direction
from .directions import extract_direction
from .dose_response import dose_response, plot_dose_response
from .errors import EmscopeError
from .evaluate import EvalConfig, run_eval
from .generation import SamplingConfig, generate
from .intervention import Intervention
from .models import LoadedModel, load_model
from .orthogonalize import orthogonalize_weights, save_orthogonalized
from .questions import load_questions
from .runtime import set_seed
from .scoring import score
from .steering import steer
from .sweep import SweepResult, layer_sweep, sweep_model
from .tokenize import tokenize_chat

__all__ = [
    "Activations",
    "Direction",
    "EmscopeError",
    "EvalConfig",
    "Intervention",
    "LoadedModel",
    "SamplingConfig",
    "SweepResult",
    "Transcript",
    "ablate",
    "capture_activations",
    "capture_to_disk",
    "compare_to_controls",
    "decoder_blocks",
    "dose_response",
    "extract_direction",
    "generate",
    "layer_sweep",
    "load_activations",
    "load_model",
    "load_questions",
    "load_transcripts",
    "model_width",
    "num_layers",
    "orthogonal_directions",
    "orthogonalize_weights",
    "plot_dose_response",
    "random_directions",
    "resolve_layers",
    "run_eval",
    "save_orthogonalized",
    "score",
    "set_seed",
    "steer",
    "sweep_model",
    "tokenize_chat",
    "write_transcripts",
]
