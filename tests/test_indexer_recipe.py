"""What the recipe's fixes guarantee, each checked against a hand computation or a planted-bug-sensitive probe:
later positions read the earlier codes, the commitment loss is what the paper says, prefix-group batching reaches
the stages at t >= 2, and the CPU options (in-batch vocabulary, pooled path, frozen encoder layers) do what they say.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_indexer_config

from lmindexer import LMIndexerForSemanticID
from lmindexer.modeling_lmindexer.reconstructor import sample_hint_mask
from lmindexer.trainers.indexer.stage_trainers import encoder_layer_stack, frozen_encoder_parameters

RECIPES = [
    {},
    {
        "later_position_input": "residual",
        "center_hidden": True,
        "pooled_hidden": True,
        "reconstructor_position_norm": True,
    },
]


def batch(size=6, length=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 120, (size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -3:] = 0
    visible, _ = sample_hint_mask(attention_mask, 0.5, torch.Generator().manual_seed(1))
    return input_ids, attention_mask, visible


@pytest.mark.parametrize("recipe", RECIPES)
def test_at_t2_the_prefix_codes_vector_drives_reconstruction_and_gets_its_gradient(recipe):
    torch.manual_seed(0)
    model = LMIndexerForSemanticID(tiny_indexer_config(**recipe)).eval()
    input_ids, attention_mask, visible = batch()
    prefix = torch.tensor([[0], [1], [2], [0], [1], [2]])

    def reconstruction():
        return model(
            input_ids, attention_mask, prefix_codes=prefix, position=2, hint_visible=visible
        ).reconstruction_loss

    seen = {}
    spy = model.reconstructor.register_forward_pre_hook(lambda module, args: seen.update(id_vectors=args[0]))
    before = reconstruction()
    spy.remove()
    # The reconstructor reads one vector per position so far, the first being c^1's own codebook vector.
    assert len(seen["id_vectors"]) == 2
    assert torch.equal(seen["id_vectors"][0], model.codebooks[1].weight[prefix[:, 0]])
    before.backward()
    gradient = model.codebooks[1].weight.grad
    assert gradient is not None and bool((gradient[:3].abs().sum(dim=1) > 0).all())
    assert float(gradient[3:].abs().sum()) == 0.0  # codes nobody holds get nothing
    with torch.no_grad():
        model.codebooks[1].weight[0] += torch.randn_like(model.codebooks[1].weight[0])
        assert not torch.isclose(reconstruction(), before)


def test_the_reconstructor_uses_every_positions_vector_not_only_the_last():
    """Each ID position's vector, changed alone (the others held fixed), changes the reconstruction: a reconstructor
    that read only `id_vectors[-1:]` would ignore c^1's vector at t=2, which the gradient probe above cannot see
    (c^1's codebook also reaches the loss through h^2)."""
    torch.manual_seed(0)
    model = LMIndexerForSemanticID(tiny_indexer_config()).eval()
    input_ids, attention_mask, visible = batch()
    hidden_size = model.codebooks[1].weight.shape[1]
    generator = torch.Generator().manual_seed(3)
    vectors = [torch.randn(input_ids.shape[0], hidden_size, generator=generator) for _ in range(3)]
    hints = torch.randn(*input_ids.shape, hidden_size, generator=generator)
    targets = attention_mask.bool() & ~visible
    token_weight = torch.randn(120, hidden_size, generator=generator)

    def logits(id_vectors):
        with torch.no_grad():
            return model.reconstructor(id_vectors, hints, visible, targets, token_weight)

    for count in (2, 3):
        reference = logits(vectors[:count])
        for position in range(count):
            changed = list(vectors[:count])
            changed[position] = changed[position] + torch.randn(changed[position].shape, generator=generator)
            difference = float((logits(changed) - reference).abs().max())
            assert difference > 1e-3, f"position {position + 1} of {count}: its vector changes nothing"


def test_commitment_loss_by_hand_each_position_against_its_own_codebook():
    torch.manual_seed(0)
    weights = dict(reconstruction_weight=0.7, contrastive_weight=0.3, commitment_weight=2.5)
    model = LMIndexerForSemanticID(tiny_indexer_config(**weights)).eval()
    input_ids, attention_mask, visible = batch()
    prefix = torch.tensor([[0, 4], [1, 3], [2, 2], [0, 1], [5, 0], [5, 4]])
    output = model(input_ids, attention_mask, prefix_codes=prefix, position=3, hint_visible=visible)
    states = model.decoder_states(input_ids, attention_mask, prefix)
    config = model.config
    losses = []
    for column in range(2):
        hidden = states[:, column]  # raw decoder state h^{column+1}: the default config neither centres nor subtracts
        table = model.codebooks[column + 1].weight
        cosine = F.normalize(hidden, dim=-1) @ F.normalize(table, dim=-1).t()
        losses.append(F.cross_entropy(cosine / config.code_temperature, prefix[:, column]))
    by_hand = torch.stack(losses).mean()
    assert torch.allclose(output.commitment_loss, by_hand, atol=1e-6)
    total = 0.7 * output.reconstruction_loss + 0.3 * output.contrastive_loss + 2.5 * by_hand
    assert torch.allclose(output.loss, total, atol=1e-6)


def test_batch_vocabulary_softmax_is_the_full_softmax_restricted_to_the_batchs_tokens():
    torch.manual_seed(0)
    model = LMIndexerForSemanticID(tiny_indexer_config(reconstruction_vocabulary="batch"))
    input_ids, attention_mask, visible = batch()
    prefix = torch.tensor([[0], [1], [2], [0], [1], [2]])
    model.train()
    for module in model.modules():  # no dropout, so both computations see the same network
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    sampled = model(
        input_ids, attention_mask, prefix_codes=prefix, position=2, hint_visible=visible
    ).reconstruction_loss
    logits = {}
    hook = model.reconstructor.register_forward_hook(lambda module, args, output: logits.setdefault("full", output))
    model.config.reconstruction_vocabulary = "full"
    model(input_ids, attention_mask, prefix_codes=prefix, position=2, hint_visible=visible)
    hook.remove()
    vocabulary = torch.unique(input_ids[attention_mask.bool()])
    targets = input_ids[attention_mask.bool() & ~visible]
    restricted = logits["full"][:, vocabulary]
    expected = F.cross_entropy(restricted, torch.searchsorted(vocabulary, targets))
    assert torch.allclose(sampled, expected, atol=1e-5)
    model.eval()  # evaluation always scores the whole vocabulary
    model.config.reconstruction_vocabulary = "batch"
    evaluated = model(input_ids, attention_mask, prefix_codes=prefix, position=2, hint_visible=visible)
    assert torch.allclose(evaluated.reconstruction_loss, F.cross_entropy(logits["full"], targets), atol=1e-5)


def test_pooled_path_adds_the_masked_mean_of_the_encoder_states():
    torch.manual_seed(0)
    plain = LMIndexerForSemanticID(tiny_indexer_config()).eval()
    pooled = LMIndexerForSemanticID(tiny_indexer_config(pooled_hidden=True)).eval()
    pooled.load_state_dict(plain.state_dict())
    input_ids, attention_mask, _ = batch()
    encoded = plain.encode(input_ids, attention_mask).last_hidden_state
    mean = torch.stack([encoded[row, attention_mask[row].bool()].mean(dim=0) for row in range(len(input_ids))])
    difference = pooled.decoder_states(input_ids, attention_mask, None) - plain.decoder_states(
        input_ids, attention_mask, None
    )
    assert torch.allclose(difference[:, 0], mean, atol=1e-5)


def test_encoder_trainable_layers_freezes_the_lower_layers_and_embeddings():
    torch.manual_seed(0)
    model = LMIndexerForSemanticID(
        tiny_indexer_config(backbone_config={**tiny_indexer_config().backbone_config.to_dict(), "num_layers": 3})
    )
    layers = encoder_layer_stack(model)
    assert len(layers) == 3
    frozen = {id(p) for p in frozen_encoder_parameters(model, 1)}
    assert all(id(p) not in frozen for p in layers[2].parameters())
    assert all(id(p) in frozen for layer in list(layers)[:2] for p in layer.parameters())
    assert id(model.backbone.get_encoder().get_input_embeddings().weight) in frozen
    assert not any(id(p) in frozen for p in model.backbone.get_decoder().block.parameters())
    with pytest.raises(ValueError, match="encoder_trainable_layers"):
        frozen_encoder_parameters(model, 4)


def test_cached_frozen_encoder_states_give_the_losses_of_running_the_encoder(demo_items, demo_tokenizer):
    from lmindexer.trainers.data.demo import tiny_t5_config
    from lmindexer.trainers.indexer.collators import IndexerDataCollator
    from lmindexer.trainers.indexer.encoder_cache import EncoderStateCache

    torch.manual_seed(0)
    model = LMIndexerForSemanticID(
        tiny_indexer_config(
            backbone_config=tiny_t5_config(len(demo_tokenizer), d_model=32).to_dict(),
            reconstructor_max_positions=64,
            pooled_hidden=True,
        )
    ).eval()
    encoded = demo_tokenizer([item["title"] for item in demo_items[:12]], max_length=32, truncation=True)
    cache = EncoderStateCache.build(model, encoded["input_ids"], demo_tokenizer.pad_token_id, batch_size=5)
    features = [
        {
            "row": row,
            "input_ids": encoded["input_ids"][row],
            "attention_mask": encoded["attention_mask"][row],
            "prefix_codes": [row % 6],
        }
        for row in (7, 2, 11, 0)
    ]
    plain = IndexerDataCollator(demo_tokenizer, 0.5, seed=3)(features)
    cached = IndexerDataCollator(demo_tokenizer, 0.5, seed=3, encoder_states=cache)(features)
    assert torch.equal(plain["hint_visible"], cached["hint_visible"])
    run = lambda batch: model(**batch, position=2, mode="straight_through")  # noqa: E731
    with torch.no_grad():
        reference, from_cache = run(plain), run(cached)
    assert torch.allclose(reference.loss, from_cache.loss, rtol=1e-3)
    assert torch.equal(reference.codes, from_cache.codes)
    with pytest.raises(ValueError, match="another tokenisation"):
        cache.padded([7], torch.ones(1, 3, dtype=torch.long))
