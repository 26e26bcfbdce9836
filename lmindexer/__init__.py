"""lmindexer: LMIndexer semantic IDs and generative retrieval, HuggingFace-native.

Importing it registers `LMIndexerConfig` and the models with the transformers Auto classes and the
`generative-retrieval` pipeline task, and plugs the model card (README.md with plots) into the models'
`save_pretrained` and the full Hub publisher (card, tokenizer, ID map, one commit) into their `push_to_hub`.
"""

from .modeling_lmindexer import (
    GenerativeRetrievalPipeline,
    IndexerMode,
    LMIndexerConfig,
    LMIndexerForGenerativeRetrieval,
    LMIndexerForSemanticID,
    LMIndexerRetrievalConfig,
    SemanticIDMap,
    SemanticIDTrie,
    SemanticIndexerOutput,
    TrieConstrainedLogitsProcessor,
    __version__,
)
from .modeling_lmindexer import __all__

from .hub_cards.model_card import write_model_card as _write_model_card
from .hub_cards.publishing import push_model_to_hub as _push_model_to_hub
from .modeling_lmindexer.modeling_lmindexer import LMIndexerPreTrainedModel as _LMIndexerPreTrainedModel

_LMIndexerPreTrainedModel.hub_publisher = staticmethod(_push_model_to_hub)
_LMIndexerPreTrainedModel.card_writer = staticmethod(_write_model_card)
