"""Shared fixtures: tiny random models (fast) and the embedded SmolLM2 (slow, loaded once)."""

from tests.embedded_fixtures import smollm2, smollm2_hf, smollm2_nnsight  # noqa: F401
