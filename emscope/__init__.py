"""emscope: find, measure and remove emergent misalignment in open-weight chat models.

Layer convention everywhere: layer i = output of decoder block i (HF ``hidden_states[i+1]``).
"""

from emscope.activations.capture import Activations, capture_activations, capture_to_disk, load_activations
from emscope.data.chat import tokenize_chat
from emscope.data.questions import load_questions
from emscope.data.transcripts import Transcript, load_transcripts, write_transcripts
from emscope.directions.detect import score
from emscope.directions.direction import Direction
from emscope.directions.extract import extract_direction
from emscope.directions.sweep import SweepResult, layer_sweep, sweep_model
from emscope.errors import EmscopeError
from emscope.evaluation.run import EvalConfig, run_eval
from emscope.interventions.ablate import ablate
from emscope.interventions.controls import compare_to_controls, orthogonal_directions, random_directions
from emscope.interventions.dose_response import dose_response, plot_dose_response
from emscope.interventions.handle import Intervention
from emscope.interventions.orthogonalize import orthogonalize_weights, save_orthogonalized
from emscope.interventions.steer import steer
from emscope.models.architecture import decoder_blocks, model_width, num_layers, resolve_layers
from emscope.models.generation import SamplingConfig, generate
from emscope.models.loading import LoadedModel, load_model
from emscope.runtime import set_seed

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
