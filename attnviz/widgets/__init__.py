"""Jupyter widgets (anywidget) and what they share: binary array transport, bundle lookup.

Widgets are imported from their own modules (``attnviz.widgets.probe``) so that importing
this package stays light.
"""

from attnviz.widgets.arrays import decode_array, encode_array, json_baseline_nbytes, payload_nbytes
from attnviz.widgets.static import MissingBundleError, static_path

__all__ = [
    "MissingBundleError",
    "decode_array",
    "encode_array",
    "json_baseline_nbytes",
    "payload_nbytes",
    "static_path",
]
