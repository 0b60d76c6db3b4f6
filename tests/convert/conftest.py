"""Fixtures shared by the conversion tests: a tiny random megasnow checkpoint and its HF export."""
import pytest

from megasnow.convert import hf_llama
from megasnow.generation.tiny_model import write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random model with a ChatML template, EOS <|im_end|> and generation_config eos [eod, im_end]."""
    out = tmp_path_factory.mktemp("tiny") / "ckpt"
    write_tiny_checkpoint(str(out), seed=4)
    return str(out)


@pytest.fixture(scope="module")
def tiny_hf(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_hf") / "hf"
    hf_llama.export_to_hf(tiny, str(out))
    return str(out)
