"""attnviz: live notebook widgets for understanding transformer attention with sparse dictionaries.

Data flows one way: model -> activations -> dictionaries -> analysis -> widgets.
"""

from attnviz._version import __version__
from attnviz.errors import AttnvizError
from attnviz.models import DEFAULT_MODEL, load_model, wrap

__all__ = ["DEFAULT_MODEL", "AttnvizError", "__version__", "load_model", "wrap"]
