"""Hub-bound model code of lmindexer: config, semantic indexer, semantic-ID map, retriever and its pipeline.

Importing this package registers the config and models with the transformers Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_lmindexer import LMIndexerConfig, LMIndexerRetrievalConfig, __version__
from .modeling_lmindexer import IndexerMode, LMIndexerForSemanticID, SemanticIndexerOutput
from .modeling_retrieval import LMIndexerForGenerativeRetrieval
from .pipeline_generative_retrieval import TASK_NAME, GenerativeRetrievalPipeline
from .semantic_id_map import SemanticIDMap
from .trie import SemanticIDTrie, TrieConstrainedLogitsProcessor

AutoConfig.register(LMIndexerConfig.model_type, LMIndexerConfig, exist_ok=True)
AutoModel.register(LMIndexerConfig, LMIndexerForSemanticID, exist_ok=True)
AutoConfig.register(LMIndexerRetrievalConfig.model_type, LMIndexerRetrievalConfig, exist_ok=True)
AutoModel.register(LMIndexerRetrievalConfig, LMIndexerForGenerativeRetrieval, exist_ok=True)
AutoModelForSeq2SeqLM.register(LMIndexerRetrievalConfig, LMIndexerForGenerativeRetrieval, exist_ok=True)
# save_pretrained then writes `auto_map` and copies the code next to the weights.
LMIndexerConfig.register_for_auto_class()
LMIndexerRetrievalConfig.register_for_auto_class()
LMIndexerForSemanticID.register_for_auto_class("AutoModel")
LMIndexerForGenerativeRetrieval.register_for_auto_class("AutoModel")
PIPELINE_REGISTRY.register_pipeline(
    TASK_NAME, pipeline_class=GenerativeRetrievalPipeline, pt_model=AutoModel, type="text"
)

__all__ = [
    "GenerativeRetrievalPipeline",
    "IndexerMode",
    "LMIndexerConfig",
    "LMIndexerForGenerativeRetrieval",
    "LMIndexerForSemanticID",
    "LMIndexerRetrievalConfig",
    "SemanticIDMap",
    "SemanticIDTrie",
    "SemanticIndexerOutput",
    "TrieConstrainedLogitsProcessor",
    "__version__",
]
