"""lmindexer: LMIndexer semantic IDs and generative retrieval, HuggingFace-native.

Importing it registers `LMIndexerConfig` and the models with the transformers Auto classes.
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
