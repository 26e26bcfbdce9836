"""Hub-bound model code of lmindexer: config, semantic indexer and semantic-ID map.

Importing this package registers the config and models with the transformers Auto classes.
"""

from transformers import AutoConfig, AutoModel

from .configuration_lmindexer import LMIndexerConfig, __version__
from .modeling_lmindexer import IndexerMode, LMIndexerForSemanticID, SemanticIndexerOutput
from .semantic_id_map import SemanticIDMap

AutoConfig.register(LMIndexerConfig.model_type, LMIndexerConfig, exist_ok=True)
AutoModel.register(LMIndexerConfig, LMIndexerForSemanticID, exist_ok=True)
# save_pretrained then writes `auto_map` and copies the code next to the weights.
LMIndexerConfig.register_for_auto_class()
LMIndexerForSemanticID.register_for_auto_class("AutoModel")

__all__ = ["IndexerMode", "LMIndexerConfig", "LMIndexerForSemanticID", "SemanticIDMap", "SemanticIndexerOutput", "__version__"]
