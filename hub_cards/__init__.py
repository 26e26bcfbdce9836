"""Model cards, Hub publishing and the Spaces demo of lmindexer.

- `LMIndexerCardData` + `ModelCardCallback` gather what a card says during training;
- `write_model_card` renders README.md (Jinja through `huggingface_hub.ModelCard`) with its PNG plots;
- `push_model_to_hub` / `save_for_hub` publish a model with its tokenizer, ID map, code and card;
- `space/` is the Gradio demo (`lmindexer space --model DIR` runs it locally).
"""

from .callbacks import ModelCardCallback, training_hyperparameters
from .card_data import CARD_DATA_FILE, LMIndexerCardData, label_distribution_table
from .model_card import first_code_label_table, write_id_map_card, write_model_card
from .publishing import HubUnreachableError, check_publishable, push_model_to_hub, save_for_hub, upload_to_hub
from .spaces import export_space, launch_space, push_space

__all__ = [
    "CARD_DATA_FILE",
    "HubUnreachableError",
    "LMIndexerCardData",
    "ModelCardCallback",
    "check_publishable",
    "export_space",
    "launch_space",
    "push_space",
    "first_code_label_table",
    "label_distribution_table",
    "push_model_to_hub",
    "save_for_hub",
    "training_hyperparameters",
    "upload_to_hub",
    "write_id_map_card",
    "write_model_card",
]
