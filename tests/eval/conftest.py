"""Shared fixtures of the evaluation tests."""
import pytest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(checkpoint folder, HF export folder) of a tiny random megasnow model with a real BPE tokenizer and a ChatML
    template (megasnow.generation.tiny_model)."""
    from megasnow.convert.hf_llama import export_to_hf
    from megasnow.generation.tiny_model import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    step_dir = write_tiny_checkpoint(str(root / "ckpt"), seed=3)
    export_to_hf(step_dir, str(root / "hf"))
    return str(root / "ckpt"), str(root / "hf")


@pytest.fixture(scope="session")
def tiny_short(tmp_path_factory):
    """A tiny random megasnow checkpoint folder with a short context (max_seq_len 160: most HumanEval prompts do not
    fit, as with the quickstart's model of 256)."""
    from megasnow.generation.tiny_model import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny_short")
    write_tiny_checkpoint(str(root / "ckpt"), seed=5, max_seq_len=160)
    return str(root / "ckpt")
