"""Sparse autoencoders for one site of one layer, or for the same site of several layers
concatenated (the two-layer value SAEs of Anthropic's attention update, 2025).

    f = act((x - b_dec) W_enc + b_enc),   x_hat = f W_dec + b_dec

Architectures (the names SAELens uses, so directories move between the two unchanged):

- "standard": act = ReLU, trained with an L1 penalty on f_i * |W_dec,i|;
- "topk": act keeps the k largest pre-activations (ReLU'd), the rest 0 (Gao et al. 2024);
- "jumprelu": act(x)_i = x_i if x_i > threshold_i else 0 (Rajamanoharan et al. 2024); a
  BatchTopK-trained SAE is saved this way, its batch-level threshold fixed per feature.

Sites: "z" (hook_z, [n_heads * d_head]), "v" ([n_kv_heads * d_head]), "resid_pre",
"resid_post", "attn_out" ([d_model]). A decoder row of a head-split site viewed per head is
`sae.dec_heads` [d_sae, (n_layers,) n_heads, d_head]: what each head's share of the feature is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from attnviz._version import __version__
from attnviz.dictionaries.base import Dictionary
from attnviz.dictionaries.registry import register
from attnviz.dictionaries.sparse_coder import SparseCoder
from attnviz.errors import DictionaryMismatchError
from attnviz.models.sites import check_site, hook_name, site_heads, site_width

SAE_ARCHITECTURES = ("standard", "topk", "jumprelu")
SAE_SITES = ("z", "v", "resid_pre", "resid_post", "attn_out")


@dataclass
class SAEConfig:
    architecture: str
    """"standard", "topk" or "jumprelu" (the SAELens names)."""
    model: str
    """Name of the model it was trained on."""
    site: str
    """Where it reads: z, v, resid_pre, resid_post or attn_out."""
    layers: list[int]
    """The layer it reads, or several whose activations are concatenated in this order."""
    d_in: int
    """Input width: the site's width times the number of layers."""
    d_sae: int
    """Features."""
    n_heads: int | None = None
    """Heads the site splits into per layer (None for residual sites, or not yet known)."""
    d_head: int | None = None
    """Width of one head at the site."""
    group_size: int | None = None
    """v only: query heads that read each kv head (grouped-query attention; None: not known)."""
    k: int | None = None
    """Active features per token (topk)."""
    apply_b_dec_to_input: bool = True
    """Subtract the decoder bias from the input before encoding."""
    training: dict[str, Any] = field(default_factory=dict)
    """The settings it was trained with."""
    attnviz_version: str = __version__
    """The attnviz version that wrote it."""

    def __post_init__(self) -> None:
        if self.architecture not in SAE_ARCHITECTURES:
            raise ValueError(
                f"{self.architecture!r} is not an SAE architecture: use one of {SAE_ARCHITECTURES}"
            )
        if self.site not in SAE_SITES:
            raise ValueError(f"an SAE reads one of {', '.join(SAE_SITES)}, not {self.site!r}")
        self.layers = [int(x) for x in self.layers]
        if not self.layers:
            raise ValueError("an SAE reads at least one layer")
        if self.architecture == "topk" and not self.k:
            raise ValueError("a topk SAE needs k, the number of active features per token")
        if self.d_in % len(self.layers):
            raise ValueError(f"d_in {self.d_in} does not split over layers {self.layers}")

    @property
    def layer(self) -> int:
        """The (first) layer read."""
        return self.layers[0]

    @property
    def hook_names(self) -> list[str]:
        return [hook_name(self.site, layer) for layer in self.layers]

    @classmethod
    def for_model(
        cls,
        spec: Any,
        site: str,
        layers: int | list[int],
        d_sae: int,
        architecture: str = "standard",
        **extra: Any,
    ) -> SAEConfig:
        """A config matching an adapter's ModelSpec."""
        check_site(site)
        layers = [layers] if isinstance(layers, int) else list(layers)
        heads = site_heads(spec, site)
        return cls(
            architecture=architecture, model=spec.name, site=site, layers=layers,
            d_in=site_width(spec, site) * len(layers), d_sae=d_sae, n_heads=heads,
            d_head=spec.d_head if heads else None,
            group_size=spec.n_heads // spec.n_kv_heads if site == "v" else None, **extra,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        """From attnviz's own keys or, when they are missing, from a config SAELens wrote."""
        if "site" not in d:
            from attnviz.dictionaries.saelens import from_saelens_config

            d = from_saelens_config(d)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class SAE(Dictionary):
    """A sparse autoencoder; `sae(x)` -> (x_hat, f). Saved in SAELens's layout."""

    weights_file = "sae_weights.safetensors"
    threshold: Tensor  # jumprelu only: [d_sae]

    def __init__(self, cfg: SAEConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        bias = "tied" if cfg.apply_b_dec_to_input else "none"
        self.coder = SparseCoder(cfg.d_in, cfg.d_sae, cfg.d_in, seed, input_bias=bias)
        if cfg.architecture == "jumprelu":
            self.register_buffer("threshold", torch.zeros(cfg.d_sae))

    # ---- the map -----------------------------------------------------------------------------

    @property
    def W_enc(self) -> Tensor:
        return self.coder.W_enc

    @property
    def W_dec(self) -> Tensor:
        return self.coder.W_dec

    @property
    def b_enc(self) -> Tensor:
        return self.coder.b_enc

    @property
    def b_dec(self) -> Tensor:
        return self.coder.b_out

    def flatten_input(self, x: Tensor) -> Tensor:
        """[..., heads, d_head] (as hook_z and v come) or [..., d_in] -> [..., d_in]."""
        if x.shape[-1] != self.cfg.d_in and x.ndim >= 2 and x.shape[-2:].numel() == self.cfg.d_in:
            x = x.flatten(-2)
        if x.shape[-1] != self.cfg.d_in:
            raise DictionaryMismatchError(
                f"this SAE reads {self.cfg.d_in}-wide {self.cfg.site} activations, got shape "
                f"{tuple(x.shape)}: give it {self.cfg.site} of layer(s) {self.cfg.layers}"
            )
        return x

    def pre_activation(self, x: Tensor) -> Tensor:
        return self.coder.pre_activation(self.flatten_input(x))

    def activation(self, pre: Tensor) -> Tensor:
        """The architecture's activation function on pre-activations [..., d_sae]."""
        arch = self.cfg.architecture
        if arch == "standard":
            return torch.relu(pre)
        if arch == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold)
        top = pre.topk(int(self.cfg.k or 0), dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def encode(self, x: Tensor) -> Tensor:
        """Feature activations [..., d_sae] of inputs [..., d_in] (or [..., heads, d_head])."""
        return self.activation(self.pre_activation(x))

    def decode(self, f: Tensor) -> Tensor:
        """[..., d_sae] -> reconstructions [..., d_in]."""
        return self.coder.decode(f)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.encode(x)
        return self.decode(f), f

    def reconstruct(self, x: Tensor) -> Tensor:
        """x_hat in the shape x came in (what a Splice puts back into the model)."""
        return self.decode(self.encode(x)).reshape(x.shape)

    @property
    def dec_heads(self) -> Tensor:
        """Decoder rows per head: [d_sae, n_heads, d_head], or [d_sae, n_layers, n_heads, d_head]
        for several layers."""
        c = self.cfg
        if not c.n_heads or not c.d_head:
            raise ValueError(
                f"a {c.site} SAE does not split into heads"
                if c.site not in ("z", "v")
                else "head shapes unknown: call sae.check_compatible(model.spec) first"
            )
        shape = (
            (c.n_heads, c.d_head) if len(c.layers) == 1 else (len(c.layers), c.n_heads, c.d_head)
        )
        return self.W_dec.unflatten(-1, shape)

    # ---- registry hooks (see dictionaries/base.py) ------------------------------------------

    def site_widths(self) -> dict[str, int]:
        return {self.cfg.site: self.cfg.d_in // len(self.cfg.layers)}

    def check_compatible(self, spec: Any, layer: int | str | list[int] | None = None) -> None:
        """As Dictionary.check_compatible; a multi-layer SAE fits any of its layers, and its
        layer list as given by `list_pretrained` ("17+18") or as a list. Fills in the head shapes
        of a head-split site when the file did not say (SAELens configs don't)."""
        c = self.cfg
        if isinstance(layer, str) and all(p.strip().isdigit() for p in layer.split("+")):
            layer = [int(p) for p in layer.split("+")]
        if isinstance(layer, (list, tuple)) and [int(x) for x in layer] == c.layers:
            layer = c.layer
        if layer is not None and layer in c.layers:
            layer = c.layer
        # Any other list or name is not this SAE's layer: the base check names it in its error.
        super().check_compatible(spec, layer)  # type: ignore[arg-type]
        bad = [x for x in c.layers if not 0 <= x < spec.n_layers]
        if bad:
            raise DictionaryMismatchError(
                f"this SAE reads layers {c.layers} but {spec.name} has layers 0-{spec.n_layers - 1}"
            )
        heads = site_heads(spec, c.site)
        if heads and c.n_heads is None:
            c.n_heads, c.d_head = heads, spec.d_head

    def saved_config(self, weights_dtype: str) -> dict[str, Any]:
        from attnviz.dictionaries.saelens import to_saelens_config

        return to_saelens_config(self.cfg, weights_dtype) | self.cfg.to_dict()

    def export_state(self) -> dict[str, Tensor]:
        """SAELens's tensor names: W_enc, b_enc, W_dec, b_dec (threshold for jumprelu)."""
        state = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.cfg.architecture == "jumprelu":
            state["threshold"] = self.threshold
        return state

    def import_state(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        names = {"W_enc": "coder.W_enc", "b_enc": "coder.b_enc", "W_dec": "coder.W_dec",
                 "b_dec": "coder.b_out", "threshold": "threshold"}  # fmt: skip
        return {names[k]: v for k, v in tensors.items() if k in names}


for _name, _summary in (
    ("standard", "ReLU sparse autoencoder, L1 x decoder norm (SAELens format)"),
    ("topk", "top-k sparse autoencoder (SAELens format)"),
    (
        "jumprelu",
        "JumpReLU sparse autoencoder, or a BatchTopK one with its threshold (SAELens format)",
    ),
):
    register(_name, SAEConfig, SAE, _summary)
