"""Reversible interventions (steer, ablate, orthogonalize) and their specificity controls, measures and
dose-response curves."""
