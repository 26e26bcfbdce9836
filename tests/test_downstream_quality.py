"""Downstream quality: ID tokens that start where the indexer's codes are, histories rendered the same way in
fine-tuning and serving (order, truncation, format), the paper's AdamW eps, the dedup-confusion metric, and a BART
retriever end to end."""

import copy
import json
import re

import pytest
import torch
from conftest import build_tiny_retriever
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoModel,
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertModel,
    PreTrainedTokenizerFast,
    T5Config,
)

from lmindexer import LMIndexerConfig, LMIndexerForGenerativeRetrieval, LMIndexerForSemanticID, SemanticIDMap
from lmindexer.modeling_lmindexer.configuration_lmindexer import BEFORE_RECIPE
from lmindexer.trainers.data.demo import write_jsonl
from lmindexer.trainers.downstream.collators import RetrievalCollator
from lmindexer.trainers.downstream.data import HistoryFormat, recommendation_splits
from lmindexer.trainers.downstream.finetuning import DownstreamDataArguments, load_downstream_splits
from lmindexer.trainers.downstream.retrieval_trainer import GenerativeRetrievalTrainer, RetrievalTrainingArguments

CODEBOOK_SIZES = [8, 5]


# ------------------------------------------------------------------------------------ 1. ID-token initialisation
def word_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A BERT-style word-level tokenizer ([CLS] text [SEP], lowercased) over the words of `texts`."""
    words = sorted({word for text in texts for word in text.lower().split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{word: 4 + i for i, word in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def tiny_indexer(kind: str, tokenizer, folder, geometry: str = "cosine") -> LMIndexerForSemanticID:
    """A random tiny indexer: T5 (tied, scaled outputs), T5 untied (flan-t5 style: no output scaling), BART, or a
    bert2bert made by `from_backbone` from a saved BERT without any `cls.*` weights (as all-MiniLM). BART and BERT
    start with large weights: at their usual scale, random decoders give every document nearly the same state."""
    torch.manual_seed(0)
    # The recipe as Python-built configs defaulted to it when these tests were written (`BEFORE_RECIPE`).
    settings = dict(BEFORE_RECIPE, id_length=2, codebook_sizes=CODEBOOK_SIZES, dedup_size=128, code_geometry=geometry)
    common = dict(vocab_size=len(tokenizer), pad_token_id=0, decoder_start_token_id=0, eos_token_id=1)
    if kind in ("t5", "t5-untied"):
        t5 = T5Config(
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            dropout_rate=0.0,
            **common,
            **({"tie_word_embeddings": False} if kind == "t5-untied" else {}),
        )
        assert t5.scale_decoder_outputs is (kind == "t5")
        return LMIndexerForSemanticID(LMIndexerConfig(backbone_config=t5.to_dict(), **settings)).eval()
    if kind == "bart":
        bart = BartConfig(
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=64,
            dropout=0.0,
            init_std=0.5,
            **common,
        )
        return LMIndexerForSemanticID(LMIndexerConfig(backbone_config=bart.to_dict(), **settings)).eval()
    bert = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.5,
    )
    BertModel(bert).save_pretrained(folder)  # an encoder checkpoint: the decoder's LM head starts at random
    tokenizer.save_pretrained(folder)
    return LMIndexerForSemanticID.from_backbone(str(folder), tokenizer=tokenizer, **settings).eval()


@torch.no_grad()
def set_codebooks_from_documents(indexer, encoded, seed: int = 0) -> torch.Tensor:
    """Codebooks like k-means centroids, without training: each row is `h^t` of one document. In cosine geometry
    the rows are rescaled by random factors (trained codebooks have unequal norms); in dot geometry they are centred
    and made orthogonal to the mean state, or the row most aligned with the states' shared direction would take every
    document. Returns the indexer's codes of every document."""
    generator = torch.Generator().manual_seed(seed)
    codes = None
    for position, size in enumerate(CODEBOOK_SIZES, start=1):
        states = indexer.encode_position(encoded["input_ids"], encoded["attention_mask"], codes)
        chosen = []  # documents whose states differ (several documents share a text, or nearly)
        for row in torch.randperm(len(states), generator=generator).tolist():
            if all(torch.cosine_similarity(states[row], states[other], dim=0) < 0.9999 for other in chosen):
                chosen.append(row)
            if len(chosen) == size:
                break
        if indexer.config.code_geometry == "cosine":
            rows = states[chosen] * (0.25 + 4 * torch.rand(size, 1, generator=generator))
        else:
            mean = torch.nn.functional.normalize(states.mean(0), dim=0)
            rows = states[chosen] - states.mean(0)
            rows = rows - (rows @ mean)[:, None] * mean
        indexer.codebooks[position].weight.copy_(rows)
        codes = indexer.assign_codes(encoded["input_ids"], encoded["attention_mask"], position)
    return codes


@torch.no_grad()
def first_steps(retriever, encoded, codes):
    """The retriever's logits over `<id_1_*>` at the first step and over `<id_2_*>` after the indexer's `c^1`."""
    first, second = retriever.config.id_token_offsets[:2]
    start = retriever.generation_config.decoder_start_token_id
    decoder_input_ids = torch.stack([torch.full_like(codes[:, 0], start), codes[:, 0] + first], 1)
    logits = retriever(
        input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], decoder_input_ids=decoder_input_ids
    ).logits
    return logits[:, 0, first : first + CODEBOOK_SIZES[0]], logits[:, 1, second : second + CODEBOOK_SIZES[1]]


@pytest.mark.parametrize(
    "kind, geometry",
    [
        ("t5", "cosine"),
        ("t5", "dot"),
        ("t5-untied", "cosine"),
        ("t5-untied", "dot"),
        ("bart", "cosine"),
        ("bert2bert", "cosine"),
        ("bert2bert", "dot"),
    ],
)
def test_untrained_retriever_scores_id_tokens_like_the_indexer(kind, geometry, demo_items, demo_tokenizer, tmp_path):
    """Before any fine-tuning, the retriever's first-step choice among `<id_1_*>` is the indexer's c^1 (and its
    second-step choice after c^1 is c^2): the ID-token logits are the indexer's code logits, for every backbone."""
    texts = [item["title"] for item in demo_items]
    tokenizer = word_tokenizer(texts) if kind == "bert2bert" else copy.deepcopy(demo_tokenizer)
    indexer = tiny_indexer(kind, tokenizer, tmp_path / "backbone", geometry)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    codes = set_codebooks_from_documents(indexer, encoded)
    assert len(set(codes[:, 0].tolist())) >= CODEBOOK_SIZES[0] // 2  # the indexer's codes are not degenerate
    id_map = SemanticIDMap.from_codes(
        [item["item_id"] for item in demo_items], codes, CODEBOOK_SIZES, 128, doc_titles=texts
    )
    retriever = LMIndexerForGenerativeRetrieval.from_indexer(indexer, tokenizer=tokenizer, id_map=id_map).eval()
    assert retriever.config.id_token_scoring == "codebook"
    first, second = first_steps(retriever, encoded, codes)
    with torch.no_grad():
        states = indexer.decoder_states(encoded["input_ids"], encoded["attention_mask"], codes[:, :1])
        expected = [indexer.code_logits(states[:, 0], 1), indexer.code_logits(states[:, 1], 2)]
    torch.testing.assert_close(first, expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(second, expected[1], atol=1e-4, rtol=1e-4)
    # The choice agrees wherever the indexer's own choice is not a tie (documents with one text, rounding).
    for logits, reference, position in ((first, expected[0], 0), (second, expected[1], 1)):
        top2 = reference.topk(2, dim=-1).values
        clear = top2[:, 0] - top2[:, 1] > 1e-3
        assert clear.float().mean() > 0.9
        agreement = (logits.argmax(-1) == codes[:, position])[clear].float().mean().item()
        assert agreement == 1.0, (position, agreement)  # chance is 1/8 and 1/5
    # Greedy constrained decoding then returns the indexer's own learned ID for every document.
    ranked = retriever.retrieve(texts[:20], tokenizer=tokenizer, top_k=1, num_beams=1)
    assert [hit[0]["semantic_id"][:2] for hit in ranked] == [tuple(c) for c in codes[:20].tolist()]
    # Text tokens are still scored by the LM head: the scoring replaces the ID tokens' logits only.
    offsets = retriever.config.id_token_offsets
    plain = copy.deepcopy(retriever)
    plain.config.id_token_scoring = "lm_head"
    plain.install_id_token_scoring()
    decoder_input_ids = torch.full((len(texts), 1), retriever.generation_config.decoder_start_token_id)
    with torch.no_grad():
        scored = retriever(**encoded, decoder_input_ids=decoder_input_ids).logits[:, 0]
        unscored = plain(**encoded, decoder_input_ids=decoder_input_ids).logits[:, 0]
    assert torch.equal(scored[:, : offsets[0]], unscored[:, : offsets[0]])
    assert not torch.allclose(
        scored[:, offsets[0] : offsets[0] + CODEBOOK_SIZES[0]], unscored[:, offsets[0] : offsets[0] + CODEBOOK_SIZES[0]]
    )


def test_id_token_scoring_survives_save_and_load(demo_items, tmp_path):
    texts = [item["title"] for item in demo_items]
    tokenizer = word_tokenizer(texts)
    indexer = tiny_indexer("bert2bert", tokenizer, tmp_path / "bert")
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    codes = set_codebooks_from_documents(indexer, encoded)
    id_map = SemanticIDMap.from_codes([item["item_id"] for item in demo_items], codes, CODEBOOK_SIZES, 128)
    retriever = LMIndexerForGenerativeRetrieval.from_indexer(indexer, tokenizer=tokenizer, id_map=id_map).eval()
    retriever.save_pretrained(tmp_path / "retriever")
    loaded = AutoModel.from_pretrained(tmp_path / "retriever").eval()
    assert loaded.config.id_token_scoring == "codebook"
    for expected, got in zip(first_steps(retriever, encoded, codes), first_steps(loaded, encoded, codes)):
        torch.testing.assert_close(got, expected)
    # The encoder reads ID tokens too (`ids` histories): there its rows keep the codebook directions at the norm of
    # the text rows, not the codebook's (which is that of decoder states).
    encoder_table = loaded.backbone.encoder.get_input_embeddings().weight
    start = loaded.config.id_token_offsets[0]
    id_rows, text_rows = encoder_table[start : start + CODEBOOK_SIZES[0]], encoder_table[:start]
    torch.testing.assert_close(id_rows.norm(dim=1), text_rows.norm(dim=1).mean().expand(CODEBOOK_SIZES[0]))
    cosine = torch.nn.functional.cosine_similarity(id_rows, indexer.codebooks[1].weight, dim=1)
    torch.testing.assert_close(cosine, torch.ones_like(cosine))


# ------------------------------------------------------------------------------------ 2-4. history rendering
@pytest.fixture
def catalogue(tmp_path, demo_items):
    """Items with long texts (a title and a long description), and users with long histories."""
    items = [dict(item, description=f"{item['title']} " * 4) for item in demo_items[:30]]
    write_jsonl(items, tmp_path / "items.jsonl")
    ids = [item["item_id"] for item in items]
    users = [{"user_id": f"u{u}", "items": [ids[(u * 7 + k * 3) % 30] for k in range(6 + u % 3)]} for u in range(5)]
    write_jsonl(users, tmp_path / "sequences.jsonl")
    return tmp_path, items, users


def rendered_retriever(demo_items, demo_tokenizer, data_args):
    """A tiny retriever over `demo_items[:30]` whose config carries the history settings of `data_args`, as
    `finetune_retriever` sets them."""
    model, tokenizer = build_tiny_retriever(demo_items[:30], demo_tokenizer)
    for key, value in data_args.retriever_config_fields().items():
        setattr(model.config, key, value)
    model.tokenizer = tokenizer
    return model, tokenizer


@pytest.mark.parametrize("newest_first", [False, True])
def test_newest_item_survives_truncation(newest_first, catalogue, demo_items, demo_tokenizer):
    """A history longer than `max_length` keeps its newest item, in training batches and in serving, in either order."""
    folder, items, users = catalogue
    data_args = DownstreamDataArguments(
        task="recommendation", data=str(folder), max_length=12, newest_first=newest_first
    )
    model, tokenizer = rendered_retriever(demo_items, demo_tokenizer, data_args)
    splits = load_downstream_splits(data_args, model.id_map, model.config)
    sample = splits["test"][0]
    newest_title = next(item["title"] for item in items if item["item_id"] == users[0]["items"][-2])
    assert len(tokenizer(sample["input_text"])["input_ids"]) > 3 * 12  # far too long for max_length
    batch = RetrievalCollator(tokenizer, model, data_args.max_length)([sample])
    served = model.encode_queries([sample["input_text"]], tokenizer)
    assert torch.equal(batch["input_ids"], served["input_ids"])
    assert batch["input_ids"].shape[1] == 12 and batch["input_ids"][0, -1] == tokenizer.eos_token_id
    kept = batch["input_ids"][0, :-1].tolist()
    title = tokenizer(newest_title, add_special_tokens=False)["input_ids"]
    shown = min(len(title), len(kept))
    # Newest first, the text starts with the newest item; oldest first, it ends with it.
    assert (kept[:shown] == title[:shown]) if newest_first else (kept[-shown:] == title[-shown:]), (kept, title)


@pytest.mark.parametrize("history_format", ["text", "ids", "text+ids"])
def test_training_and_serving_render_histories_identically(
    history_format, catalogue, demo_items, demo_tokenizer, tmp_path
):
    """Every training / validation / test sample equals `model.render_history` of the same item IDs, also after the
    model was saved and loaded, so fine-tuning, `retrieve` callers and the Space all see one rendering."""
    folder, items, users = catalogue
    data_args = DownstreamDataArguments(
        task="recommendation",
        data=str(folder),
        max_history=3,
        newest_first=True,
        history_separator=" | ",
        history_format=history_format,
    )
    model, tokenizer = rendered_retriever(demo_items, demo_tokenizer, data_args)
    assert (
        model.config.history_format,
        model.config.history_max_items,
        model.config.history_newest_first,
        model.config.history_separator,
        model.config.history_text_fields,
    ) == (history_format, 3, True, " | ", ["title"])
    splits = load_downstream_splits(data_args, model.id_map, model.config)
    histories = {"train": [], "validation": [], "test": []}
    for user in users:
        sequence = user["items"]
        histories["train"] += [sequence[:target] for target in range(1, len(sequence) - 2)]
        histories["validation"].append(sequence[:-2])
        histories["test"].append(sequence[:-1])
    model.save_pretrained(tmp_path / "saved", model_card=False)
    loaded = AutoModel.from_pretrained(tmp_path / "saved")
    for split, expected in histories.items():
        assert splits[split]["input_text"] == [model.render_history(history) for history in expected]
        assert splits[split]["input_text"] == [loaded.render_history(history) for history in expected]
    titles = {item["item_id"]: item["title"] for item in items}
    history = users[0]["items"][:5]
    readable = [
        "".join(f"<id_{p}_{c}>" for p, c in enumerate(model.id_map.semantic_id(item), start=1)) for item in history
    ]
    text = {
        "text": [titles[item] for item in history],
        "ids": readable,
        "text+ids": [f"{ids} {titles[item]}" for ids, item in zip(readable, history)],
    }[history_format]
    assert model.render_history(history) == " | ".join(text[-3:][::-1])


@pytest.mark.parametrize("history_format", ["text", "ids", "text+ids"])
def test_history_id_tokens_are_single_added_tokens(history_format, demo_items, demo_tokenizer):
    """ID tokens in the input are the added tokens (one token each, in order, newest first here), never sub-words."""
    data_args = DownstreamDataArguments(task="recommendation", history_format=history_format, newest_first=True)
    model, tokenizer = rendered_retriever(demo_items, demo_tokenizer, data_args)
    history = [demo_items[i]["item_id"] for i in (3, 17, 8, 25)]
    encoded = model.encode_queries([model.render_history(history)], tokenizer)["input_ids"][0].tolist()
    first_id_token = model.config.id_token_offsets[0]
    id_tokens = [token for token in encoded if token >= first_id_token]
    expected = [
        token
        for item in reversed(history)
        for token in model.codes_to_tokens(torch.tensor(model.id_map.semantic_id(item))).tolist()
    ]
    assert id_tokens == ([] if history_format == "text" else expected)
    decoded = tokenizer.convert_ids_to_tokens(encoded)
    if history_format != "text":
        assert not any(re.search(r"id_\d", piece) for piece in decoded if not re.fullmatch(r"<id_\d+_\d+>", piece))
    if history_format != "ids":
        assert tokenizer.decode(encoded, skip_special_tokens=True).count(demo_items[25]["title"].lower()) == 1
    else:  # nothing but ID tokens, separators and EOS
        rest = [token for token in encoded[:-1] if token < first_id_token]
        assert encoded[-1] == tokenizer.eos_token_id and tokenizer.decode(rest).replace(";", "").strip() == ""


def test_render_history_takes_given_texts_and_free_text(demo_items, demo_tokenizer):
    data_args = DownstreamDataArguments(task="recommendation", item_text_fields="title,brand")
    model, _ = rendered_retriever(demo_items, demo_tokenizer, data_args)
    first, second = demo_items[0], demo_items[1]
    texts = {first["item_id"]: "given one", second["item_id"]: "given two"}
    assert model.render_history([first["item_id"], second["item_id"]], item_texts=texts) == "given one ; given two"
    assert (
        model.render_history([first["item_id"], "a new item"], item_texts=["given one", None])
        == "given one ; a new item"
    )
    model.config.history_format = "ids"
    with pytest.raises(ValueError, match="not in the ID map"):
        model.render_history([first["item_id"], "a new item"])
    with pytest.raises(ValueError, match="empty"):
        model.render_history([])


def test_space_renders_histories_as_the_model_does(catalogue, demo_items, demo_tokenizer, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from lmindexer.hub_cards import save_for_hub
    from lmindexer.hub_cards.space.app import RetrievalDemo

    folder, items, users = catalogue
    data_args = DownstreamDataArguments(
        task="recommendation", data=str(folder), newest_first=True, history_format="text+ids"
    )
    model, tokenizer = rendered_retriever(demo_items, demo_tokenizer, data_args)
    save_for_hub(model, tmp_path / "published", tokenizer=tokenizer, repo_id="org/tiny-retriever")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    demo = RetrievalDemo(str(tmp_path / "published"))
    history = users[1]["items"][:4]
    assert demo.query_text("", history) == model.render_history(history)
    assert demo.query_text("", history).startswith(
        "".join(f"<id_{p}_{c}>" for p, c in enumerate(model.id_map.semantic_id(history[-1]), 1))
    )


def test_history_format_defaults_keep_the_paper_and_old_models():
    assert HistoryFormat().history_format == "text"
    assert DownstreamDataArguments().history_format == "text"
    with pytest.raises(ValueError, match="history_format"):
        HistoryFormat(history_format="tokens")


def test_history_format_ids_needs_the_id_map(catalogue):
    folder, _, _ = catalogue
    with pytest.raises(ValueError, match="ID map"):
        recommendation_splits(folder / "sequences.jsonl", folder / "items.jsonl", HistoryFormat(history_format="ids"))


# ------------------------------------------------------------------------------------ 5. AdamW eps
def test_downstream_adam_epsilon_is_the_papers():
    assert RetrievalTrainingArguments().adam_epsilon == 1e-6
    assert RetrievalTrainingArguments(adam_epsilon=1e-8).adam_epsilon == 1e-8


# ------------------------------------------------------------------------------------ 6. dedup confusion
def test_prefix_right_dedup_wrong_at_1(demo_items, demo_tokenizer, tmp_path):
    import datasets

    model, tokenizer = build_tiny_retriever(demo_items[:24], demo_tokenizer)
    id_map = model.id_map
    by_learned = {}
    for doc_id in id_map.doc_ids:
        by_learned.setdefault(id_map.semantic_id(doc_id)[:2], []).append(doc_id)
    twins = next(group for group in by_learned.values() if len(group) >= 2)  # same learned ID, other dedup token
    other = next(doc for doc in id_map.doc_ids if id_map.semantic_id(doc)[:2] != id_map.semantic_id(twins[0])[:2])
    queries = [  # (relevant documents, top-1 returned)
        ({twins[0]: 1}, twins[0]),  # right
        ({twins[0]: 1}, twins[1]),  # right learned prefix, wrong dedup token
        ({twins[0]: 1}, other),  # wrong prefix
        ({twins[0]: 1, other: 1}, twins[1]),  # a relevant document shares the prefix, dedup token wrong
        ({twins[0]: 1}, None),  # nothing returned
    ]
    rows = [
        {"input_text": f"query {i}", "target_doc_id": next(iter(relevant)), "relevant": json.dumps(relevant)}
        for i, (relevant, _) in enumerate(queries)
    ]
    answers = {f"query {i}": top for i, (_, top) in enumerate(queries)}

    def retrieve(texts, **kwargs):
        return [
            [{"doc_id": answers[t], "semantic_id": id_map.semantic_id(answers[t]), "score": 0.0}] if answers[t] else []
            for t in texts
        ]

    model.retrieve = retrieve
    args = RetrievalTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, eval_ks="1,5", eval_num_beams=5
    )
    trainer = GenerativeRetrievalTrainer(
        model=model, args=args, data_collator=RetrievalCollator(tokenizer, model, 32), processing_class=tokenizer
    )
    metrics = trainer.evaluate(datasets.Dataset.from_list(rows))
    assert metrics["eval_prefix_right_dedup_wrong@1"] == pytest.approx(2 / 5)
    assert metrics["eval_recall@1"] == pytest.approx(1 / 5)


# ------------------------------------------------------------------------------------ 7. BART end to end
def tiny_bart(vocab_size: int, **overrides) -> BartForConditionalGeneration:
    settings = dict(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        decoder_start_token_id=1,
        forced_eos_token_id=1,
    )
    settings.update(overrides)
    torch.manual_seed(0)
    model = BartForConditionalGeneration(BartConfig(**settings))
    # What a real BART checkpoint's generation config holds (facebook/bart-large): all of it would break the trie.
    model.generation_config.forced_bos_token_id = 2
    model.generation_config.no_repeat_ngram_size = 3
    model.generation_config.min_length = 12
    return model


def test_bart_retriever_end_to_end(demo_items, demo_tokenizer, tmp_path):
    tokenizer = copy.deepcopy(demo_tokenizer)
    items = demo_items[:40]
    codes = torch.tensor([[i % 3, (i // 3) % 4] for i in range(len(items))])
    id_map = SemanticIDMap.from_codes(
        [i["item_id"] for i in items], codes, [3, 4], 8, doc_titles=[i["title"] for i in items]
    )
    model = LMIndexerForGenerativeRetrieval.from_backbone_and_map(tiny_bart(len(tokenizer)), tokenizer, id_map).eval()
    generation = model.generation_config
    assert (generation.decoder_start_token_id, generation.eos_token_id, generation.pad_token_id) == (1, 1, 0)
    assert (
        generation.forced_bos_token_id is None
        and generation.no_repeat_ngram_size is None
        and generation.min_length in (None, 0)
    )
    queries = ["hydrating face serum", "red lipstick"]
    ranked = model.retrieve(queries, tokenizer=tokenizer, top_k=5, num_beams=8)
    for hits in ranked:
        assert len(hits) == 5 and len({hit["doc_id"] for hit in hits}) == 5
        assert all(
            id_map.semantic_id(hit["doc_id"]) == hit["semantic_id"] and len(hit["semantic_id"]) == 3 for hit in hits
        )
    greedy = model.retrieve(queries, tokenizer=tokenizer, top_k=1, num_beams=1)
    assert all(len(hits) == 1 for hits in greedy)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert loaded.backbone.config.model_type == "bart" and loaded.generation_config.decoder_start_token_id == 1
    assert loaded.retrieve(queries, tokenizer=AutoTokenizer.from_pretrained(tmp_path), top_k=5, num_beams=8) == ranked
    encoded = tokenizer(queries, return_tensors="pt", padding=True)
    # A forced EOS at the last step agrees with the trie (every ID ends with EOS); a forced BOS cannot.
    output = loaded.generate(**encoded, num_beams=4, forced_eos_token_id=1)
    assert output.shape[1] == 1 + 3 + 1 and (output[:, -1] == 1).all()
    with pytest.raises(ValueError, match="forced_bos_token_id"):
        loaded.generate(**encoded, num_beams=4, forced_bos_token_id=2)
    with pytest.raises(ValueError, match="forced_eos_token_id"):
        loaded.generate(**encoded, num_beams=4, forced_eos_token_id=2)


def test_length_grouping_column_counts_the_collated_tokens(catalogue, demo_items, demo_tokenizer):
    """`--train_sampling_strategy group_by_length` reads one length per sample: the token count the collator pads to
    (ID tokens are single tokens), capped at `max_length`."""
    from lmindexer.trainers.downstream.finetuning import with_token_lengths

    folder, _, _ = catalogue
    data_args = DownstreamDataArguments(task="recommendation", data=str(folder), history_format="ids", max_length=16)
    model, tokenizer = rendered_retriever(demo_items, demo_tokenizer, data_args)
    train = with_token_lengths(
        load_downstream_splits(data_args, model.id_map, model.config)["train"],
        tokenizer,
        "length",
        data_args.max_length,
    )
    collator = RetrievalCollator(tokenizer, model, data_args.max_length)
    lengths = [int(collator([sample])["attention_mask"].sum()) for sample in train]
    assert train["length"] == lengths and max(lengths) == 16 and min(lengths) < 16
