"""lmindexer: LMIndexer semantic IDs and generative retrieval, HuggingFace-native.

Importing it registers `LMIndexerConfig` and the models with the transformers Auto classes and the
`generative-retrieval` pipeline task. Model cards and Hub publishing reach the models through their declared
hooks (`LMIndexerPreTrainedModel.card_writer` / `hub_publisher`), not through anything done at import time.
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
    __all__,
    __version__,
)
