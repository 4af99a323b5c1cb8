"""Behavioural evaluation: sampled answers to free-form questions, judges (`evaluation.judges`), EM rates with
intervals, code spillover."""
