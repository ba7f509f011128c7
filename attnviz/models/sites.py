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


# TransformerLens hook names (what SAELens and most released SAEs are keyed on).
_TL_HOOKS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "q": "blocks.{layer}.attn.hook_q",
    "k": "blocks.{layer}.attn.hook_k",
    "v": "blocks.{layer}.attn.hook_v",
    "z": "blocks.{layer}.attn.hook_z",
}


def hook_name(site: str, layer: int) -> str:
    """The TransformerLens hook name of a site, e.g. ("z", 5) -> "blocks.5.attn.hook_z"."""
    if site not in _TL_HOOKS:
        raise ValueError(
            f"site {site!r} has no TransformerLens hook: choose from {', '.join(_TL_HOOKS)}"
        )
    return _TL_HOOKS[site].format(layer=layer)


def parse_hook_name(name: str) -> tuple[str, int]:
    """(site, layer) of a TransformerLens hook name; the inverse of `hook_name`."""
    parts = name.split(".")
    if len(parts) >= 3 and parts[0] == "blocks" and parts[1].isdigit():
        layer = int(parts[1])
        for site, pattern in _TL_HOOKS.items():
            if pattern.format(layer=layer) == name:
                return site, layer
    known = ", ".join(p.format(layer="L") for p in _TL_HOOKS.values())
    raise ValueError(f"hook {name!r} is not one attnviz reads: it knows {known}")
