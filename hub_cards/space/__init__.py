"""The Gradio demo that `lmindexer space` runs and exports as a Hugging Face Space."""
