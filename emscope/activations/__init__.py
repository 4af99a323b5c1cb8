"""Hooks on decoder blocks, the registry of sites in the model, and activation capture (memory and disk)."""
