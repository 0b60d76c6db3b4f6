"""Phase-3 synthesis: OSS-Instruct adapted to pretraining (Arctic-SnowCoder): top-scored phase-2 documents seed an
instruct LLM that writes high-quality, problem-solving code files; the answers are checked, deduplicated,
decontaminated and written as curated-document JSONL shards. See docs/synthesis.md; CLI: tools/synthesize.py.
"""
