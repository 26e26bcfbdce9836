import math

import pytest
import torch
from conftest import random_batch, tiny_indexer_config
from transformers import AutoModel, BartConfig, BertConfig, EncoderDecoderConfig

from lmindexer import IndexerMode, LMIndexerConfig, LMIndexerForSemanticID
from lmindexer.modeling_lmindexer.losses import prefix_contrastive_loss
from lmindexer.modeling_lmindexer.reconstructor import sample_hint_mask

PREFIX = torch.tensor([[1, 2], [1, 2], [0, 4], [1, 3]])


def encoder_grad_norm(model):
    norms = [p.grad.norm() for n, p in model.backbone.named_parameters() if "encoder.block" in n and p.grad is not None]
    return float(torch.stack(norms).sum()) if norms else 0.0


@pytest.mark.parametrize("mode", list(IndexerMode))
@pytest.mark.parametrize("position", [1, 3])
def test_forward_backward_every_mode(tiny_model, mode, position):
    input_ids, attention_mask = random_batch()
    prefix = PREFIX[:, : position - 1] if position > 1 else None
    output = tiny_model(input_ids, attention_mask, prefix_codes=prefix, position=position, mode=mode)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    reconstructor_grads = [p.grad for p in tiny_model.reconstructor.parameters() if p.grad is not None]
    assert reconstructor_grads and any(g.abs().sum() > 0 for g in reconstructor_grads)
    if mode is IndexerMode.RECONSTRUCTOR_WARMUP:
        assert output.contrastive_loss is None and output.hidden_state is None
        assert encoder_grad_norm(tiny_model) == 0.0
        assert tiny_model.get_input_embeddings().weight.grad is None
    else:
        assert output.hidden_state.shape == (4, 32)
        assert output.code_logits.shape == (4, tiny_model.config.codebook_sizes[position - 1])
        assert torch.equal(output.codes, output.code_logits.argmax(-1))
        assert encoder_grad_norm(tiny_model) > 0
        assert (output.commitment_loss is None) == (position == 1)
        expected = output.reconstruction_loss + output.contrastive_loss
        if output.commitment_loss is not None:
            expected = expected + output.commitment_loss
        torch.testing.assert_close(output.loss, expected)


def test_straight_through_reaches_encoder_but_plain_argmax_does_not(tiny_model):
    input_ids, attention_mask = random_batch()
    generator = torch.Generator().manual_seed(3)
    output = tiny_model(input_ids, attention_mask, mode="straight_through", hint_generator=generator)
    output.reconstruction_loss.backward()
    assert encoder_grad_norm(tiny_model) > 0

    tiny_model.zero_grad(set_to_none=True)
    output = tiny_model(input_ids, attention_mask, mode="straight_through")
    hard_vector = tiny_model.code_vectors(1, output.codes)  # argmax lookup: no path back to h^1
    loss, _, _ = tiny_model._reconstruction_loss(input_ids, attention_mask, [hard_vector], 1, generator)
    loss.backward()
    assert encoder_grad_norm(tiny_model) == 0.0
    assert tiny_model.codebooks[1].weight.grad.abs().sum() > 0


def test_straight_through_forward_uses_the_hard_vector(tiny_model):
    # With the hard vector forward, the reconstruction equals the one computed from the argmax codebook row.
    input_ids, attention_mask = random_batch()
    tiny_model.eval()
    output = tiny_model(
        input_ids, attention_mask, mode="straight_through", hint_generator=torch.Generator().manual_seed(5)
    )
    hard = tiny_model.code_vectors(1, output.codes)
    direct, _, _ = tiny_model._reconstruction_loss(
        input_ids, attention_mask, [hard], 1, torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(output.reconstruction_loss, direct)


def test_contrastive_loss_matches_hand_computation():
    hidden = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 1.0]])
    prefix = torch.tensor([[0], [0], [1], [1]])
    tau = 0.5
    cos01 = 0.6
    cos23 = 1 / math.sqrt(2)
    loss_group_a = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(cos01 / tau)))
    loss_group_b = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(cos23 / tau)))
    expected = (2 * loss_group_a + 2 * loss_group_b) / 4
    assert prefix_contrastive_loss(hidden, prefix, tau).item() == pytest.approx(expected, rel=1e-6)
    # At t = 1 all documents are one group.
    everyone = prefix_contrastive_loss(hidden, None, tau).item()
    normalized = torch.nn.functional.normalize(hidden, dim=-1)
    sims = (normalized @ normalized.T / tau).tolist()
    by_hand = sum(-(sims[i][i] - math.log(sum(math.exp(s) for s in sims[i]))) for i in range(4)) / 4
    assert everyone == pytest.approx(by_hand, rel=1e-6)
    # A document alone in its group carries no signal; a batch of loners gives zero.
    assert prefix_contrastive_loss(hidden, torch.tensor([[0], [1], [2], [3]]), tau).item() == 0.0


def test_hint_mask_ratio_and_targets():
    attention_mask = torch.ones(3, 10, dtype=torch.long)
    attention_mask[1, 5:] = 0
    attention_mask[2, 1:] = 0
    visible, targets = sample_hint_mask(attention_mask, 0.3, torch.Generator().manual_seed(0))
    assert visible.sum(1).tolist() == [3, 2, 1]  # round(0.3 * 10), round(0.3 * 5) = 2, at least one
    assert targets.sum(1).tolist() == [7, 3, 0]
    assert not (visible & targets).any() and not ((visible | targets) & (attention_mask == 0)).any()


def test_codebooks_bit_exact_after_save_and_load(tiny_model, tmp_path):
    with torch.no_grad():
        for table in tiny_model.codebooks.tables:
            table.weight.copy_(torch.randn_like(table.weight) * 7.3 + 1.1)  # unlike any init
    tiny_model.save_pretrained(tmp_path)
    for loaded in (LMIndexerForSemanticID.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, LMIndexerForSemanticID)
        for original, restored in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
            assert original[0] == restored[0]
            assert torch.equal(original[1], restored[1]), original[0]


def test_assign_codes_is_greedy_position_by_position(tiny_model):
    input_ids, attention_mask = random_batch(batch_size=5, seed=4)
    tiny_model.eval()
    codes = tiny_model.assign_codes(input_ids, attention_mask)
    assert codes.shape == (5, 3)
    prefix = None
    for position in range(1, 4):
        step = tiny_model(input_ids, attention_mask, prefix_codes=prefix, position=position)
        assert torch.equal(step.codes, codes[:, position - 1])
        prefix = codes[:, :position]
    pinned = torch.zeros(5, 1, dtype=torch.long)
    assert torch.equal(tiny_model.assign_codes(input_ids, attention_mask, prefix_codes=pinned)[:, 0], pinned[:, 0])


@pytest.mark.parametrize("geometry", ["cosine", "dot"])
def test_code_logits_follow_the_geometry(geometry):
    model = LMIndexerForSemanticID(tiny_indexer_config(code_geometry=geometry, code_temperature=0.5))
    hidden = torch.randn(3, 32)
    table = model.codebooks[1].weight
    if geometry == "cosine":
        expected = torch.nn.functional.cosine_similarity(hidden[:, None], table[None], dim=-1) / 0.5
    else:
        expected = hidden @ table.T / 0.5
    torch.testing.assert_close(model.code_logits(hidden, 1), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "backbone",
    [
        BartConfig(
            vocab_size=120,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            dropout=0.0,
        ),
        EncoderDecoderConfig.from_encoder_decoder_configs(
            BertConfig(
                vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
            ),
            BertConfig(
                vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
            ),
            decoder_start_token_id=2,
            pad_token_id=0,
        ),
    ],
    ids=["bart", "bert2bert"],
)
def test_other_backbones_train_and_round_trip(backbone, tmp_path):
    model = LMIndexerForSemanticID(LMIndexerConfig(backbone_config=backbone.to_dict(), codebook_sizes=4, id_length=2))
    input_ids, attention_mask = random_batch()
    output = model(input_ids, attention_mask, prefix_codes=torch.tensor([[0], [0], [1], [1]]))
    output.loss.backward()
    model.eval()
    codes = model.assign_codes(input_ids, attention_mask)
    model.save_pretrained(tmp_path)
    assert torch.equal(AutoModel.from_pretrained(tmp_path).eval().assign_codes(input_ids, attention_mask), codes)


def test_from_pretrained_accepts_a_bare_backbone(tmp_path):
    from conftest import tiny_t5
    from transformers import T5ForConditionalGeneration

    backbone = T5ForConditionalGeneration(tiny_t5())
    backbone.save_pretrained(tmp_path)
    model = LMIndexerForSemanticID.from_pretrained(tmp_path, id_length=2, codebook_sizes=[5, 3])
    assert model.config.codebook_sizes == [5, 3]
    assert torch.equal(model.backbone.shared.weight, backbone.shared.weight)
    same = LMIndexerForSemanticID.from_backbone(tmp_path, id_length=2, codebook_sizes=3)
    assert torch.equal(
        same.backbone.encoder.block[0].layer[0].SelfAttention.q.weight,
        backbone.encoder.block[0].layer[0].SelfAttention.q.weight,
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, i, a: m(i[:0], a[:0]), "non-empty"),
        (lambda m, i, a: m(i[:, :0], a[:, :0]), "no tokens to index"),
        (lambda m, i, a: m(i, torch.zeros_like(a)), "are empty"),
        (lambda m, i, a: m(i, a, prefix_codes=torch.tensor([[9], [0], [0], [0]])), "outside its codebook of size 6"),
        (lambda m, i, a: m(i, a, prefix_codes=torch.zeros(4, 1, dtype=torch.long), position=3), "needs the 2 earlier"),
        (lambda m, i, a: m(i, a, position=4), "must be in 1..3"),
        (lambda m, i, a: m(i, a, mode="quantize"), "is not a valid IndexerMode"),
        (lambda m, i, a: m(i, a[:, :5]), "attention_mask"),
        (lambda m, i, a: m.assign_codes(i, a, num_positions=5), "num_positions"),
    ],
)
def test_bad_input_gets_a_clear_error(tiny_model, call, message):
    input_ids, attention_mask = random_batch()
    with pytest.raises(ValueError, match=message):
        call(tiny_model, input_ids, attention_mask)


def test_document_longer_than_reconstructor_positions():
    model = LMIndexerForSemanticID(tiny_indexer_config(reconstructor_max_positions=8))
    input_ids, attention_mask = random_batch(length=12)
    with pytest.raises(ValueError, match="exceed the reconstructor's 8 positions"):
        model(input_ids, attention_mask)
