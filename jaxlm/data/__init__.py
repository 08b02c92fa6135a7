"""Data: sources, tokenizers, cleaning and the tfds -> grain input pipeline."""
