"""Errors that name the problem and the fix.

Every error attnviz raises on bad input derives from AttnvizError, so a notebook or widget can
catch one type and show the message as it is.
"""

from __future__ import annotations


class AttnvizError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class UnknownModelError(AttnvizError, KeyError):
    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ModelUnavailableError(AttnvizError):
    """The model is known but cannot be loaded here (offline, package missing)."""


class RemoteUnavailableError(ModelUnavailableError):
    """remote=True was asked for, but NDIF cannot be used from here (offline, no API key)."""


class NotAModelError(AttnvizError, TypeError):
    """Something other than a model where a model was expected (a name, None, ...)."""


class LayerOutOfRangeError(AttnvizError, IndexError):
    pass


class EmptyTextError(AttnvizError, ValueError):
    pass


class ContextTooLongError(AttnvizError, ValueError):
    pass


class StoreMismatchError(AttnvizError, ValueError):
    """An activation store or dictionary was made for another model, layer or hook."""


class CorruptStoreError(AttnvizError, OSError):
    """An activation store's chunk is truncated or does not match its manifest."""


class CorruptFileError(AttnvizError, OSError):
    """A dictionary or checkpoint file is unreadable, truncated or inconsistent with its config."""


class CheckpointMismatchError(AttnvizError, ValueError):
    """A training checkpoint was made with other settings than the run resuming it."""


class UnknownArchitectureError(AttnvizError, ValueError):
    """A dictionary config names an architecture no module registered."""


class UnknownCorpusError(AttnvizError, ValueError):
    """Neither a known corpus name nor an existing file or directory."""


class DictionaryMismatchError(AttnvizError, ValueError):
    """A dictionary was trained for another model, layer or shape than it is used with."""


class MissingDictionaryError(AttnvizError, LookupError):
    """No dictionary was given or shipped for the model and layer asked for."""


class DictionaryNotFoundError(MissingDictionaryError, FileNotFoundError):
    """A path that should hold a dictionary (cfg.json + weights) does not."""
