"""Sparse dictionaries: one module per architecture, a registry, save / load as cfg.json +
safetensors for every architecture."""

from attnviz.dictionaries.base import Dictionary
from attnviz.dictionaries.io import load_dictionary, save_dictionary
from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import QKConfig, QKDictionary
from attnviz.dictionaries.registry import architectures, get_architecture, register
from attnviz.dictionaries.sparse_coder import SparseCoder

__all__ = [
    "Dictionary",
    "PairTable",
    "QKConfig",
    "QKDictionary",
    "SparseCoder",
    "architectures",
    "get_architecture",
    "load_dictionary",
    "register",
    "save_dictionary",
]
