"""Phase-1 code curation: ingest, filter, decontaminate, deduplicate (exact + MinHash LSH), build repo documents.

Entry point: `megasnow.curate.pipeline.run_pipeline` (CLI: tools/curate.py); stages run through
`megasnow.curate.executors.run_tasks` on local processes or Ray.
"""
