"""megasnow.serve: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for megasnow checkpoints and HF Llama
folders, over the shared local generation engine (megasnow.generation.local). Run `python -m megasnow.serve PATH`;
docs/serving.md has the flags, the batching policy, the errors and the fault-injection options.
"""
