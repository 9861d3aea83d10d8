"""Evaluation (stage 6) on lm-evaluation-harness, with offline task YAMLs."""
