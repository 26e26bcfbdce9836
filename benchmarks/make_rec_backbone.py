"""A small, randomly initialised T5 for comparing ID methods downstream on one recommender, with a BPE tokenizer
trained on the catalogue's titles. With `--history_format ids` the input is nothing but ID tokens, so the text
vocabulary stays small. TIGER's size is `--layers 4 --heads 6 --d_kv 64 --d_ff 1024`; the defaults are a quarter of
its per-token cost, which is what 2 CPU cores afford (a step of TIGER's size at batch 256 took about 28 s here).

    python benchmarks/make_rec_backbone.py --data ../shared/data/amazon-beauty --output runs/rec-t5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration

from lmindexer.trainers.data.corpus import load_records
from lmindexer.trainers.data.demo import train_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="Folder with items.jsonl.")
    parser.add_argument("--output", required=True)
    parser.add_argument("--vocab_size", type=int, default=2000)
    parser.add_argument("--d_model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d_kv", type=int, default=32)
    parser.add_argument("--d_ff", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    titles = [str(item.get("title") or "") for item in load_records(Path(args.data) / "items.jsonl")]
    tokenizer = train_tokenizer(titles, vocab_size=args.vocab_size)
    torch.manual_seed(args.seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=args.d_model,
        d_kv=args.d_kv,
        d_ff=args.d_ff,
        num_heads=args.heads,
        num_layers=args.layers,
        num_decoder_layers=args.layers,
        dropout_rate=0.1,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    T5ForConditionalGeneration(config).save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    print(
        f"{args.output}: T5 with {sum(p.numel() for p in T5ForConditionalGeneration(config).parameters()):,} "
        f"parameters, vocabulary {len(tokenizer)}"
    )


if __name__ == "__main__":
    main()
