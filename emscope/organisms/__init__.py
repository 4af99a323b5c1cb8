"""Model organisms: LoRA / rank-1 fine-tuning with resumable checkpoints, re-alignment, adapter reading."""
