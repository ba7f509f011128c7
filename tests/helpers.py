"""Helpers the unit tests share (import them from here, not from another test module)."""

from __future__ import annotations

import torch

from attnviz.dictionaries.pair_table import PairTable
from attnviz.dictionaries.qk import QKConfig, QKDictionary

__all__ = ["TEXT", "Recorder", "ask", "head_mixing_sae", "make_qk"]

TEXT = "The cat sat on the mat because it was tired of walking"
"""A short prompt for the tiny models."""


def make_qk(spec, layer: int = 1, pairs: bool = True, seed: int = 0) -> QKDictionary:
    """A random QK dictionary for `spec` whose features mostly fire (so there are pairs to split),
    with a random pair table unless `pairs` is False."""
    qk = QKDictionary(QKConfig.for_model(spec, layer, d_hidden_q=32, d_hidden_k=24), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for coder in (qk.query, qk.key):
            coder.b_enc.add_(0.3)  # most features fire, so there are pairs to split
            coder.b_out.copy_(0.3 * torch.randn(coder.b_out.shape, generator=g))
    if pairs:
        keep = torch.rand(32, 24, spec.n_heads, generator=g) < 0.3
        qk.pairs = PairTable.from_dense(keep * (0.2 + 0.8 * torch.rand(keep.shape, generator=g)))
    return qk


def head_mixing_sae(spec, site: str = "z", layers: int | list[int] = 1, seed: int = 0):
    """An SAE of 2 * d_in features, relu(x_i) and relu(-x_i), whose decoder rows are +-(e_i plus
    0.1-0.4 of one coordinate of another head): it rebuilds the site closely (the check on the
    model passes) and its head loadings fall into clusters of unequal sizes (the partner head is
    the next one six times in ten)."""
    from attnviz.dictionaries.sae import SAE, SAEConfig

    layers = [layers] if isinstance(layers, int) else list(layers)
    width = spec.d_head * (spec.n_heads if site == "z" else spec.n_kv_heads) * len(layers)
    sae = SAE(SAEConfig.for_model(spec, site, layers, d_sae=2 * width))
    dh, blocks = spec.d_head, width // spec.d_head
    g = torch.Generator().manual_seed(seed)
    dec = torch.eye(width)
    for i in range(width):
        step = (
            1
            if torch.rand(1, generator=g) < 0.6
            else int(torch.randint(1, blocks, (1,), generator=g))
        )
        partner = (i // dh + step) % blocks
        dec[i, partner * dh + i % dh] = 0.1 + 0.3 * float(torch.rand(1, generator=g))
    eye = torch.eye(width)
    with torch.no_grad():
        sae.coder.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.coder.W_dec.copy_(torch.cat([dec, -dec], 0))
        sae.coder.b_enc.zero_()
        sae.coder.b_out.zero_()
    return sae


class Recorder:
    """Stands in for a widget's send(): keeps every message it is given (from any thread)."""

    def __init__(self) -> None:
        import threading

        self.sent: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, content, buffers=None):
        with self.lock:
            self.sent.append(content)

    def of(self, rid: str) -> list[dict]:
        return [c for c in self.sent if c.get("id") == rid]


def ask(view, monkeypatch, rid: str, method: str, **args) -> list[dict]:
    """Send `view` a request as its front end would and wait for the reply: the messages for
    request `rid` (every progress step shows: the throttle is off)."""
    recorder = getattr(view, "recorder", None) or Recorder()
    view.recorder = recorder
    monkeypatch.setattr(view, "send", recorder)
    monkeypatch.setattr("attnviz.widgets.requests.PROGRESS_INTERVAL_S", 0.0)
    view.requests.on_message(view, {"kind": "request", "id": rid, "method": method, "args": args})
    view.requests.wait(timeout=120)
    return recorder.of(rid)


def check_figure_files(widget, folder, width: int = 640, height: int = 480) -> dict[str, bytes]:
    """Save `widget`'s figure as PNG (scale 2), SVG and PDF (the colour-blind palette) and check
    each file: PNG pixels = size x scale, the SVG parses at that size, the PDF is one page of
    size x 0.75 points with its fonts embedded. Returns the bytes by format."""
    import re
    import xml.etree.ElementTree as ET

    out = {}
    for kind, palette in (("png", "default"), ("svg", "default"), ("pdf", "colorblind")):
        path = widget.save_figure(folder / f"figure.{kind}", width=width, height=height,
                                  palette=palette)  # fmt: skip
        out[kind] = data = path.read_bytes()
        assert len(data) > 2_000, f"{kind} nearly empty"
    png = out["png"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (
        2 * width,
        2 * height,
    )
    svg = ET.fromstring(out["svg"])
    assert svg.tag.endswith("svg") and (svg.get("width"), svg.get("height")) == (
        str(width),
        str(height),
    )
    pdf = out["pdf"]
    assert pdf.startswith(b"%PDF-") and len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]+)\]", pdf).group(1).split()]
    assert abs(box[2] - width * 0.75) < 1 and abs(box[3] - height * 0.75) < 1  # chromium rounds
    assert re.search(rb"/FontFile[23]?\b", pdf), "the PDF's fonts are not embedded"
    return out
