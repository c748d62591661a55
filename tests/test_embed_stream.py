"""The embed step streams the pool: the real MiniLM encoder is fed at most `chunk_size` prompts
per call, the pool file is read `chunk_size` rows at a time, and the bytes are those of
encoding each distinct prompt once, in chunks of first appearance (the cache's contract)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coretune.data.pool import Pool, prompt_batches
from coretune.embed import Embedder, load_embeddings, make_encoder, prompt_digests_sha

CHUNK = 16


@pytest.fixture(scope="module")
def minilm():
    return make_encoder("minilm", max_tokens=32, device="cpu")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """70 real rows, prompts repeated across chunk boundaries (as templates repeat them)."""
    from conftest import small_pool

    base = small_pool().take(list(range(0, 320, 6)))  # 54 rows
    rows = base.table.to_pylist()
    rows += [{**rows[i], "uid": f"dup{j}"} for j, i in enumerate([0, 3, 20, 40, 53, 1] * 3)]
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("pool") / "pool.parquet"
    Pool.from_records([rows[i] for i in rng.permutation(len(rows))]).save(path)
    return path


class Recording:
    """A real encoder that records how many prompts each call gets (and can crash)."""

    def __init__(self, encoder, crash_after_calls: int | None = None):
        self.inner, self.crash_after = encoder, crash_after_calls
        self.name, self.dim = encoder.name, encoder.dim
        self.pooling, self.max_tokens = encoder.pooling, encoder.max_tokens
        self.calls: list[int] = []

    def encode(self, texts, batch_size=64, progress=None):
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append(len(texts))
        return self.inner.encode(texts, batch_size, progress)


def chunked_reference(encoder, prompts: list[str]) -> np.ndarray:
    """The cache's contract, computed directly: distinct prompts in order of first
    appearance, encoded CHUNK at a time, copied to every row that repeats them."""
    distinct = list(dict.fromkeys(prompts))
    vecs = np.concatenate([encoder.encode(distinct[i:i + CHUNK], 64)
                           for i in range(0, len(distinct), CHUNK)])
    where = {p: i for i, p in enumerate(distinct)}
    return vecs[[where[p] for p in prompts]]


def stream_to(embedder, path, folder, sizes: list[int] | None = None):
    rows, batches = prompt_batches(path, embedder.chunk_size)

    def recorded():
        for b in batches:
            if sizes is not None:
                sizes.append(len(b))
            yield b

    return embedder.embed_batches_to(recorded(), rows, folder)


def test_encoder_and_reader_see_at_most_a_chunk_and_bytes_match(minilm, pool, tmp_path):
    prompts = Pool.load(pool).prompts
    assert len(prompts) > 4 * CHUNK and len(set(prompts)) < len(prompts)
    enc, sizes = Recording(minilm), []
    emb = Embedder(enc, cache_dir=tmp_path / "cache", chunk_size=CHUNK, quiet=True)
    x = stream_to(emb, pool, tmp_path / "out", sizes)
    assert max(sizes) <= CHUNK and sum(sizes) == len(prompts)
    assert max(enc.calls) <= CHUNK and sum(enc.calls) == len(set(prompts)) == emb.n_encoded_
    assert x.tobytes() == chunked_reference(minilm, prompts).tobytes()
    # the same bytes from the in-memory API (one batch) and as the file the stage writes
    again = Embedder(minilm, cache_dir=tmp_path / "other", chunk_size=CHUNK, quiet=True)
    assert again.embed(prompts).tobytes() == x.tobytes()
    y, meta = load_embeddings(tmp_path / "out")
    assert y.tobytes() == x.tobytes()
    assert meta["prompts_sha256"] == prompt_digests_sha(prompts)
    assert (meta["rows"], meta["cached_rows"], meta["encoded_rows"]) == (
        len(prompts), 0, len(set(prompts)))


def test_warm_and_partly_warm_cache_give_the_same_bytes(minilm, pool, tmp_path):
    prompts = Pool.load(pool).prompts
    cold = stream_to(Embedder(minilm, cache_dir=tmp_path / "c", chunk_size=CHUNK, quiet=True),
                     pool, tmp_path / "cold")
    enc = Recording(minilm)
    warm = Embedder(enc, cache_dir=tmp_path / "c", chunk_size=CHUNK, quiet=True)
    assert stream_to(warm, pool, tmp_path / "warm").tobytes() == cold.tobytes()
    assert enc.calls == [] and warm.n_cached_ == len(prompts)
    # a cache holding every third distinct prompt: only the others are encoded
    part = Embedder(minilm, cache_dir=tmp_path / "p", chunk_size=CHUNK, quiet=True)
    part.embed(list(dict.fromkeys(prompts))[::3])
    enc = Recording(minilm)
    half = Embedder(enc, cache_dir=tmp_path / "p", chunk_size=CHUNK, quiet=True)
    x = stream_to(half, pool, tmp_path / "half")
    assert max(enc.calls) <= CHUNK and sum(enc.calls) == half.n_encoded_
    assert half.n_encoded_ == len(set(prompts)) - len(list(dict.fromkeys(prompts))[::3])
    np.testing.assert_allclose(x, cold, atol=1e-5)  # other chunks: other padding, same rows


def test_killed_stream_leaves_no_output_and_resumes_from_its_chunks(minilm, pool, tmp_path):
    prompts = Pool.load(pool).prompts
    emb = Embedder(Recording(minilm, crash_after_calls=2), cache_dir=tmp_path / "c",
                   chunk_size=CHUNK, quiet=True)
    with pytest.raises(KeyboardInterrupt):
        stream_to(emb, pool, tmp_path / "out")
    assert not (tmp_path / "out" / "embeddings.npy").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # no temporary left either
    enc = Recording(minilm)
    again = Embedder(enc, cache_dir=tmp_path / "c", chunk_size=CHUNK, quiet=True)
    x = stream_to(again, pool, tmp_path / "out")
    assert again.n_encoded_ == len(set(prompts)) - 2 * CHUNK  # two chunks were committed
    assert x.tobytes() == chunked_reference(minilm, prompts).tobytes()
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["rows"] == len(prompts)


def test_announced_row_count_is_checked(minilm, tmp_path):
    emb = Embedder(minilm, cache_dir=tmp_path / "c", chunk_size=CHUNK, quiet=True)
    with pytest.raises(ValueError, match="held 2 prompts, not the 3"):
        emb.embed_batches_to([["a b c", "d e f"]], 3, tmp_path / "out")
    assert not (tmp_path / "out" / "embeddings.npy").exists()


def test_pool_prompt_batches_are_the_prompts_in_order(pool):
    p = Pool.load(pool)
    batches = list(p.prompt_batches(CHUNK))
    assert max(map(len, batches)) == CHUNK and sum(batches, []) == p.prompts
    n, from_file = prompt_batches(pool, 7)
    assert n == len(p) and sum(from_file, []) == p.prompts
