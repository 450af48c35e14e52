"""The GPU-host packer: bf16 rounding is torch's, and what is packed unpacks to the same tensors."""

from __future__ import annotations

import numpy as np
import torch

from devtools.gpu_pack import decode_weights, encode_weights, from_bf16_bits, tensors_digest, to_bf16_bits


def test_bf16_rounding_matches_torch() -> None:
    values = np.random.default_rng(3).normal(size=4096).astype(np.float32) * 10.0
    ours = from_bf16_bits(to_bf16_bits(values))
    theirs = torch.from_numpy(values).to(torch.bfloat16).to(torch.float32).numpy()
    assert np.array_equal(ours, theirs)


def _tensors(vocab: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "embeddings.word_embeddings.weight": rng.normal(size=(vocab, 8)).astype(np.float32),
        "encoder.layer.0.attention.self.query.weight": rng.normal(size=(8, 8)).astype(np.float32),
        "encoder.layer.0.attention.self.query.bias": rng.normal(size=8).astype(np.float32),
        "embeddings.LayerNorm.weight": rng.normal(size=8).astype(np.float32),
        "embeddings.position_ids": np.arange(16, dtype=np.int64)[None, :],
    }


def test_pack_round_trip_keeps_exact_what_is_not_rounded() -> None:
    tensors = _tensors()
    kept = [0, 3, 7, 49]
    blob, table = encode_weights(tensors, vocab_size=50, kept_rows=kept)
    back = decode_weights(blob, table, kept)
    assert set(back) == set(tensors)
    name = "encoder.layer.0.attention.self.query.weight"
    assert np.array_equal(back[name], from_bf16_bits(to_bf16_bits(tensors[name])))  # rounded, as on the GPU
    for exact in (
        "encoder.layer.0.attention.self.query.bias",
        "embeddings.LayerNorm.weight",
        "embeddings.position_ids",
    ):
        assert np.array_equal(back[exact], tensors[exact])
        assert back[exact].dtype == tensors[exact].dtype
    words = back["embeddings.word_embeddings.weight"]
    assert np.array_equal(words[kept], tensors["embeddings.word_embeddings.weight"][kept])
    assert not words[1].any()  # a row no bench text uses is zero, shape unchanged
    assert words.shape == (50, 8)


def test_full_precision_pack_is_lossless() -> None:
    tensors = _tensors()
    blob, table = encode_weights(tensors, vocab_size=50, kept_rows=None, bf16=False)
    assert tensors_digest(decode_weights(blob, table, None)) == tensors_digest(tensors)
