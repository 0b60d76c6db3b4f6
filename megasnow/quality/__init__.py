"""Phase-2 quality annotation: a BERT-style encoder + linear head that scores code files, and the
per-language top-fraction selection built on its scores (see docs/quality.md)."""
