"""One sparse encoder-decoder: f = ReLU((x - b_pre) W_enc + b_enc), y = f W_dec + b_out.

With y the same space as x this is a sparse autoencoder; with another space (x the normalised
residual, y the queries) it is a transcoder. Decoder rows are kept at unit norm by the trainer
when asked, so a feature's activation carries its magnitude.

input_bias: "own" (b_pre a parameter of its own), "tied" (b_pre is b_out: the SAE convention of
subtracting the decoder bias from the input) or "none" (nothing subtracted).

k: when set, only the k largest activations per token are kept (TopK, Gao et al. 2024): the L0 is
fixed by construction instead of by a penalty.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SparseCoder(nn.Module):
    def __init__(
        self, d_in: int, d_hidden: int, d_out: int, seed: int | None = None, input_bias: str = "own"
    ):
        super().__init__()
        if input_bias not in ("own", "tied", "none"):
            raise ValueError(f"input_bias must be 'own', 'tied' or 'none', not {input_bias!r}")
        if input_bias == "tied" and d_in != d_out:
            raise ValueError(f"a tied input bias needs d_in == d_out, got {d_in} and {d_out}")
        self.input_bias = input_bias
        self.k: int | None = None  # TopK: the k largest activations per token (None: all)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.d_in, self.d_hidden, self.d_out = d_in, d_hidden, d_out
        W_dec = torch.randn(d_hidden, d_out, generator=generator)
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
        W_enc = torch.randn(d_in, d_hidden, generator=generator) / d_in**0.5
        if input_bias == "own":
            self.b_pre = nn.Parameter(torch.zeros(d_in))
        elif input_bias == "none":
            self.register_buffer("b_pre", torch.zeros(d_in), persistent=False)
        self.W_enc = nn.Parameter(W_enc)
        self.b_enc = nn.Parameter(torch.zeros(d_hidden))
        self.W_dec = nn.Parameter(W_dec)
        self.b_out = nn.Parameter(torch.zeros(d_out))

    def __getattr__(self, name: str):
        if name == "b_pre" and self.__dict__.get("input_bias") == "tied":
            return super().__getattr__("b_out")
        return super().__getattr__(name)

    def pre_activation(self, x: Tensor) -> Tensor:
        """[..., d_in] -> [..., d_hidden], before the ReLU (ghost grads read it)."""
        return (x - self.b_pre) @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_activation(x)
        if self.k is None or self.k >= pre.shape[-1]:
            return torch.relu(pre)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def decode(self, f: Tensor) -> Tensor:
        return f @ self.W_dec + self.b_out

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Unit-norm decoder rows, scaling the encoder columns to keep outputs unchanged."""
        norms = self.W_dec.norm(dim=-1).clamp_min(1e-8)
        self.W_dec.div_(norms[:, None])
        self.W_enc.mul_(norms[None, :])
        self.b_enc.mul_(norms)

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the part of W_dec's gradient that would change row norms (keeps them at 1)."""
        if self.W_dec.grad is None:
            return
        W = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        along = (self.W_dec.grad * W).sum(-1, keepdim=True)
        self.W_dec.grad.sub_(along * W)
