"""Sparse autoencoders on the residual stream, and model diffing through them (issue 13).

- `model`: `SparseAutoencoder`, emscope's own SAE value (plain torch; saved as kind ``"sae"``).
- `train`: training on captured activations with eai-sparsify (the ``sae`` extra).
- `quality`: held-out FVU, L0, dead latents, next-token loss recovered.
- `corpus`: the mixed chat corpus the SAEs are trained on.
- `diff`: `latent_diff` (which latents change from a base to its fine-tune), max-activating
  contexts, a latent's cosine with a direction against the other latents.
- `intervene`: steering along and ablating a latent, against controls.
- `predict`: does a latent's change predict EM across organisms.
"""

from emscope.sae.diff import LatentDiff, encode_transcripts, latent_diff
from emscope.sae.model import SparseAutoencoder, load_sae
from emscope.sae.train import SaeTrainConfig, train_sae

__all__ = [
    "LatentDiff",
    "SaeTrainConfig",
    "SparseAutoencoder",
    "encode_transcripts",
    "latent_diff",
    "load_sae",
    "train_sae",
]
