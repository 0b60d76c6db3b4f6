"""Checkpoint conversion: megasnow <-> HuggingFace LlamaForCausalLM (hf_llama) and tokenizer files (hf_tokenizer)."""
