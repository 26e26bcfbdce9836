import pytest
import torch
from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer, T5ForConditionalGeneration

from lmindexer import LMIndexerConfig, LMIndexerForGenerativeRetrieval, LMIndexerForSemanticID, SemanticIDMap
from lmindexer.trainers.data.demo import tiny_t5_config


@pytest.fixture(scope="module")
def indexer_dir(tmp_path_factory, demo_items, demo_tokenizer):
    torch.manual_seed(0)
    texts = [item["title"] for item in demo_items]
    config = LMIndexerConfig(
        backbone_config=tiny_t5_config(len(demo_tokenizer), 32).to_dict(),
        id_length=2,
        codebook_sizes=[5, 4],
        dedup_size=128,
    )
    indexer = LMIndexerForSemanticID(config).eval()
    encoded = demo_tokenizer(texts, padding=True, return_tensors="pt")
    codes = indexer.assign_codes(encoded["input_ids"], encoded["attention_mask"])
    id_map = SemanticIDMap.from_codes([i["item_id"] for i in demo_items], codes, [5, 4], 128, doc_titles=texts)
    folder = tmp_path_factory.mktemp("indexer")
    indexer.save_pretrained(folder)
    demo_tokenizer.save_pretrained(folder)
    id_map.save(folder / "semantic_id_map.safetensors")
    return folder


@pytest.fixture(scope="module")
def retriever(indexer_dir):
    return LMIndexerForGenerativeRetrieval.from_indexer(indexer_dir).eval()


def test_from_indexer_copies_codebooks_into_id_tokens(indexer_dir, retriever):
    indexer = LMIndexerForSemanticID.from_pretrained(indexer_dir)
    offsets = retriever.config.id_token_offsets
    table = retriever.get_input_embeddings().weight
    assert torch.equal(table[offsets[0] : offsets[0] + 5], indexer.codebooks[1].weight)
    assert torch.equal(table[offsets[1] : offsets[1] + 4], indexer.codebooks[2].weight)
    assert table.shape[0] == len(retriever.tokenizer) == offsets[2] + 128
    assert retriever.tokenizer.convert_ids_to_tokens(offsets[1] + 3) == "<id_2_3>"


def test_generated_ids_decode_to_readable_tokens_and_exist(retriever):
    encoded = retriever.tokenizer(["hydrating face serum", "red lipstick"], return_tensors="pt", padding=True)
    output = retriever.generate(**encoded, num_beams=6, num_return_sequences=6)
    texts = retriever.tokenizer.batch_decode(output, skip_special_tokens=True)
    import re

    for text in texts:
        match = re.fullmatch(r"<id_1_(\d+)><id_2_(\d+)><id_3_(\d+)>", text)
        assert match, text
        assert retriever.id_map.doc_id(tuple(int(g) for g in match.groups())) is not None


def test_retrieve_returns_ranked_unique_documents(retriever):
    results = retriever.retrieve(["hydrating face serum", "red lipstick", "hair dryer"], top_k=5, num_beams=10)
    assert len(results) == 3
    for ranked in results:
        assert len(ranked) == 5
        assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
        assert len({r["doc_id"] for r in ranked}) == 5
        for entry in ranked:
            assert retriever.id_map.semantic_id(entry["doc_id"]) == entry["semantic_id"]
            assert entry["title"] == retriever.id_map.title(entry["doc_id"])


def test_unconstrained_generation_can_leave_the_trie(retriever):
    encoded = retriever.tokenizer(["x"], return_tensors="pt")
    free = retriever.generate(**encoded, constrained=False, num_beams=1, max_new_tokens=4, do_sample=False)
    assert free.shape[0] == 1  # runs; no guarantee of validity without the trie


def test_save_and_load_with_the_map(retriever, tmp_path):
    retriever.save_pretrained(tmp_path)
    retriever.tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "semantic_id_map.safetensors").exists()
    for loaded in (AutoModel.from_pretrained(tmp_path), AutoModelForSeq2SeqLM.from_pretrained(tmp_path)):
        assert isinstance(loaded, LMIndexerForGenerativeRetrieval)
        assert loaded.id_map == retriever.id_map
        query = ["gentle cleanser"]
        assert loaded.eval().retrieve(
            query, tokenizer=AutoTokenizer.from_pretrained(tmp_path), top_k=3, num_beams=6
        ) == retriever.retrieve(query, top_k=3, num_beams=6)


def test_any_backbone_and_any_map(demo_tokenizer, demo_items):
    tokenizer = AutoTokenizer.from_pretrained(demo_tokenizer.name_or_path) if demo_tokenizer.name_or_path else None
    import copy

    tokenizer = copy.deepcopy(demo_tokenizer)
    backbone = T5ForConditionalGeneration(tiny_t5_config(len(tokenizer), 32))
    codes = torch.tensor([[i % 3, (i // 3) % 3] for i in range(len(demo_items))])
    id_map = SemanticIDMap.from_codes([i["item_id"] for i in demo_items], codes, [3, 3], 16)
    model = LMIndexerForGenerativeRetrieval.from_backbone_and_map(backbone, tokenizer, id_map).eval()
    assert model.config.id_vocabulary_sizes == [3, 3, 16]
    ranked = model.retrieve(["mascara"], tokenizer=tokenizer, top_k=4, num_beams=4)[0]
    assert len(ranked) == 4 and all(model.id_map.semantic_id(r["doc_id"]) == r["semantic_id"] for r in ranked)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.retrieve([""]), "empty"),
        (lambda m: m.retrieve([]), "empty"),
        (lambda m: m.retrieve(["a"], top_k=30, num_beams=20), r"`top_k` \(30\) cannot exceed `num_beams` \(20\)"),
    ],
)
def test_bad_retrieval_input(retriever, call, message):
    with pytest.raises(ValueError, match=message):
        call(retriever)


def test_map_that_does_not_fit_the_vocabulary(retriever):
    too_big = SemanticIDMap.from_codes(["a"], torch.tensor([[0, 0]]), [5, 4], 999)
    with pytest.raises(ValueError, match="position sizes"):
        retriever.id_map = too_big


def test_long_query_truncated_with_one_warning(retriever, caplog):
    retriever.config.max_query_length = 8
    retriever._warned_truncation = False
    try:
        with caplog.at_level("WARNING"):
            retriever.retrieve(["moisturizer " * 40], top_k=2, num_beams=4)
            retriever.retrieve(["serum " * 40], top_k=2, num_beams=4)
    finally:
        retriever.config.max_query_length = 512
    assert sum("truncated" in record.message for record in caplog.records) == 1


def test_bert2bert_indexer_becomes_a_retriever(tmp_path):
    """An encoder-decoder (bert2bert) backbone keeps separate encoder/decoder tables: both grow, and the decoder's
    input table and the LM head get the codebook rows, since generated ID tokens are fed back to the decoder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, EncoderDecoderConfig, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{f"w{i}": 4 + i for i in range(60)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    side = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    backbone = EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(**side), BertConfig(**side), decoder_start_token_id=2, pad_token_id=0, eos_token_id=3
    )
    torch.manual_seed(0)
    indexer = LMIndexerForSemanticID(
        LMIndexerConfig(backbone_config=backbone.to_dict(), id_length=2, codebook_sizes=[3, 3], dedup_size=8)
    ).eval()
    texts = [" ".join(f"w{(i * 7 + j) % 60}" for j in range(5)) for i in range(20)]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    codes = indexer.assign_codes(encoded["input_ids"], encoded["attention_mask"])
    id_map = SemanticIDMap.from_codes([f"d{i}" for i in range(20)], codes, [3, 3], 32)
    indexer.config.dedup_size = 32
    retriever = LMIndexerForGenerativeRetrieval.from_indexer(indexer, tokenizer=tokenizer, id_map=id_map).eval()
    offset = retriever.config.id_token_offsets[0]
    for table in (
        retriever.backbone.encoder.get_input_embeddings().weight,
        retriever.backbone.decoder.get_input_embeddings().weight,
        retriever.backbone.get_output_embeddings().weight,
    ):
        assert table.shape[0] == len(tokenizer)
    for table in (
        retriever.backbone.decoder.get_input_embeddings().weight,
        retriever.backbone.get_output_embeddings().weight,
    ):
        assert torch.equal(table[offset : offset + 3], indexer.codebooks[1].weight)
    ranked = retriever.retrieve([texts[0]], tokenizer=tokenizer, top_k=4, num_beams=4)[0]
    assert len(ranked) == 4 and all(retriever.id_map.semantic_id(r["doc_id"]) == r["semantic_id"] for r in ranked)
    batch = tokenizer([texts[1], texts[2] + " w1 w2 w3", texts[3]], padding=True, return_tensors="pt")
    shared = retriever.decode_rows(batch["input_ids"], batch["attention_mask"], num_beams=5)
    stock = retriever.decode_rows(batch["input_ids"], batch["attention_mask"], num_beams=5, share_cross_attention=False)
    assert torch.equal(shared[0], stock[0]) and torch.equal(shared[1], stock[1])
    retriever.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert reloaded.retrieve([texts[0]], tokenizer=tokenizer, top_k=4, num_beams=4)[0] == ranked


def test_shared_cross_attention_cache_changes_nothing(retriever, demo_items, demo_tokenizer):
    """Beams of one query share their encoder output, so skipping the cross-attention reorder is exact."""
    tokenizer = retriever.tokenizer
    queries = [demo_items[0]["title"], "lip balm", demo_items[7]["title"] + " with a longer tail of words", "serum"]
    batch = tokenizer(queries, padding=True, return_tensors="pt")
    shared = retriever.decode_rows(batch["input_ids"], batch["attention_mask"], num_beams=7)
    stock = retriever.decode_rows(batch["input_ids"], batch["attention_mask"], num_beams=7, share_cross_attention=False)
    assert torch.equal(shared[0], stock[0]) and torch.equal(shared[1], stock[1])
    assert (shared[0] >= 0).any()


@pytest.mark.parametrize("num_beams", [1, 10])
def test_each_hits_score_is_the_teacher_forced_log_probability_of_its_id(retriever, demo_tokenizer, num_beams):
    """Scores cannot be paired with the wrong documents: each equals the mean log-probability (length penalty 1) of
    that hit's own ID tokens and EOS, computed by one teacher-forced forward pass over the whole vocabulary."""
    query = "red lipstick with a matte finish"
    hits = retriever.retrieve([query], tokenizer=demo_tokenizer, top_k=min(5, num_beams), num_beams=num_beams)[0]
    encoded = retriever.encode_queries([query], demo_tokenizer)
    for hit in hits:
        codes = torch.tensor([hit["semantic_id"]])
        labels = torch.cat([retriever.codes_to_tokens(codes), torch.tensor([[retriever.eos_token_id]])], dim=1)
        with torch.no_grad():
            logits = retriever(
                input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], labels=labels
            ).logits
        log_probs = logits.float().log_softmax(-1).gather(2, labels[..., None]).squeeze(-1)
        assert hit["score"] == pytest.approx(float(log_probs.sum() / labels.shape[1]), abs=1e-4)
