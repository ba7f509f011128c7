"""Binary array transport (attnviz.widgets.arrays), bundle lookup, and the JS side via node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from attnviz.errors import AttnvizError
from attnviz.widgets import static
from attnviz.widgets.arrays import (
    decode_array,
    encode_array,
    json_baseline_nbytes,
    payload_nbytes,
)
from attnviz.widgets.static import MissingBundleError, static_path

ROOT = Path(__file__).resolve().parent.parent
WIDGETS = ROOT / "widgets"
NODE = shutil.which("node")
# `make test` needs node for the front-end build, so a missing node is a failure, not a skip.
needs_node = pytest.mark.usefixtures("node_on_path")


@pytest.fixture
def node_on_path():
    assert NODE is not None, "node is not installed: the widget build and JS tests need Node.js"


def attention_pattern(n_heads: int, n: int, seed: int = 0) -> np.ndarray:
    """Random (non-causal) attention: softmax of normal logits over the last axis."""
    logits = np.random.default_rng(seed).normal(size=(n_heads, n, n)).astype(np.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# --- round trips ---------------------------------------------------------------------------


def test_float32_round_trip_is_exact():
    x = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)
    d = encode_array(x, "float32")
    assert d["dtype"] == "float32" and d["shape"] == [3, 4, 5]
    assert len(d["data"]) == x.size * 4
    np.testing.assert_array_equal(decode_array(d), x)


def test_float16_round_trip_matches_numpy_half():
    x = np.random.default_rng(2).normal(size=(7, 9)) * 100
    d = encode_array(x, "float16")
    y = decode_array(d)
    assert y.dtype == np.float32 and y.shape == (7, 9)
    np.testing.assert_array_equal(y, x.astype(np.float16).astype(np.float32))


def test_float16_keeps_special_values_and_is_little_endian():
    x = np.array([1.0, -2.0, 65504.0, 2.0**-24, np.inf, -np.inf, np.nan, -0.0])
    d = encode_array(x, "float16")
    assert d["data"][:4] == b"\x00\x3c\x00\xc0"  # 1.0 = 0x3C00, -2.0 = 0xC000, little-endian
    y = decode_array(d)
    np.testing.assert_array_equal(y[:6], x[:6].astype(np.float32))
    assert np.isnan(y[6]) and np.signbit(y[7])


def test_float16_overflow_is_refused():
    with pytest.raises(ValueError, match="dtype='float32'"):
        encode_array(np.array([1.0, 70000.0]), "float16")
    assert decode_array(encode_array(np.array([70000.0]), "float32"))[0] == 70000.0


@pytest.mark.parametrize(
    ("dtype", "values"), [("int32", [-(2**31), 0, 2**31 - 1]), ("uint16", [0, 7, 65535])]
)
def test_integer_round_trip_is_exact(dtype, values):
    x = np.array(values, dtype=np.int64).reshape(1, 3)
    y = decode_array(encode_array(x, dtype))
    assert y.dtype == np.dtype(dtype) and y.shape == (1, 3)
    np.testing.assert_array_equal(y, x)


def test_integer_dtypes_refuse_bad_input():
    with pytest.raises(ValueError, match="do not fit uint16"):
        encode_array(np.array([-1, 3]), "uint16")
    with pytest.raises(TypeError, match="integer arrays"):
        encode_array(np.array([0.5]), "int32")
    with pytest.raises(ValueError, match="cannot carry a mask"):
        encode_array(np.array([1, 2]), "int32", masked=np.array([True, False]))
    with pytest.raises(ValueError, match="unknown wire dtype"):
        encode_array(np.zeros(2), "float64")


def test_c_order_whatever_the_input_layout():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for view in (np.asfortranarray(x), x.T.copy().T, x[:, ::-1][:, ::-1]):
        for dtype in ("float16", "float32", "uint8", "int32"):
            src = view.astype(np.int32) if dtype == "int32" else view
            assert (
                encode_array(src, dtype)["data"]
                == encode_array(np.ascontiguousarray(src), dtype)["data"]
            )
    np.testing.assert_array_equal(decode_array(encode_array(x.T, "float32")), x.T)


def test_scalars_and_empty_arrays():
    d = encode_array(np.float32(3.5), "float16")
    assert d["shape"] == [] and decode_array(d).shape == () and decode_array(d) == 3.5
    for dtype in ("float16", "float32", "uint8", "int32", "uint16"):
        src = np.zeros((0, 4), dtype=np.int32 if dtype in ("int32", "uint16") else np.float32)
        d = encode_array(src, dtype)
        assert d["shape"] == [0, 4] and d["data"] == b""
        assert decode_array(d).shape == (0, 4)


# --- uint8 quantisation --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_uint8_error_is_at_most_half_a_step(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=rng.normal() * 10, scale=rng.uniform(0.01, 50), size=(33, 65))
    d = encode_array(x, "uint8")
    assert d["offset"] == x.min()
    assert d["scale"] == pytest.approx((x.max() - x.min()) / 254, rel=1e-12)
    assert d["masked"] is False
    raw = np.frombuffer(d["data"], np.uint8)
    assert raw.max() == 254 and raw.min() == 0  # 255 stays reserved
    err = np.abs(decode_array(d).astype(np.float64) - x)
    # scale / 2 from the quantisation, plus float32 rounding of the decoded value
    assert err.max() <= d["scale"] / 2 + np.abs(x).max() * 2.0**-24


def test_uint8_attention_pattern_error_bound():
    p = attention_pattern(2, 64)
    d = encode_array(p, "uint8")
    err = np.abs(decode_array(d).astype(np.float64) - p.astype(np.float64))
    assert err.max() <= d["scale"] / 2 * (1 + 1e-6) + 2.0**-24


def test_uint8_constant_and_all_masked():
    d = encode_array(np.full((2, 3), 0.25), "uint8")
    assert d["scale"] == 0.0 and d["offset"] == 0.25 and not d["masked"]
    np.testing.assert_array_equal(decode_array(d), np.full((2, 3), 0.25, np.float32))
    d = encode_array(np.full(4, np.nan), "uint8")
    assert d["masked"] and d["data"] == b"\xff" * 4
    assert np.isnan(decode_array(d)).all()


def test_uint8_masked_cells_and_non_finite_values():
    x = np.array([[0.0, 1.0, 2.0], [np.nan, -np.inf, 10.0]])
    mask = np.array([[False, False, True], [False, False, False]])
    d = encode_array(x, "uint8", masked=mask)
    assert d["masked"] is True
    raw = np.frombuffer(d["data"], np.uint8).reshape(2, 3)
    assert raw[0, 2] == raw[1, 0] == raw[1, 1] == 255
    # range over unmasked finite values only: 0 .. 10
    assert d["offset"] == 0.0 and d["scale"] == pytest.approx(10 / 254)
    y = decode_array(d)
    assert np.isnan(y[0, 2]) and np.isnan(y[1, 0]) and np.isnan(y[1, 1])
    np.testing.assert_allclose(y[[0, 0, 1], [0, 1, 2]], [0.0, 1.0, 10.0], atol=d["scale"] / 2)


def test_float_masks_become_nan():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    causal = np.triu(np.ones((2, 3), bool), k=1)
    for dtype in ("float16", "float32"):
        y = decode_array(encode_array(x, dtype, masked=causal))
        assert np.isnan(y[causal]).all()
        np.testing.assert_array_equal(y[~causal], x[~causal])
    assert not np.isnan(x).any()  # the caller's array is untouched
    # a mask broadcasts (here one per column)
    y = decode_array(encode_array(x, "float16", masked=np.array([True, False, False])))
    assert np.isnan(y[:, 0]).all() and not np.isnan(y[:, 1:]).any()


# --- torch ---------------------------------------------------------------------------------


def test_torch_cpu_tensors_without_cuda():
    t = torch.randn(4, 6, requires_grad=True)
    d = encode_array(t * 2, "float32")  # a non-leaf tensor that requires grad
    np.testing.assert_array_equal(decode_array(d), (t * 2).detach().numpy())
    # bfloat16 (numpy has none), a transposed (non-contiguous) view, float16 and int tensors
    b = torch.randn(3, 5).to(torch.bfloat16)
    np.testing.assert_array_equal(decode_array(encode_array(b.T, "float32")), b.T.float().numpy())
    h = torch.randn(2, 3, dtype=torch.float16)
    np.testing.assert_array_equal(decode_array(encode_array(h)), h.float().numpy())
    ids = torch.tensor([[5, 50256]])
    np.testing.assert_array_equal(decode_array(encode_array(ids, "uint16")), ids.numpy())
    # masks may be tensors too
    m = torch.tensor([True, False, False, False, False, False])
    assert np.isnan(decode_array(encode_array(t, "uint8", masked=m))[:, 0]).all()
    assert json_baseline_nbytes(ids) == len("[[5, 50256]]")


def test_torch_tensor_on_the_default_device():
    from attnviz.device import default_device

    t = torch.randn(8, 8, device=default_device())  # CUDA where there is a GPU
    np.testing.assert_array_equal(decode_array(encode_array(t, "float32")), t.cpu().numpy())


# --- size on the wire ----------------------------------------------------------------------


def test_float16_payload_is_two_bytes_per_element():
    x = np.ones((9, 2048, 2048), dtype=np.float16)
    d = encode_array(x, "float16")
    assert len(d["data"]) == 2 * x.size
    overhead = payload_nbytes(d) - 2 * x.size
    assert 0 < overhead <= 64
    assert overhead == len(json.dumps({"dtype": "float16", "shape": [9, 2048, 2048]}))


def test_payload_against_json_baseline():
    p = attention_pattern(9, 256)
    baseline = json_baseline_nbytes(p)
    assert baseline == len(json.dumps(p.tolist()))
    f16 = payload_nbytes(encode_array(p, "float16"))
    u8 = payload_nbytes(encode_array(p, "uint8"))
    assert f16 * 8 <= baseline, f"float16 only {baseline / f16:.1f}x smaller than JSON"
    assert u8 * 16 <= baseline, f"uint8 only {baseline / u8:.1f}x smaller than JSON"
    assert u8 <= f16 / 2 + 200


def test_bytes_travel_as_a_binary_buffer():
    from ipywidgets.widgets.widget import _remove_buffers

    state, paths, buffers = _remove_buffers({"array": encode_array(np.zeros((2, 3)))})
    assert paths == [["array", "data"]] and [len(b) for b in buffers] == [12]
    assert "data" not in state["array"]


# --- bundles -------------------------------------------------------------------------------


def test_static_path_missing_bundle_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(static, "STATIC_DIR", tmp_path)
    with pytest.raises(MissingBundleError) as info:
        static_path("arrays_probe")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, AttnvizError)
    assert str(info.value) == (
        "the front-end bundle arrays_probe.js is missing: run `make widgets` (npm + esbuild) "
        "or reinstall attnviz"
    )
    (tmp_path / "arrays_probe.js").write_text("export default {};\n")
    assert static_path("arrays_probe") == tmp_path / "arrays_probe.js"
    with pytest.raises(ValueError, match="bad bundle name"):
        static_path("../arrays_probe")


def test_array_probe_uses_the_bundle(monkeypatch, tmp_path):
    from attnviz.widgets.probe import ArrayProbe

    monkeypatch.setattr(static, "STATIC_DIR", tmp_path)
    with pytest.raises(MissingBundleError, match="make widgets"):
        ArrayProbe(np.zeros((2, 2)))
    source = "export default { render({ model, el }) {} };\n"
    (tmp_path / "arrays_probe.js").write_text(source)
    w = ArrayProbe(torch.eye(3), title="identity", dtype="uint8")
    assert w._esm == source and w.title == "identity"
    assert w.array["dtype"] == "uint8" and w.array["shape"] == [3, 3]
    np.testing.assert_array_equal(decode_array(w.array), np.eye(3, dtype=np.float32))
    w.set_array(np.ones(4), dtype="float32")
    assert w.array["shape"] == [4]


# --- the JavaScript side -------------------------------------------------------------------


@needs_node
def test_node_unit_tests():
    files = sorted(str(p) for p in WIDGETS.glob("*/*.test.js") if "node_modules" not in p.parts)
    folders = {Path(f).parent.name for f in files}
    # every widget and the shared library have their tests
    assert {"shared", "attention_view", "pattern_explorer", "pair_explorer"} <= folders, folders
    run = subprocess.run(
        [NODE, "--test", *files], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]


DECODE_IN_NODE = """
import { readFileSync } from "node:fs";
import { decodeArray } from "ARRAYS_JS";
const messages = JSON.parse(readFileSync(process.argv[1], "utf8"));
const out = messages.map(({ meta, pad, hex }) => {
  const bytes = Buffer.from(hex, "hex");
  const buffer = new ArrayBuffer(pad + bytes.length + 3);
  new Uint8Array(buffer, pad).set(bytes);
  const { data, shape } = decodeArray({ ...meta, data: new DataView(buffer, pad, bytes.length) });
  return { shape, data: Array.from(data, (v) => (Number.isNaN(v) ? "nan" : v === Infinity ? "inf" : v === -Infinity ? "-inf" : v)) };
});
console.log(JSON.stringify(out));
"""


@needs_node
def test_javascript_decodes_what_python_encodes(tmp_path):
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [
            rng.normal(size=40) * 1000,
            [0.0, -0.0, 2.0**-24, 2.0**-20, 65504.0, np.inf, -np.inf, np.nan],
        ]
    ).reshape(4, 12)
    mask = rng.random((4, 12)) < 0.2
    cases = [
        encode_array(x, "float16"),
        encode_array(x, "float32", masked=mask),
        encode_array(x, "uint8", masked=mask),
        encode_array(np.arange(-3, 3).reshape(2, 3), "int32"),
        encode_array(np.arange(6).reshape(3, 2) * 10000, "uint16"),
    ]
    messages = [
        {"meta": {k: v for k, v in d.items() if k != "data"}, "pad": pad, "hex": d["data"].hex()}
        for d, pad in zip(cases, [1, 3, 5, 2, 7], strict=True)
    ]
    (tmp_path / "messages.json").write_text(json.dumps(messages))
    script = DECODE_IN_NODE.replace("ARRAYS_JS", (WIDGETS / "shared" / "arrays.js").as_uri())
    run = subprocess.run(
        [NODE, "--input-type=module", "-e", script, str(tmp_path / "messages.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    decoded = json.loads(run.stdout)
    special = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}
    for d, js in zip(cases, decoded, strict=True):
        expected = decode_array(d)
        got = np.array(
            [special.get(v, v) if isinstance(v, str) else v for v in js["data"]], dtype=np.float64
        )
        assert js["shape"] == d["shape"]
        np.testing.assert_array_equal(got.reshape(expected.shape), expected.astype(np.float64))


@pytest.mark.frontend
def test_esbuild_bundle_builds():
    assert (WIDGETS / "node_modules").is_dir(), (
        "widgets/node_modules is missing: run `make widgets` (npm ci + esbuild)"
    )
    npm = shutil.which("npm")
    assert npm, "npm is not on PATH"
    run = subprocess.run(
        [npm, "--prefix", str(WIDGETS), "run", "build"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    bundle = static_path("arrays_probe")
    text = bundle.read_text(encoding="utf-8")
    assert "export" in text and "default" in text
    # self-contained: no static or dynamic imports left (everything inlined, works offline)
    assert "import(" not in text and 'from"' not in text and "from '" not in text
    assert "http://" not in text and "https://" not in text
