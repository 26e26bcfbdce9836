"""The embedded default: a generated product catalogue, a tokenizer trained on it, and a tiny random T5.

Everything here works with no network at all, so the README's main-job command and the tests run on a fresh
machine. The catalogue is generated from word lists written for this project; each item carries a two-level
category that is never part of its indexed text, so the AMI of learned IDs against it is a fair check.
"""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, T5Config

TINY_BACKBONE = "tiny-random-t5"
# The demo catalogue's label for AMI: never part of the indexed text.
DEMO_LABEL_FIELD = "subcategory"

# category -> subcategory -> product nouns; adjectives and brands are shared so that text overlap across
# categories is realistic and the IDs must learn from the nouns.
_CATALOGUE = {
    "Skin Care": {
        "Face": ["moisturizer", "cleanser", "serum", "toner", "face mask", "night cream"],
        "Body": ["body lotion", "body butter", "hand cream", "foot cream", "body oil"],
        "Sun": ["sunscreen", "after sun gel", "tinted sunscreen", "sun stick"],
    },
    "Hair Care": {
        "Shampoo": ["shampoo", "dry shampoo", "clarifying shampoo", "volumizing shampoo"],
        "Styling": ["hair spray", "styling gel", "hair wax", "curl cream", "texturizing spray"],
        "Treatment": ["hair mask", "leave-in conditioner", "scalp serum", "hair oil"],
    },
    "Makeup": {
        "Eyes": ["mascara", "eyeliner", "eyeshadow palette", "brow pencil", "lash primer"],
        "Lips": ["lipstick", "lip gloss", "lip liner", "lip balm", "liquid lipstick"],
        "Face Makeup": ["foundation", "concealer", "blush", "bronzer", "setting powder", "highlighter"],
    },
    "Nails": {
        "Polish": ["nail polish", "nail lacquer", "gel polish", "top coat", "base coat"],
        "Nail Tools": ["nail file", "cuticle pusher", "nail clipper", "buffer block"],
    },
    "Fragrance": {
        "Women": ["eau de parfum", "perfume mist", "floral perfume", "rollerball perfume"],
        "Men": ["cologne", "eau de toilette", "aftershave", "beard oil"],
    },
    "Tools": {
        "Brushes": ["foundation brush", "powder brush", "blending sponge", "kabuki brush"],
        "Appliances": ["hair dryer", "flat iron", "curling wand", "facial steamer"],
    },
}
# Words a shopper would read only in that kind of product: they carry the category signal, as real titles do.
_LEAF_PHRASES = {
    "Face": ["for oily skin", "pore refining", "with hyaluronic acid", "anti aging"],
    "Body": ["with shea butter", "for dry elbows", "cocoa scented", "all over body"],
    "Sun": ["spf 50", "broad spectrum spf 30", "reef safe", "water resistant spf"],
    "Shampoo": ["for oily scalp", "sulfate free wash", "for color treated hair", "daily cleansing hair"],
    "Styling": ["strong hold", "frizz control", "heat protect styling", "flexible hold"],
    "Treatment": ["for damaged hair", "bond repair", "deep conditioning", "split end repair"],
    "Eyes": ["smudge proof lashes", "for lash volume", "eye defining", "long wear lid"],
    "Lips": ["for soft lips", "creamy lip color", "kiss proof", "lip plumping"],
    "Face Makeup": ["full coverage", "oil free complexion", "buildable coverage", "dewy finish cheek"],
    "Polish": ["chip resistant nail", "quick dry nail", "glossy nail color", "salon nail finish"],
    "Nail Tools": ["stainless steel manicure", "for cuticles", "nail shaping", "manicure tool"],
    "Women": ["floral notes for her", "jasmine and rose", "feminine scent", "sweet vanilla scent"],
    "Men": ["woody notes for him", "cedar and musk", "masculine scent", "fresh citrus for men"],
    "Brushes": ["synthetic bristles", "for powder blending", "makeup applicator", "soft bristle brush"],
    "Appliances": ["ceramic plates", "ionic technology", "1875 watt", "tourmaline heat"],
}
_ADJECTIVES = [
    "hydrating",
    "gentle",
    "matte",
    "shimmer",
    "long lasting",
    "waterproof",
    "organic",
    "vegan",
    "travel size",
    "fragrance free",
    "sensitive",
    "brightening",
    "nourishing",
    "volumizing",
    "classic",
    "luxury",
    "mini",
    "professional",
    "daily",
    "soothing",
]
_BRANDS = ["Aveline", "Borealis", "Cindra", "Dovetail", "Elmsworth", "Fennick", "Glowry", "Halcyon", "Iverna"]
_DETAILS = ["1 oz", "2 fl oz", "50 ml", "pack of 2", "set of 3", "100 ml", "0.5 oz", "value size"]


def generate_demo_corpus(num_items: int = 480, seed: int = 0) -> list[dict]:
    """`num_items` products as `{"item_id", "title", "brand", "category", "subcategory"}`, deterministic in `seed`."""
    if num_items < 1:
        raise ValueError("num_items must be positive.")
    rng = random.Random(seed)
    leaves = [(category, sub, nouns) for category, subs in _CATALOGUE.items() for sub, nouns in subs.items()]
    items, seen_titles = [], set()
    while len(items) < num_items:
        category, subcategory, nouns = leaves[len(items) % len(leaves)]
        brand = rng.choice(_BRANDS)
        phrase = rng.choice(_LEAF_PHRASES[subcategory])
        title = f"{brand} {rng.choice(_ADJECTIVES)} {rng.choice(nouns)} {phrase} {rng.choice(_DETAILS)}"
        if title in seen_titles:
            title = f"{title} edition {len(items)}"
        seen_titles.add(title)
        items.append(
            {
                "item_id": f"DEMO{len(items):05d}",
                "title": title,
                "brand": brand,
                "category": category,
                "subcategory": f"{category} > {subcategory}",
            }
        )
    return items


def train_tokenizer(texts: list[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """A lowercase BPE tokenizer trained on `texts`, with T5's special-token layout (pad 0, eos 1, unk 2)."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_t5_config(vocab_size: int, d_model: int = 64) -> T5Config:
    """A T5 small enough to train in minutes on two CPU cores."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_model // 4,
        d_ff=d_model * 2,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=True,
    )


def write_jsonl(records: list[dict], path: str | Path) -> Path:
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def build_untrained_demo_indexer(output_dir: str | Path, num_items: int = 480, seed: int = 0) -> dict:
    """Build a small untrained indexer on the demo catalogue, save it, reload it through `AutoModel`, give every
    item its IDs and save the map next to it (what `lmindexer demo` runs). Returns the map's statistics."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ...modeling_lmindexer import LMIndexerConfig, LMIndexerForSemanticID, SemanticIDMap
    from ...modeling_lmindexer.semantic_id_map import ID_MAP_FILE
    from ..indexer.corpus_passes import assign_corpus

    torch.manual_seed(seed)
    items = generate_demo_corpus(num_items, seed=seed)
    texts = [f"{item['title']}; {item['brand']}" for item in items]
    tokenizer = train_tokenizer(texts)
    config = LMIndexerConfig(
        backbone_config=tiny_t5_config(len(tokenizer)).to_dict(),
        id_length=3,
        codebook_sizes=[8, 8, 8],
        dedup_size=num_items,
    )
    output_dir = Path(output_dir)
    LMIndexerForSemanticID(config).save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    model = AutoModel.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    codes = assign_corpus(model, tokenizer, texts, progress=False)
    id_map = SemanticIDMap.from_codes(
        [item["item_id"] for item in items],
        torch.as_tensor(codes),
        config.codebook_sizes,
        config.dedup_size,
        doc_titles=[item["title"] for item in items],
    )
    id_map.save(output_dir / ID_MAP_FILE)
    return id_map.statistics()
