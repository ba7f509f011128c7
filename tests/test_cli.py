"""The command line on the real embedded model: models, corpora, collect (and resume), demo."""

from __future__ import annotations

import hashlib
import json

import pytest

from attnviz.cli import main

pytestmark = pytest.mark.slow


def test_models_lists_the_default(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "* smollm2-135m" in out and "gpt2" in out


def test_corpora_lists_the_offline_default(capsys):
    assert main(["corpora"]) == 0
    assert "pydocs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["collect", "--layer", "30"], "layer 30 is out of range: smollm2-135m has layers 0-29"),
        (["collect", "--model", "gpt-7"], "unknown model 'gpt-7'"),
        (["collect", "--corpus", "no-such-corpus"], "no-such-corpus"),
        (["collect", "--n-ctx", "9000"], "8192"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, tmp_path, argv, message):
    assert main([*argv, "--tokens", "256", "--out", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnviz: error:") and message in err
    assert "Traceback" not in err


def _chunk_hashes(path):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.glob("chunk-*.safetensors"))
    }


def test_collect_writes_a_store_and_resumes(capsys, tmp_path):
    out = tmp_path / "L2"
    argv = ["collect", "--layer", "2", "--tokens", "1024", "--n-ctx", "64", "--out", str(out)]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["layer"] == 2
    assert manifest["model"] == "smollm2-135m"
    first = _chunk_hashes(out)
    assert first
    assert main(argv) == 0  # a finished store is reused, unchanged
    assert _chunk_hashes(out) == first
    assert "1024 tokens of layer 2" in capsys.readouterr().out
    # The same directory for another layer is refused, not overwritten.
    assert main([*argv[:2], "3", *argv[3:]]) == 2
    assert "layer" in capsys.readouterr().err
    assert _chunk_hashes(out) == first


def test_demo_prints_per_head_statistics(capsys, tmp_path):
    argv = ["demo", "--tokens", "1024", "--n-ctx", "64", "--out", str(tmp_path / "demo"),
            "--qk-steps", "0", "--eval-contexts", "0"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out
    assert "max |diff| = " in out
    diff = float(out.split("max |diff| = ")[1].split()[0])
    assert diff < 1e-5
    table = out.split("per-head attention statistics")[1]
    assert len([line for line in table.splitlines() if line.strip().startswith("3 ")]) == 9


def test_demo_trains_a_qk_transcoder_and_evaluates_the_shipped_ones(capsys, tmp_path):
    argv = ["demo", "--tokens", "16384", "--n-ctx", "64", "--out", str(tmp_path / "demo"),
            "--qk-steps", "40", "--eval-contexts", "4"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    trained = out.split("training a QK transcoder pair")[1]
    kl_before, kl_after = (
        float(x) for x in trained.split("pattern KL ")[1].split(" nats")[0].split(" -> ")
    )
    assert kl_after < kl_before
    table = out.split("shipped QK transcoders on 4 held-out contexts")[1]
    assert len([line for line in table.splitlines() if line.strip()[:2] in ("3 ", "15", "25")]) == 3
