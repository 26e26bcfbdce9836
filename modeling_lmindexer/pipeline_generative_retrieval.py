"""The `generative-retrieval` pipeline task: text in, ranked documents out.

```python
from transformers import pipeline

retriever = pipeline("generative-retrieval", model="org/lmindexer-beauty", trust_remote_code=True, revision=SHA)
retriever("moisturizer for dry skin", top_k=5)
# [{"doc_id": "B00...", "semantic_id": (3, 17, 0), "score": -0.41, "title": "..."}, ...]
```

A saved retriever lists this task under `custom_pipelines` in its config and carries this file, so the call above
works without the lmindexer package. The model does the work (`LMIndexerForGenerativeRetrieval.decode_rows`):
constrained beam search under the ID trie, then the ID map turns IDs back into documents.

This file is copied to the Hub: it imports only torch, transformers and the standard library.
"""

from __future__ import annotations

import torch
from transformers import Pipeline

TASK_NAME = "generative-retrieval"


class GenerativeRetrievalPipeline(Pipeline):
    """Ranked documents for each input text.

    Call arguments: `top_k` (default 10), `num_beams` (default: the larger of 20 and `top_k`; 1 decodes greedily),
    both positive integers. A list of texts returns one ranked list per text, a generator of texts an iterator of
    them; `batch_size=N` at construction or call time batches the beam search. Scores are those of
    `LMIndexerForGenerativeRetrieval.retrieve`.
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def _sanitize_parameters(self, top_k: int | None = None, num_beams: int | None = None, **kwargs):
        forward_params, postprocess_params = {}, {}
        for name, value in (("top_k", top_k), ("num_beams", num_beams)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if top_k is not None:
            postprocess_params["top_k"] = top_k
        if num_beams is not None:
            forward_params["num_beams"] = num_beams
        elif top_k is not None:
            forward_params["num_beams"] = max(20, top_k)
        if "num_beams" in forward_params and top_k is not None and top_k > forward_params["num_beams"]:
            raise ValueError(f"`top_k` ({top_k}) cannot exceed `num_beams` ({forward_params['num_beams']}).")
        return {}, forward_params, postprocess_params

    def preprocess(self, text):
        if not isinstance(text, str):
            # A list or a generator of texts never gets here (the base pipeline iterates it), so this is a single bad
            # input.
            hint = ": decode it first, e.g. `text.decode('utf-8')`" if isinstance(text, (bytes, bytearray)) else ""
            raise TypeError(
                "A generative-retrieval query must be a str (or pass a list or generator of str), got "
                f"{type(text).__name__}{hint}."
            )
        if not text.strip():
            raise ValueError(f"A generative-retrieval query must be a non-empty string, got {text!r}.")
        encode = getattr(self.model, "encode_queries", None)
        if encode is not None:  # cut at the side and length fine-tuning used
            return encode([text], self.tokenizer)
        return self.tokenizer(text, truncation=True, max_length=self.model.config.max_query_length, return_tensors="pt")

    def _forward(self, model_inputs, num_beams: int = 20):
        rows, scores = self.model.decode_rows(
            model_inputs["input_ids"], model_inputs["attention_mask"], num_beams=num_beams
        )
        return {"rows": rows, "scores": scores}

    def postprocess(self, model_outputs, top_k: int = 10):
        rows: torch.Tensor = model_outputs["rows"]
        scores: torch.Tensor = model_outputs["scores"]
        return self.model.rank_rows(rows.reshape(-1), scores.reshape(-1), top_k=top_k)
