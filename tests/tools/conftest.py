"""Fixtures for the tool tests: the quality tests' tiny random-weight annotator (a real annotator folder)."""
from tests.quality.conftest import tiny_annotator  # noqa: F401 (a fixture, registered by being imported here)
