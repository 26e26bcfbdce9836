"""lmindexer: LMIndexer semantic IDs and generative retrieval, HuggingFace-native.

Importing it registers `LMIndexerConfig` and the models with the transformers Auto classes.
"""

from .modeling_lmindexer import (
    IndexerMode,
    LMIndexerConfig,
    LMIndexerForSemanticID,
    SemanticIDMap,
    SemanticIndexerOutput,
    __version__,
)

__all__ = [
    "IndexerMode",
    "LMIndexerConfig",
    "LMIndexerForSemanticID",
    "SemanticIDMap",
    "SemanticIndexerOutput",
    "__version__",
]
