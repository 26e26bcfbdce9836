import json

import pytest
from conftest import tiny_indexer_config, tiny_t5
from transformers import AutoConfig, BartConfig, BertConfig, EncoderDecoderConfig

from lmindexer import LMIndexerConfig, __version__


def test_defaults_expand_per_position():
    config = tiny_indexer_config(codebook_sizes=7, hint_ratios=None)
    assert config.codebook_sizes == [7, 7, 7]
    assert config.hint_ratios[:2] == [0.5, 0.3]
    assert config.hint_ratios[2] < 0.3
    assert config.id_vocabulary_sizes == [7, 7, 7, 16]
    assert config.id_token(2, 13) == "<id_2_13>"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"codebook_sizes": [4, 4]}, "2 entries but `id_length` is 3"),
        ({"hint_ratios": [0.5, 1.2, 0.1]}, r"hint_ratios\[1\]` must lie strictly between 0 and 1"),
        ({"hint_ratios": 0.0}, "strictly between 0 and 1"),
        ({"id_length": 0, "codebook_sizes": []}, "positive integer"),
        ({"code_geometry": "l2"}, "code_geometry"),
        ({"contrastive_temperature": 0.0}, "contrastive_temperature"),
        ({"dedup_size": 0}, "dedup_size"),
        ({"reconstructor_heads": 3}, "must divide the decoder hidden size"),
        ({"commitment_weight": -1.0}, "commitment_weight"),
        ({"id_token_template": "<id_{code}>"}, "id_token_template"),
        ({"codebook_sizes": [6, 1, 4]}, "at least 2"),
    ],
)
def test_validation_names_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_indexer_config(**overrides)


def test_validate_runs_again_on_save(tmp_path):
    config = tiny_indexer_config()
    config.codebook_sizes = [4, 4]
    with pytest.raises(ValueError, match="codebook_sizes"):
        config.save_pretrained(tmp_path)


def test_encoder_only_backbone_rejected():
    with pytest.raises(ValueError, match="not an encoder-decoder"):
        LMIndexerConfig(backbone_config=BertConfig(hidden_size=32, num_attention_heads=2).to_dict())


def test_round_trip_records_version_and_nests_backbone(tmp_path):
    config = tiny_indexer_config(code_geometry="dot", contrastive_temperature=0.2)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "lmindexer"
    assert saved["lmindexer_version"] == __version__
    assert saved["backbone_config"]["model_type"] == "t5"
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, LMIndexerConfig)
    assert loaded.codebook_sizes == [6, 5, 4] and loaded.code_geometry == "dot"
    assert loaded.backbone_config.d_model == 32


@pytest.mark.parametrize(
    "backbone",
    [
        BartConfig(
            vocab_size=100,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
        ),
        EncoderDecoderConfig.from_encoder_decoder_configs(
            BertConfig(
                vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
            ),
            BertConfig(
                vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
            ),
        ),
    ],
    ids=["bart", "bert2bert"],
)
def test_any_encoder_decoder_backbone(backbone, tmp_path):
    config = LMIndexerConfig(backbone_config=backbone.to_dict(), codebook_sizes=4)
    config.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path).backbone_config) is type(backbone)


def test_trust_remote_code_stripped_from_nested_config(tmp_path):
    backbone = tiny_t5().to_dict()
    backbone["trust_remote_code"] = True
    backbone["auto_map"] = {"AutoModel": "evil.Model"}
    config = LMIndexerConfig(backbone_config=backbone)
    config.save_pretrained(tmp_path)
    nested = json.loads((tmp_path / "config.json").read_text())["backbone_config"]
    assert "trust_remote_code" not in nested and "auto_map" not in nested
