"""scripts/parts.py: a file split into parts under a size limit and joined back, byte for
byte, or refused with nothing written when a part or the whole does not match."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def parts():
    spec = importlib.util.spec_from_file_location("parts", ROOT / "scripts" / "parts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("size", [0, 999, 3000, 3001])
def test_split_and_join_give_the_file_back(parts, tmp_path, size):
    data = os.urandom(size)
    src = tmp_path / "model.gguf"
    src.write_bytes(data)
    manifest = parts.split(src, tmp_path / "parts", max_bytes=1000)
    spec = json.loads(manifest.read_text())
    assert manifest.name == "model.gguf.parts.json"
    assert len(spec["parts"]) == max(1, -(-size // 1000))
    assert spec["sha256"] == hashlib.sha256(data).hexdigest() and spec["bytes"] == size
    for p in spec["parts"]:
        part = (tmp_path / "parts" / p["name"]).read_bytes()
        assert len(part) == p["bytes"] <= 1000
        assert hashlib.sha256(part).hexdigest() == p["sha256"]
    out = parts.join(manifest, tmp_path / "back" / "model.gguf")
    assert out.read_bytes() == data


def test_join_refuses_a_damaged_or_missing_part_and_writes_nothing(parts, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(2500))
    manifest = parts.split(src, tmp_path / "p", max_bytes=1000)
    second = tmp_path / "p" / "f.bin.part-001"
    good = second.read_bytes()
    second.write_bytes(good[:500] + bytes([good[500] ^ 1]) + good[501:])  # one bit flipped
    out = tmp_path / "out" / "f.bin"
    with pytest.raises(parts.PartsError, match="part-001: sha256 or size"):
        parts.join(manifest, out)
    assert list((tmp_path / "out").iterdir()) == []  # no output, no temporary file
    second.unlink()
    with pytest.raises(parts.PartsError, match="part-001: part missing"):
        parts.join(manifest, out)
    second.write_bytes(good)
    spec = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**spec, "sha256": "0" * 64}))  # parts fine, whole not
    with pytest.raises(parts.PartsError, match="joined file's sha256"):
        parts.join(manifest, out)
    assert not out.exists()
    manifest.write_text(json.dumps(spec))
    assert parts.join(manifest, out).read_bytes() == src.read_bytes()


def test_command_line_says_what_failed(parts, tmp_path, capsys):
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(1500))
    assert parts.main(["split", str(src), str(tmp_path / "p"), "--max-bytes", "1000"]) == 0
    assert "2 parts" in capsys.readouterr().out
    manifest = tmp_path / "p" / "f.bin.parts.json"
    assert parts.main(["join", str(manifest), str(tmp_path / "f2.bin")]) == 0
    assert (tmp_path / "f2.bin").read_bytes() == src.read_bytes()
    (tmp_path / "p" / "f.bin.part-000").write_bytes(b"x")
    assert parts.main(["join", str(manifest), str(tmp_path / "f3.bin")]) == 1
    assert "part-000: sha256 or size" in capsys.readouterr().err
    assert not (tmp_path / "f3.bin").exists()
