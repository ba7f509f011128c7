"""PatternExplorer: a layer's true attention pattern beside its QK-dictionary reconstructions.

>>> PatternExplorer(model, "The cat sat on the mat because it was tired")  # doctest: +SKIP

For the selected head, four heatmaps side by side: the model's pattern, the transcoders' q̂·k̂
pattern, the masked feature-pair map's pattern, and the difference of a reconstruction from the
truth; above them a thumbnail of every head with its KL. Hovering a cell shows its destination
and source tokens and the three values. Without ``qk``, the QK transcoders shipped for the model
are used (SmolLM2-135M: layers 3, 15, 25).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from attnviz.widgets.qk_widget import QKWidget

__all__ = ["PatternExplorer"]


class PatternExplorer(QKWidget):
    """True vs reconstructed attention for one layer of a prompt, live.

    ``panels`` also holds "diff_transcoder" and "diff_masked" (reconstruction minus truth,
    pooled by largest magnitude when the prompt is long)."""

    BUNDLE = "pattern_explorer"

    def shown_panels(self, full: dict[str, Tensor]) -> dict[str, tuple[Tensor, bool]]:
        out = {name: (pattern, False) for name, pattern in full.items()}
        # In the patterns' own dtype (bfloat16 for long prompts: within the wire's precision).
        true = full["true"]
        out["diff_transcoder"] = (full["transcoder"] - true, True)
        if "masked" in full:
            out["diff_masked"] = (full["masked"] - true, True)
        return out

    def figure(self) -> Any:
        names = {"true": "model", "transcoder": "transcoder", "masked": "masked map"}
        panels = {label: self.panels[k] for k, label in names.items() if k in self.panels}
        panels["transcoder − model"] = self.panels["diff_transcoder"]
        kl = self.kl.get("transcoder", [])
        kl_text = f" · KL {kl[self.head]:.3f}" if kl else ""
        if self.kl.get("masked"):
            kl_text += f" · masked map {self.kl['masked'][self.head]:.3f}"
        if self.kl.get("bias"):  # what the kept pairs improve on
            kl_text += f" · bias terms alone {self.kl['bias'][self.head]:.3f}"
        return self._pattern_figure(panels, signed=["transcoder − model"], note=kl_text)
