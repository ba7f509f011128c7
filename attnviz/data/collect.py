"""Run a model over a corpus and write one layer's attention activations to an ActivationStore.

Chunk i always holds contexts [i*chunk_contexts, (i+1)*chunk_contexts) and is computed in batches
that start at the chunk's first context, so a chunk's bytes do not depend on whether the collection
was interrupted: resuming skips the finished chunks (re-tokenising their text, which is cheap, and
checking it against their stored tokens) and computes the rest.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from attnviz.data.contexts import contexts
from attnviz.data.corpora import Corpus, get_corpus
from attnviz.data.store import (
    DTYPES,
    STORABLE_FIELDS,
    ActivationStore,
    n_contexts_for,
    position_dtype,
)
from attnviz.data.store_writer import StoreWriter
from attnviz.device import release_memory
from attnviz.errors import ContextTooLongError, StoreMismatchError
from attnviz.models.adapter import ModelAdapter
from attnviz.models.registry import DEFAULT_MODEL


def check_collect_args(
    adapter: ModelAdapter,
    layer: int,
    n_tokens: int,
    fields: Sequence[str],
    n_ctx: int,
    batch_size: int,
    chunk_contexts: int,
    dtype: str,
) -> tuple[str, ...]:
    """Fail before any work on arguments that cannot work; returns the fields as a tuple."""
    adapter.check_layer(layer)
    fields = tuple(fields)
    bad = [f for f in fields if f not in STORABLE_FIELDS]
    if bad or not fields:
        hint = (
            " (store q and k and recompute patterns with the adapter)" if "pattern" in bad else ""
        )
        raise ValueError(f"cannot store fields {bad}{hint}: choose from {STORABLE_FIELDS}")
    if len(set(fields)) != len(fields):
        raise ValueError(f"fields {fields} name a field twice")
    if n_ctx < 2:
        raise ValueError(f"n_ctx must be at least 2 (a BOS and one token), got {n_ctx}")
    if n_ctx > adapter.spec.n_ctx:
        raise ContextTooLongError(
            f"n_ctx={n_ctx} is longer than {adapter.spec.name} allows ({adapter.spec.n_ctx}): "
            f"use n_ctx <= {adapter.spec.n_ctx}"
        )
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    if batch_size < 1 or chunk_contexts < 1:
        raise ValueError(
            f"batch_size ({batch_size}) and chunk_contexts ({chunk_contexts}) must be >= 1"
        )
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {list(DTYPES)}")
    return fields


def compute_chunk(
    adapter: ModelAdapter,
    tokens: Tensor,
    layer: int,
    fields: tuple[str, ...],
    batch_size: int,
    dtype: torch.dtype,
) -> dict[str, Tensor]:
    """Activations of contexts [n n_ctx], flattened to tokens: field -> [n*n_ctx ...] on the CPU."""
    parts: dict[str, list[Tensor]] = {f: [] for f in fields}
    for start in range(0, tokens.shape[0], batch_size):
        acts = adapter.attention(tokens[start : start + batch_size], layer, fields)
        for f in fields:
            t = getattr(acts, f)
            parts[f].append(t.to(dtype).cpu().reshape(-1, *t.shape[2:]))
    n, n_ctx = tokens.shape
    out = {f: torch.cat(ts) for f, ts in parts.items()}
    out["tokens"] = tokens.reshape(-1).to(torch.int32)
    out["position"] = torch.arange(n_ctx, dtype=position_dtype(n_ctx)).repeat(n)
    return out


def collect_activations(
    adapter: ModelAdapter,
    corpus: Corpus | str | os.PathLike[str],
    layer: int,
    n_tokens: int,
    out_dir: str | os.PathLike[str],
    fields: Sequence[str] = ("resid_normed", "q", "k"),
    n_ctx: int = 128,
    batch_size: int = 8,
    chunk_contexts: int = 64,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
) -> ActivationStore:
    """Collect `layer`'s activations over at least `n_tokens` tokens of `corpus` into `out_dir`.

    Contexts are n_ctx tokens starting with the model's BOS; chunks of `chunk_contexts` contexts
    are written as they fill. Re-running with the same arguments resumes an interrupted
    collection (or returns the finished store); a store made with another model, layer, fields,
    corpus, n_ctx or dtype raises StoreMismatchError unless overwrite=True."""
    fields = check_collect_args(
        adapter, layer, n_tokens, fields, n_ctx, batch_size, chunk_contexts, dtype
    )
    corpus = get_corpus(corpus)
    header = {
        "model": adapter.spec.name,
        "spec": adapter.spec.to_dict(),
        "backend": adapter.backend,
        "layer": layer,
        "fields": list(fields),
        "dtype": dtype,
        "n_ctx": n_ctx,
        "corpus": {"name": corpus.name, "fingerprint": corpus.fingerprint},
        "chunk_contexts": chunk_contexts,
        "batch_size": batch_size,
    }
    target = n_contexts_for(n_tokens, n_ctx)
    rows = contexts(corpus, adapter.tokenizer, n_ctx, adapter.spec.bos_token_id, target)
    # The first context before touching the disk: an offline or empty corpus fails here.
    rows = itertools.chain([next(rows)], rows)
    with StoreWriter.open(out_dir, header, overwrite=overwrite) as writer:
        if not (writer.complete and (writer.n_contexts >= target or writer.corpus_exhausted)):
            _fill(
                writer, adapter, rows, corpus.name, layer, fields, n_tokens, target, batch_size,
                dtype, progress,
            )  # fmt: skip
            release_memory()  # the batches' activations and logits (~150 MB on Binder's 2 GB)
    return ActivationStore.open(out_dir)


def _fill(
    writer: StoreWriter,
    adapter: ModelAdapter,
    rows: Iterator[Tensor],
    corpus_name: str,
    layer: int,
    fields: tuple[str, ...],
    n_tokens: int,
    target: int,
    batch_size: int,
    dtype: str,
    progress: bool,
) -> None:
    """Compute every chunk of the target that the store does not hold yet."""
    per_chunk = writer.chunk_contexts
    n_ctx = writer.manifest["n_ctx"]
    n_chunks = -(-target // per_chunk)
    writer.set_target(n_tokens, target)
    for index in [i for i in writer.chunks if i >= n_chunks]:  # from a run with a larger target
        writer.remove_chunk(index)
    done = writer.chunks
    bar = tqdm(
        total=target * n_ctx,
        initial=sum(c.n_tokens for c in done.values()),
        unit="tok",
        unit_scale=True,
        desc=f"{adapter.spec.name} L{layer}",
        disable=not progress,
    )
    end = None  # set to the first chunk index past the end of the corpus when it runs out
    with bar:
        for index in range(n_chunks):
            want = min(per_chunk, target - index * per_chunk)
            block = list(itertools.islice(rows, want))
            if not block:
                end = index
                break
            tokens = torch.stack(block)
            stored = done.get(index)
            if stored is not None and stored.n_contexts == len(block):
                _check_same_tokens(writer, index, tokens)
                continue
            chunk = compute_chunk(adapter, tokens, layer, fields, batch_size, DTYPES[dtype])
            writer.write_chunk(index, chunk, len(block))
            bar.update(tokens.numel())
            if len(block) < want:
                end = index + 1
                break
    if end is not None:
        for index in [i for i in writer.chunks if i >= end]:
            writer.remove_chunk(index)  # nothing can follow the end of the corpus
        warnings.warn(
            f"the corpus {corpus_name!r} ran out after {writer.n_contexts} contexts "
            f"({writer.n_contexts * n_ctx} tokens) of the {target} asked for; the store holds "
            "what there was",
            stacklevel=3,
        )
    writer.finish(corpus_exhausted=end is not None)


def _check_same_tokens(writer: StoreWriter, index: int, tokens: Tensor) -> None:
    """A resumed run must re-create the stored contexts exactly, or its chunks would not fit."""
    if not torch.equal(writer.read_tokens(index).long(), tokens.reshape(-1)):
        raise StoreMismatchError(
            f"the tokens of {writer.chunks[index].file} in the store at {writer.root} differ from "
            "what the corpus and tokenizer give now (a changed tokenizer or BOS token?): collect "
            "into a new directory, or pass overwrite=True"
        )


@dataclass
class CollectConfig:
    """What `attnviz collect` (and the demo, which starts with a collection) is told."""

    model: str = DEFAULT_MODEL
    """Model name (see `attnviz models`)."""
    backend: str | None = None
    """transformer_lens or nnsight (default: the model's usual one)."""
    layer: int = 3
    """Attention layer, counted from 0."""
    tokens: int = 100_000
    """How many tokens to collect."""
    corpus: str = "pydocs"
    """Corpus name (see `attnviz corpora`), text file or folder."""
    n_ctx: int = 128
    """Tokens per context."""
    batch_size: int = 8
    """Contexts per forward pass."""
    fields: str = "resid_normed,q,k"
    """Comma-separated activations to keep (resid_pre, resid_normed, q, k, q_rot, k_rot, v, z)."""
    dtype: str = "float32"
    """Storage dtype (float32, float16, bfloat16)."""
    device: str | None = None
    """cuda / cpu (default: cuda when available)."""
    overwrite: bool = False
    """Replace a store made with other settings instead of refusing it."""
    out: str | None = None
    """Store directory (resumed if it exists)."""

    def field_list(self, required: Sequence[str] = ()) -> tuple[str, ...]:
        """`fields` as a tuple, with `required` ones added."""
        chosen = tuple(f.strip() for f in self.fields.split(",") if f.strip())
        return (*chosen, *(f for f in required if f not in chosen))


def collect_with_config(
    adapter: ModelAdapter, corpus: Corpus, cfg: CollectConfig, out: str | os.PathLike[str],
    fields: Sequence[str] | None = None,
) -> ActivationStore:  # fmt: skip
    """collect_activations with a CollectConfig's settings."""
    return collect_activations(
        adapter, corpus, layer=cfg.layer, n_tokens=cfg.tokens, out_dir=out,
        fields=fields or cfg.field_list(), n_ctx=cfg.n_ctx, batch_size=cfg.batch_size,
        dtype=cfg.dtype, overwrite=cfg.overwrite,
    )  # fmt: skip
