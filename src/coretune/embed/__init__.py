"""Prompt embeddings: encoders by name (`encoders`, `onnx`) and the on-disk cache (`cache`)."""

from coretune.embed.cache import (
    Embedder,
    EmbeddingCache,
    cache_key,
    load_embeddings,
    prompt_digests,
    prompt_digests_sha,
)
from coretune.embed.encoders import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_ENCODER,
    DEFAULT_MAX_TOKENS,
    ENCODER_REGISTRY,
    RESPONSE,
    Encoder,
    MeanPoolEncoder,
    SentenceTransformerEncoder,
    check_encoder_spec,
    encoder_help,
    encoder_names,
    length_batches,
    make_encoder,
    normalise_rows,
    register_encoder,
    smollm2_path,
    split_response,
    with_response,
)

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_ENCODER", "DEFAULT_MAX_TOKENS", "ENCODER_REGISTRY",
           "RESPONSE", "Embedder", "EmbeddingCache", "Encoder",
           "MeanPoolEncoder", "SentenceTransformerEncoder", "cache_key", "check_encoder_spec",
           "encoder_help", "encoder_names", "length_batches", "load_embeddings", "make_encoder",
           "normalise_rows", "prompt_digests", "prompt_digests_sha", "register_encoder",
           "smollm2_path", "split_response", "with_response"]
