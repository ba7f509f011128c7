"""The SAELens on-disk format (SAELens 6: cfg.json + sae_weights.safetensors), both ways.

attnviz writes every SAE so that `sae_lens.SAE.load_from_disk` loads it (SAELens reads the keys
it knows and ignores attnviz's own), and reads directories SAELens wrote, taking the model, site
and layer from `metadata.model_name` / `metadata.hook_name`. Nothing here imports sae_lens.
"""

from __future__ import annotations

from typing import Any

from attnviz.errors import DictionaryMismatchError
from attnviz.models.sites import parse_hook_name

FORMAT_VERSION = "6.0.0"
"""The SAELens config layout written (SAELens upgrades older layouts by this version)."""


def to_saelens_config(cfg: Any, weights_dtype: str) -> dict[str, Any]:
    """SAELens's keys for an attnviz SAEConfig."""
    out: dict[str, Any] = {
        "architecture": cfg.architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": weights_dtype,
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        # hook_z arrives as [..., n_heads, d_head]; SAELens flattens it when told so.
        "reshape_activations": "hook_z" if cfg.site == "z" and len(cfg.layers) == 1 else "none",
        "metadata": {
            "sae_lens_version": FORMAT_VERSION,
            "model_name": cfg.model,
            # SAELens knows one hook per SAE; a multi-layer SAE names none.
            "hook_name": cfg.hook_names[0] if len(cfg.layers) == 1 else None,
            "hook_head_index": None,
            "prepend_bos": True,
            "written_by": f"attnviz {cfg.attnviz_version}",
        },
    }
    if cfg.architecture == "topk":
        out |= {"k": cfg.k, "rescale_acts_by_decoder_norm": False}
    return out


def from_saelens_config(raw: dict[str, Any]) -> dict[str, Any]:
    """attnviz SAEConfig fields from a config SAELens wrote (6.x layout, or the older one with
    top-level hook_name / hook_point / model_name)."""
    meta = dict(raw.get("metadata") or {})
    hook = meta.get("hook_name") or raw.get("hook_name") or raw.get("hook_point")
    model = meta.get("model_name") or raw.get("model_name")
    if not hook:
        raise DictionaryMismatchError(
            "this SAELens config names no hook (metadata.hook_name), so attnviz cannot tell "
            "which site and layer it reads: add metadata.hook_name, e.g. 'blocks.5.attn.hook_z'"
        )
    try:
        site, layer = parse_hook_name(hook)
    except ValueError as err:
        raise DictionaryMismatchError(str(err)) from None
    if raw.get("normalize_activations", "none") not in ("none", None):
        raise DictionaryMismatchError(
            f"SAEs with normalize_activations={raw['normalize_activations']!r} are not supported: "
            "fold the normalisation into the weights first (SAELens: fold_activation_norm_scaling_factor)"
        )
    if raw.get("architecture") == "topk" and raw.get("rescale_acts_by_decoder_norm"):
        raise DictionaryMismatchError(
            "topk SAEs with rescale_acts_by_decoder_norm=True are not supported: normalise the "
            "decoder rows first (SAELens: fold_W_dec_norm)"
        )
    return {
        "architecture": raw.get("architecture", "standard"),
        "model": model or "unknown",
        "site": site,
        "layers": [layer],
        "d_in": int(raw["d_in"]),
        "d_sae": int(raw["d_sae"]),
        "k": raw.get("k"),
        "apply_b_dec_to_input": bool(raw.get("apply_b_dec_to_input", True)),
        "training": {"source": "SAELens", "metadata": meta},
    }
