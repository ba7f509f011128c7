"""Model access: one adapter interface, two backends (TransformerLens, nnsight)."""

from attnviz.models.adapter import (
    ACTIVATION_FIELDS,
    AttentionActivations,
    ModelAdapter,
    ModelSpec,
    QKWeights,
)
from attnviz.models.interventions import (
    AddToResidual,
    AddToZ,
    Intervention,
    ReplacePattern,
    Splice,
)
from attnviz.models.loading import as_adapter, load_model, wrap
from attnviz.models.registry import DEFAULT_MODEL, KNOWN_MODELS

__all__ = [
    "ACTIVATION_FIELDS",
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "AddToResidual",
    "AddToZ",
    "AttentionActivations",
    "Intervention",
    "ModelAdapter",
    "ModelSpec",
    "QKWeights",
    "ReplacePattern",
    "Splice",
    "as_adapter",
    "load_model",
    "wrap",
]
