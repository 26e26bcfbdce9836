"""Shared fixtures: tiny random backbones built from configs, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import T5Config

from lmindexer import LMIndexerConfig, LMIndexerForSemanticID
from lmindexer.trainers.demo import generate_demo_corpus, train_tokenizer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_t5(vocab_size: int = 120, d_model: int = 32) -> T5Config:
    return T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=4,
        dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )


def tiny_indexer_config(**overrides) -> LMIndexerConfig:
    settings = dict(backbone_config=tiny_t5().to_dict(), id_length=3, codebook_sizes=[6, 5, 4], dedup_size=16)
    settings.update(overrides)
    return LMIndexerConfig(**settings)


@pytest.fixture
def tiny_model() -> LMIndexerForSemanticID:
    torch.manual_seed(0)
    return LMIndexerForSemanticID(tiny_indexer_config())


@pytest.fixture(scope="session")
def demo_items() -> list[dict]:
    return generate_demo_corpus(120, seed=0)


@pytest.fixture(scope="session")
def demo_tokenizer(demo_items):
    return train_tokenizer([f"{item['title']}; {item['brand']}" for item in demo_items], vocab_size=400)


def random_batch(batch_size: int = 4, length: int = 10, vocab_size: int = 120, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab_size, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, length - 3 :] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    return input_ids, attention_mask
