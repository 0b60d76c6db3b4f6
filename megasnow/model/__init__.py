"""The megasnow decoder: config presets, the Llama-style model, FLOPs, KV-cache generation."""
from megasnow.model.config import PRESETS, ModelConfig, ModelConfigError, get_preset
from megasnow.model.flops import flops_per_token, num_parameters
from megasnow.model.llama import LlamaModel, document_ids_from_tokens

__all__ = ["PRESETS", "ModelConfig", "ModelConfigError", "get_preset", "flops_per_token", "num_parameters",
           "LlamaModel", "document_ids_from_tokens"]
