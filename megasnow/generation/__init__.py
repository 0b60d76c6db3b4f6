"""Text generation backends shared by synthesis (megasnow.synth), evaluation (megasnow.eval) and the server.

One interface (base.GenerationBackend) over: an OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp,
megasnow.serve), vLLM's offline engine, and a local megasnow/HF model. Importing this package imports no torch.
"""
from megasnow.generation.protocol import Choice, GenerationRequest, GenerationResult, SamplingParams

__all__ = ["Choice", "GenerationRequest", "GenerationResult", "SamplingParams"]
