"""Cut a corpus into fixed-length token contexts.

Documents are tokenised and concatenated into one stream, each document followed by a separator
(the BOS / end-of-text token), and the stream is cut into rows. When the model has a BOS token
every row starts with it, as the model saw BOS at position 0 in training: a row is
[bos] + the next n_ctx - 1 tokens of the stream. Everything is deterministic, so the same corpus
and tokenizer give the same rows in the same order, which is what lets a collection resume.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from attnviz.data.corpora import Corpus, get_corpus
from attnviz.errors import EmptyTextError

TOKENIZE_BATCH = 64  # documents per tokenizer call: fast tokenizers parallelise within a call


def token_stream(corpus: Corpus, tokenizer: Any, sep_token_id: int | None) -> Iterator[list[int]]:
    """Token ids of each document, each followed by `sep_token_id` (when not None)."""
    docs = iter(corpus.documents())
    while batch := list(itertools.islice(docs, TOKENIZE_BATCH)):
        # verbose=False: long documents are fine here, they are cut into contexts below.
        ids = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        for row in ids:
            yield [*row, sep_token_id] if sep_token_id is not None else list(row)


def contexts(
    corpus: Corpus | str | os.PathLike[str],
    tokenizer: Any,
    n_ctx: int,
    bos_token_id: int | None,
    n_contexts: int | None = None,
    sep_token_id: int | None = None,
) -> Iterator[Tensor]:
    """Token contexts, each a LongTensor [n_ctx], until the corpus or `n_contexts` runs out.

    The separator between documents is `sep_token_id`, by default the BOS token, else the
    tokenizer's end-of-text token. A final part shorter than a row is dropped."""
    corpus = get_corpus(corpus)
    if n_ctx < 2:
        raise ValueError(f"n_ctx must be at least 2 (a BOS and one token), got {n_ctx}")
    if n_contexts is not None and n_contexts < 0:
        raise ValueError(f"n_contexts must be >= 0, got {n_contexts}")
    if sep_token_id is None:
        sep_token_id = bos_token_id
        if sep_token_id is None:
            sep_token_id = getattr(tokenizer, "eos_token_id", None)
    return _rows(corpus, tokenizer, n_ctx, bos_token_id, n_contexts, sep_token_id)


def _rows(
    corpus: Corpus,
    tokenizer: Any,
    n_ctx: int,
    bos_token_id: int | None,
    n_contexts: int | None,
    sep_token_id: int | None,
) -> Iterator[Tensor]:
    body = n_ctx - 1 if bos_token_id is not None else n_ctx  # stream tokens per row
    prefix = [bos_token_id] if bos_token_id is not None else []
    buffer: list[int] = []
    start = 0  # index of the first unused token in buffer
    made = seen = 0
    if n_contexts == 0:
        return
    for ids in token_stream(corpus, tokenizer, sep_token_id):
        seen += len(ids) - (sep_token_id is not None)
        buffer.extend(ids)
        while len(buffer) - start >= body:
            yield torch.tensor(prefix + buffer[start : start + body], dtype=torch.long)
            start += body
            made += 1
            if n_contexts is not None and made >= n_contexts:
                return
        if start > 1 << 16:  # drop consumed tokens now and then, not on every row
            del buffer[:start]
            start = 0
    if made == 0:
        raise EmptyTextError(
            f"the corpus {corpus.name!r} gave {seen} tokens, fewer than one context of "
            f"{n_ctx}: give more text, or a smaller n_ctx"
            if seen
            else f"the corpus {corpus.name!r} gave no tokens: it has no text in it"
        )


def batched_contexts(
    corpus: Corpus | str | os.PathLike[str],
    tokenizer: Any,
    n_ctx: int,
    bos_token_id: int | None,
    batch_size: int,
    n_contexts: int | None = None,
) -> Iterator[Tensor]:
    """Contexts stacked into batches [batch n_ctx]; the last batch may be smaller."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return _stack(contexts(corpus, tokenizer, n_ctx, bos_token_id, n_contexts), batch_size)


def _stack(rows: Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    it = iter(rows)
    while batch := list(itertools.islice(it, batch_size)):
        yield torch.stack(batch)


def token_batch(batch: Tensor | Mapping[str, Tensor] | Sequence[Sequence[int]]) -> Tensor:
    """Token ids [b, n] (long, on the CPU) from a tensor, nested lists or an ActivationStore
    batch dict (its "tokens")."""
    if isinstance(batch, Mapping):
        batch = batch["tokens"]
    tokens = torch.as_tensor(batch).long().cpu()
    if tokens.ndim == 1:
        tokens = tokens[None]
    return tokens
