"""Before an SAE is used on a model: does it reconstruct that model's activations at its site?

Shape checks pass for an SAE of the right width at the wrong hook (z of another layer, or v read
as z), which is the most common way a loaded SAE silently produces nonsense. A few tokens
through the model settle it: FVU above the bound (1.0 = no better than predicting the mean)
is an error naming the site, layer and FVU seen.
"""

from __future__ import annotations

from typing import Any

import torch

from attnviz.analysis.metrics import fvu
from attnviz.dictionaries.sae import SAE
from attnviz.errors import DictionaryMismatchError

CHECK_TEXT = (
    "The committee met on Tuesday to discuss the budget for the coming year. Several members "
    "argued that the library needed new computers, while others wanted to repair the roof "
    "first. In the end they agreed to do both, spread over two years.\n\n"
    "def mean(values):\n    return sum(values) / len(values)\n\n"
    "When Mary and John went to the store, John gave a drink to Mary. The river rose three "
    "metres overnight, and by morning the old bridge was closed to traffic."
)
"""Default text of the check: prose, code and a repeated name (about 100 tokens)."""
READABLE_SITES = ("z", "v", "resid_pre")
"""Sites model.attention returns (the others need hooks after the attention: not built yet)."""


def site_activations(model: Any, sae: SAE, tokens: torch.Tensor) -> torch.Tensor:
    """The SAE's input for `tokens`: [batch, pos, d_in] (several layers concatenated)."""
    site = sae.cfg.site
    if site not in READABLE_SITES:
        raise NotImplementedError(
            f"reading {site} from a model is not built yet ({', '.join(READABLE_SITES)} are)"
        )
    parts = []
    for layer in sae.cfg.layers:
        x = getattr(model.attention(tokens, layer, [site]), site)
        parts.append(x if site == "resid_pre" else x.flatten(-2))
    return torch.cat(parts, dim=-1)


@torch.no_grad()
def verify_on_model(
    sae: SAE, model: Any, tokens: torch.Tensor | None = None, max_fvu: float = 1.0
) -> float:
    """Check shapes, then the reconstruction on a few tokens; returns the FVU seen (relative to
    the mean of those activations). Raises DictionaryMismatchError above `max_fvu`."""
    sae.check_compatible(model.spec)
    if tokens is None:
        tokens = model.to_tokens(CHECK_TEXT)
    x = site_activations(model, sae, tokens).to(device=sae.W_enc.device, dtype=sae.W_enc.dtype)
    x = x[:, 1:]  # the first position (BOS) is an outlier at many sites
    seen = fvu(x, sae.decode(sae.encode(x)), vector_ndim=1)
    if not seen <= max_fvu:
        c = sae.cfg
        raise DictionaryMismatchError(
            f"this {c.architecture} SAE for {c.site} of layer(s) {c.layers} ({c.model}) rebuilds "
            f"{model.spec.name}'s {c.site} at layer(s) {c.layers} with FVU {seen:.3g} on "
            f"{x.shape[0] * x.shape[1]} tokens (bound {max_fvu}): it was trained for another site, "
            "layer or model. Check its hook name and the model it names."
        )
    return seen
