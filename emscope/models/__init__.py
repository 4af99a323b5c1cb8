"""Loading models (embedded GGUF, local, hub), per-family structure facts, organism directories, generation."""
