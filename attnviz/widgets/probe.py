"""ArrayProbe: the smallest real attnviz widget, a smoke test of the front-end platform.

It sends one array with the binary codec (:mod:`attnviz.widgets.arrays`) and the browser
draws it as a heatmap (its first 2-D slice) with a dtype / shape / min / max line.
"""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets

from attnviz.widgets.arrays import WireDtype, encode_array
from attnviz.widgets.static import static_path


class ArrayProbe(anywidget.AnyWidget):
    """Show an array (numpy or torch, any device) as a heatmap.

    >>> ArrayProbe(pattern[0, 3], title="layer 0, head 3")  # doctest: +SKIP
    """

    array = traitlets.Dict().tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        array: Any,
        *,
        title: str = "",
        dtype: WireDtype = "float16",
        masked: Any = None,
        **kwargs: Any,
    ) -> None:
        # The bundle is looked up here, not at import, so that importing attnviz never needs a
        # front-end build and a rebuilt bundle is picked up by the next widget. anywidget reads
        # an `_esm` instance attribute set before its __init__ (a Path works only on the class).
        self._esm = static_path("arrays_probe").read_text(encoding="utf-8")
        super().__init__(array=encode_array(array, dtype, masked), title=title, **kwargs)

    def set_array(self, array: Any, dtype: WireDtype = "float16", masked: Any = None) -> None:
        """Replace the array shown (encoded again and synced to every view)."""
        self.array = encode_array(array, dtype, masked)
