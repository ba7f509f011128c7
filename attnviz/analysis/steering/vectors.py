"""Steering vectors added to the residual stream before a layer (GDM progress update #1, 2024;
Turner et al. 2023): ActAdd from a prompt pair, the mean difference over two prompt sets, an SAE
feature's decoder direction, the SAE's reconstruction of a prompt pair's difference, a vector
with chosen directions projected out, or a user's own tensor. Coefficients can be read relative
to the residual stream's norm at the layer, so they transfer across layers.

>>> anger = actadd(model, "Anger", "Calm", layer=15)                       # doctest: +SKIP
>>> model.run(tokens, anger.interventions(5.0))                           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from attnviz.dictionaries.sae import SAE
from attnviz.models.adapter import ModelAdapter
from attnviz.models.interventions import Additive, AddToResidual, AddToZ

__all__ = [
    "SteeringVector",
    "actadd",
    "feature_direction",
    "from_tensor",
    "mean_difference",
    "padding_features",
    "project_out",
    "residual_norm",
    "z_direction",
]


@dataclass
class SteeringVector:
    """What to add at `layer`: one row of `vectors` per position of `positions` (a list: ActAdd's
    front positions), or a single row added at `positions` (None: every position, also the
    generated ones; slice(i, None): from position i on).

    site "resid_pre": rows are [d_model], added to the residual stream before the layer.
    site "z": rows are [n_heads * d_head], added to the layer's hook_z (heads whose block is zero
    are left alone); `written` holds what each row writes to the residual stream (through W_O)."""

    name: str
    layer: int
    vectors: Tensor
    positions: list[int] | slice | None = None
    site: str = "resid_pre"
    written: Tensor | None = None

    def __post_init__(self) -> None:
        self.vectors = self.vectors.detach().float().reshape(-1, self.vectors.shape[-1])
        if isinstance(self.positions, list) and len(self.positions) != self.vectors.shape[0]:
            raise ValueError(f"{self.vectors.shape[0]} vectors for {len(self.positions)} positions")
        if not isinstance(self.positions, list) and self.vectors.shape[0] != 1:
            raise ValueError("several vectors need a list of positions, one each")
        if self.site not in ("resid_pre", "z"):
            raise ValueError(f"steering site {self.site!r}: choose resid_pre or z")
        if self.site == "z" and self.written is None:
            raise ValueError("a z steering vector needs `written` (its W_O image): use z_direction")

    @property
    def norm(self) -> float:
        """The mean norm of what a coefficient of 1 adds to the residual stream at a position."""
        rows = self.vectors if self.written is None else self.written
        return float(rows.reshape(self.vectors.shape[0], -1).norm(dim=-1).mean())

    def interventions(self, coefs: float | Sequence[float] | Tensor) -> list[Additive]:
        """AddToResidual / AddToZ adding coef x this vector; a sequence of coefficients gives one
        row of a batch each (a sweep in one forward pass)."""
        c = torch.as_tensor(coefs, dtype=torch.float32)
        rows = c * self.vectors if c.ndim == 0 else c[:, None, None] * self.vectors[None]
        kind = AddToResidual if self.site == "resid_pre" else AddToZ
        if not isinstance(self.positions, list):
            return [kind(self.layer, rows[..., 0, :], self.positions)]
        return [kind(self.layer, rows[..., i, :], [p]) for i, p in enumerate(self.positions)]

    def at(self, positions: slice | None) -> SteeringVector:
        """The same direction (rows averaged) added at other positions."""
        written = None if self.written is None else self.written.mean(0, keepdim=True)
        return replace(self, vectors=self.vectors.mean(0, keepdim=True), positions=positions,
                       written=written)  # fmt: skip

    @property
    def steered_until(self) -> int:
        """The first position after every steered one that is a fixed prompt position (0 when
        every position is steered): where damage to held-out text is measured from."""
        if isinstance(self.positions, list):
            return max(self.positions) + 1
        if isinstance(self.positions, slice):
            return 0 if self.positions.stop is None else int(self.positions.stop)
        return 0


def _resid(model: ModelAdapter, tokens: Tensor, layer: int) -> Tensor:
    acts = model.attention(tokens, layer, ["resid_pre"])
    assert acts.resid_pre is not None
    return acts.resid_pre.float()


def _pair_tokens(model: ModelAdapter, plus: str, minus: str, pad: str) -> tuple[Tensor, Tensor]:
    """Both prompts with BOS, the shorter right-padded with the tokens of `pad` (ActAdd's rule)."""
    a, b = model.to_tokens(plus)[0], model.to_tokens(minus)[0]
    ids = model.tokenizer(pad, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"pad {pad!r} is {len(ids)} tokens: give text that is one token")
    n = max(len(a), len(b))
    fill = lambda t: torch.cat([t, t.new_full((n - len(t),), ids[0])])  # noqa: E731
    return fill(a)[None], fill(b)[None]


def actadd(model: ModelAdapter, plus: str, minus: str, layer: int, *, pad: str = " ",
           sae: SAE | None = None) -> SteeringVector:  # fmt: skip
    """ActAdd (Turner et al. 2023): resid_pre(plus) - resid_pre(minus) at each front position
    (BOS included, where the difference is zero), added at those positions of the prompt. With
    `sae` (a resid_pre SAE of the layer): the difference of its reconstructions instead (the
    error term left out)."""
    model.check_layer(layer)
    a, b = _pair_tokens(model, plus, minus, pad)
    xa, xb = _resid(model, a, layer)[0], _resid(model, b, layer)[0]
    name = f"ActAdd '{plus}' - '{minus}' at layer {layer}"
    if sae is not None:
        _check_resid_sae(sae, layer)
        with torch.no_grad():
            xa, xb = sae(xa.to(sae.W_dec))[0].float().cpu(), sae(xb.to(sae.W_dec))[0].float().cpu()
        name = f"SAE reconstruction of {name}"
    return SteeringVector(name, layer, (xa - xb).cpu(), list(range(a.shape[1])))


def mean_difference(model: ModelAdapter, plus: Sequence[str], minus: Sequence[str], layer: int,
                    positions: slice | None = None) -> SteeringVector:  # fmt: skip
    """The mean over `plus` of the last token's resid_pre minus the same over `minus`."""
    if not plus or not minus:
        raise ValueError("mean_difference needs at least one prompt on each side")

    def last(texts: Sequence[str]) -> Tensor:
        return torch.stack([_resid(model, model.to_tokens(t), layer)[0, -1] for t in texts])

    v = last(plus).mean(0) - last(minus).mean(0)
    return SteeringVector(f"mean difference ({len(plus)} vs {len(minus)} prompts) at layer {layer}",
                          layer, v.cpu(), positions)  # fmt: skip


def _check_resid_sae(sae: SAE, layer: int) -> None:
    c = sae.cfg
    if c.site != "resid_pre" or c.layers != [layer]:
        raise ValueError(
            f"this SAE reads {c.site} of layer(s) {c.layers}: steering at layer {layer} needs a "
            f"resid_pre SAE of that layer (attnviz train sae --site resid_pre --layer {layer})"
        )


def _check_feature(sae: SAE, feature: int) -> None:
    if not 0 <= feature < sae.cfg.d_sae:
        raise ValueError(
            f"feature {feature} is out of range: this SAE has features 0-{sae.cfg.d_sae - 1}"
        )


def feature_direction(sae: SAE, feature: int, unit: bool = True, positions: slice | None = None,
                      *, model: ModelAdapter | None = None,
                      heads: Sequence[int] | int | None = None) -> SteeringVector:  # fmt: skip
    """An SAE feature's decoder row (unit norm by default). A resid_pre SAE's row is added to the
    residual stream; a z SAE's (needs `model`) goes to hook_z: see z_direction for `heads`."""
    c = sae.cfg
    if c.site == "z":
        if model is None:
            raise ValueError("a z SAE feature steers through the model's W_O: pass model=")
        return z_direction(model, sae, feature, heads, unit, positions)
    if heads is not None:
        raise ValueError("heads= chooses heads of a z SAE feature; this SAE reads " + c.site)
    _check_resid_sae(sae, c.layer)
    _check_feature(sae, feature)
    v = sae.W_dec[feature].detach().float().cpu()
    v = v / v.norm() if unit else v
    return SteeringVector(
        f"feature {feature} of {c.site} SAE at layer {c.layer}", c.layer, v, positions
    )


def z_direction(model: ModelAdapter, sae: SAE, feature: int,
                heads: Sequence[int] | int | None = None, unit: bool = True,
                positions: slice | None = None) -> SteeringVector:  # fmt: skip
    """A z (hook_z) SAE feature's decoder row added at the layer's hook_z. heads: None = every
    head (the same as adding the row's W_O image to the attention output); an int k = the k heads
    the feature loads on most (largest decoder norm per head block); a list = those heads. The
    other heads' blocks are zeroed. unit: scaled so that what it writes to the residual stream
    has norm 1, so coefficients compare with residual-stream vectors."""
    c, s = sae.cfg, model.spec
    if c.site != "z" or len(c.layers) != 1:
        raise ValueError(f"z_direction needs a one-layer z SAE; this one reads {c.site} of "
                         f"layer(s) {c.layers}")  # fmt: skip
    _check_feature(sae, feature)
    layer = model.check_layer(c.layer)
    row = sae.W_dec[feature].detach().float().cpu().reshape(s.n_heads, s.d_head)
    if heads is None:
        chosen = list(range(s.n_heads))
    elif isinstance(heads, int):
        if not 1 <= heads <= s.n_heads:
            raise ValueError(f"heads={heads}: choose 1-{s.n_heads} top-loading heads")
        chosen = sorted(row.norm(dim=-1).topk(heads).indices.tolist())
    else:
        chosen = sorted({int(h) for h in heads})
        if not chosen or not all(0 <= h < s.n_heads for h in chosen):
            raise ValueError(f"heads {list(heads)}: {s.name} has heads 0-{s.n_heads - 1}")
    kept = torch.zeros_like(row)
    kept[chosen] = row[chosen]
    written = torch.einsum("hd,hdm->m", kept, model.output_weights(layer).float().cpu())
    scale = 1 / float(written.norm()) if unit and float(written.norm()) > 0 else 1.0
    where = "all heads" if len(chosen) == s.n_heads else f"heads {', '.join(map(str, chosen))}"
    return SteeringVector(f"feature {feature} of z SAE at layer {layer} ({where})", layer,
                          kept.flatten() * scale, positions, site="z",
                          written=written * scale)  # fmt: skip


def from_tensor(vector: Tensor, layer: int, positions: slice | None = None,
                name: str = "vector") -> SteeringVector:  # fmt: skip
    """A user's own [d_model] vector."""
    if vector.ndim != 1:
        raise ValueError(f"a steering vector is [d_model]; got shape {tuple(vector.shape)}")
    return SteeringVector(name, layer, vector.cpu(), positions)


def project_out(v: SteeringVector, directions: Tensor, what: str = "") -> SteeringVector:
    """v with its component in the span of `directions` [k, d_model] removed (each row)."""
    if v.site != "resid_pre":
        raise ValueError(f"project_out works on residual-stream vectors; this one is at {v.site}")
    d = directions.detach().float().reshape(-1, v.vectors.shape[-1]).cpu()
    q, _ = torch.linalg.qr(d.T)  # an orthonormal basis of the span, [d_model, k]
    rows = v.vectors - (v.vectors @ q) @ q.T
    label = f"{v.name}, {what or f'{d.shape[0]} directions'} projected out"
    return replace(v, name=label, vectors=rows)


def padding_features(model: ModelAdapter, sae: SAE, pad: str = " ", n_pad: int = 8,
                     top: int = 8) -> Tensor:  # fmt: skip
    """The resid_pre SAE's features most active on padding: BOS followed by `n_pad` copies of
    `pad` (what ActAdd pads the shorter prompt with). Their decoder rows are what the GDM update
    projected out of the wedding vector. Returns feature ids, strongest first."""
    _check_resid_sae(sae, sae.cfg.layer)
    ids = model.tokenizer(pad, add_special_tokens=False)["input_ids"]
    bos = [model.spec.bos_token_id] if model.spec.bos_token_id is not None else []
    tokens = torch.tensor([bos + ids * n_pad])
    x = _resid(model, tokens, sae.cfg.layer)[0, len(bos) :]
    with torch.no_grad():
        f = sae.encode(x.to(sae.W_dec)).float().mean(0).cpu()
    top = min(top, int((f > 0).sum()))
    return f.topk(top).indices


def residual_norm(model: ModelAdapter, layer: int, tokens: Tensor) -> float:
    """The mean norm of resid_pre at `layer` over `tokens` [batch pos], BOS left out: a coefficient
    c adds c * ||v|| / residual_norm of the stream's own size."""
    return float(_resid(model, tokens, layer)[:, 1:].norm(dim=-1).mean())
