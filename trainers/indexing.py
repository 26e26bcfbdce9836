"""The Python API behind `lmindexer index` and `lmindexer assign`.

```python
from lmindexer.trainers.arguments import AssignArguments, IndexArguments, IndexerTrainingArguments
from lmindexer.trainers.indexing import assign_documents, index_corpus
result = index_corpus(IndexArguments(corpus="items.jsonl", method="lmindexer"), IndexerTrainingArguments(output_dir="runs/x"))
assign_documents(AssignArguments(model="runs/x", corpus="new_items.jsonl"))
```
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import set_seed

from ..modeling_lmindexer.semantic_id_map import ID_MAP_FILE
from .arguments import AssignArguments, IndexArguments, IndexerTrainingArguments, split_names
from .corpus import Corpus, build_corpus, load_records
from .demo import DEMO_LABEL_FIELD, generate_demo_corpus
from .id_methods import IndexResult, get_id_method, method_of_folder

logger = logging.getLogger("lmindexer")


def load_index_corpus(args: IndexArguments) -> Corpus:
    """The corpus `args` names, or the generated demo catalogue (labelled by subcategory) when it names none."""
    if args.corpus is None:
        records = generate_demo_corpus()
        args.label_field = args.label_field or DEMO_LABEL_FIELD
    else:
        records = load_records(args.corpus)
    return build_corpus(records, args.id_field, args.text_field_list, args.label_field, args.label_level, args.title_field)


def index_corpus(args: IndexArguments, training_args: IndexerTrainingArguments) -> IndexResult:
    """Learn semantic IDs for a corpus with `args.method` and write the indexer folder to `output_dir`."""
    method = get_id_method(args.method)
    corpus = load_index_corpus(args)
    set_seed(training_args.seed)
    return method.index(corpus, args, training_args)


def assign_documents(args: AssignArguments) -> dict:
    """Give IDs to unseen documents and extend the folder's map; documents already mapped keep their IDs.

    Returns `{"new_documents", "already_mapped", "map_size", "examples"}`.
    """
    folder = Path(args.model)
    if not folder.is_dir():
        raise FileNotFoundError(f"--model {args.model} is not a folder: give the folder of a trained indexer.")
    corpus = build_corpus(load_records(args.corpus), args.id_field, split_names(args.text_fields), title_field=args.title_field)
    extended, fresh = method_of_folder(folder).assign_new_documents(folder, corpus, args)
    extended.save(folder / ID_MAP_FILE)
    fresh_ids = [corpus.doc_ids[row] for row in fresh]
    return {
        "new_documents": len(fresh),
        "already_mapped": len(corpus) - len(fresh),
        "map_size": len(extended),
        "examples": {doc_id: list(extended.semantic_id(doc_id)) for doc_id in fresh_ids[:5]},
    }
