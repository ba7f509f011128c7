"""Sparse dictionaries: one module per architecture, save / load as cfg.json + safetensors."""

from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import ARCHITECTURES, QKConfig, QKDictionary
from attnviz.dictionaries.sparse_coder import SparseCoder

__all__ = ["ARCHITECTURES", "PairTable", "QKConfig", "QKDictionary", "SparseCoder"]
