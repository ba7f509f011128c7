"""Where in a layer a dictionary reads: the sites, their widths and how they split into heads.

A site's width follows from the model's spec alone, so a dictionary can be checked against any
model before it runs:

- resid_pre / resid_normed / attn_out / resid_post: [d_model]
- q, z (hook_z, heads concatenated): [n_heads * d_head], split by query head
- k, v: [n_kv_heads * d_head], split by key/value head (shared by a group of query heads)
"""

from __future__ import annotations

from typing import Any

RESIDUAL_SITES = ("resid_pre", "resid_normed", "attn_out", "resid_post")
QUERY_HEAD_SITES = ("q", "z")
KV_HEAD_SITES = ("k", "v")
SITES = RESIDUAL_SITES + QUERY_HEAD_SITES + KV_HEAD_SITES


def check_site(site: str) -> str:
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}: choose from {', '.join(SITES)}")
    return site


def site_heads(spec: Any, site: str) -> int | None:
    """How many heads the site splits into (None for the residual-width sites)."""
    check_site(site)
    if site in QUERY_HEAD_SITES:
        return int(spec.n_heads)
    if site in KV_HEAD_SITES:
        return int(spec.n_kv_heads)
    return None


def site_width(spec: Any, site: str) -> int:
    """The width of one position's activation at `site` for a model with this spec."""
    heads = site_heads(spec, site)
    return int(spec.d_model) if heads is None else heads * int(spec.d_head)
