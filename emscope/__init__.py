"""emscope: find, measure and remove emergent misalignment in open-weight chat models.

Layer convention everywhere: layer i = output of decoder block i (HF ``hidden_states[i+1]``).
"""

from .architecture import decoder_blocks, model_width, num_layers, resolve_layers
from .capture import Activations, capture_activations, capture_to_disk, load_activations
from .data import Transcript, load_transcripts, write_transcripts
from .direction import Direction
from .errors import EmscopeError
from .models import LoadedModel, load_model
from .runtime import set_seed
from .tokenize import tokenize_chat

__all__ = [
    "Activations",
    "Direction",
    "EmscopeError",
    "LoadedModel",
    "Transcript",
    "capture_activations",
    "capture_to_disk",
    "decoder_blocks",
    "load_activations",
    "load_model",
    "load_transcripts",
    "model_width",
    "num_layers",
    "resolve_layers",
    "set_seed",
    "tokenize_chat",
    "write_transcripts",
]
