"""A corrupted or truncated cache file is found by its recorded hash and recomputed, never
used: stage outputs and manifests, embedding-cache shards, the converted default model."""

import numpy as np
import pytest

from coretune.run.manifest import MANIFEST, Stage


def _stage(tmp_path, calls):
    def fn(folder):
        calls.append(1)
        (folder / "out.txt").write_text("result")

    return Stage("demo", tmp_path / "demo", {"x": 1}, fn)


def test_changed_output_or_truncated_manifest_reruns_the_stage(tmp_path):
    calls = []
    _stage(tmp_path, calls).run(log=lambda _: None)
    _stage(tmp_path, calls).run(log=lambda _: None)
    assert calls == [1]  # intact: skipped
    (tmp_path / "demo" / "out.txt").write_text("resulT")  # same size, other bytes
    _stage(tmp_path, calls).run(log=lambda _: None)
    assert calls == [1, 1] and (tmp_path / "demo" / "out.txt").read_text() == "result"
    manifest = tmp_path / "demo" / MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:40])  # truncated mid-JSON
    _stage(tmp_path, calls).run(log=lambda _: None)
    assert calls == [1, 1, 1]
    _stage(tmp_path, calls).run(log=lambda _: None)
    assert calls == [1, 1, 1]


class Lookup:
    """A real Encoder over fixed vectors, counting what it encodes."""

    name, pooling, max_tokens, dim = "lookup", "none", 0, 4

    def __init__(self):
        self.encoded = 0

    def encode(self, texts, batch_size=64, progress=None):
        self.encoded += len(texts)
        v = np.array([[len(t), t.count("a"), t.count("e"), 1.0] for t in texts], np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_corrupted_embedding_shard_is_recomputed(tmp_path):
    from coretune.embed import Embedder

    texts = [f"prompt {'a' * i}{'e' * (i % 3)}" for i in range(20)]
    enc = Lookup()
    first = Embedder(enc, cache_dir=tmp_path, quiet=True).embed(texts)
    (shard,) = [p for p in tmp_path.rglob("*.npy") if not p.name.endswith(".keys.npy")]
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte in the last vector: same size, still loads
    shard.write_bytes(bytes(raw))
    again = Embedder(enc, cache_dir=tmp_path, quiet=True)
    x = again.embed(texts)
    assert again.n_cached_ == 0 and again.n_encoded_ == 20 and enc.encoded == 40
    assert x.tobytes() == first.tobytes()
    third = Embedder(enc, cache_dir=tmp_path, quiet=True)  # the rewritten shard is trusted
    third.embed(texts)
    assert third.n_cached_ == 20


@pytest.mark.slow
def test_corrupted_model_copy_is_converted_again(tmp_path, monkeypatch):
    from coretune.models import HASHES, default_model_dir

    monkeypatch.setenv("CORETUNE_CACHE", str(tmp_path))
    path = default_model_dir()
    assert (path / HASHES).is_file()
    config = (path / "config.json").read_bytes()
    (path / "tokenizer.json").write_bytes(b"{}")  # truncated
    again = default_model_dir()
    assert again == path and (path / "tokenizer.json").stat().st_size > 1000
    assert (path / "config.json").read_bytes() == config
