"""lmindexer: LMIndexer semantic IDs and generative retrieval, HuggingFace-native.

Importing it registers `LMIndexerConfig` and the models with the transformers Auto classes and the
`generative-retrieval` pipeline task, and plugs the full Hub publisher (card, plots, tokenizer, ID map) into the
models' `push_to_hub`.
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

from .hub_cards.publishing import push_model_to_hub as _push_model_to_hub
from .modeling_lmindexer.modeling_lmindexer import LMIndexerPreTrainedModel as _LMIndexerPreTrainedModel

_LMIndexerPreTrainedModel.hub_publisher = staticmethod(_push_model_to_hub)
