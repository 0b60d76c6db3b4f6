"""A --tokenizer with more ids than the model's vocabulary is refused by export and import (exit 2, one line naming
--tokenizer and both sizes, nothing written): transformers would fail later with 'index out of range in self'."""
import os

import pytest
from tokenizers import Tokenizer, models

from megasnow.convert import hf_llama
from megasnow.convert.errors import ConversionError
from tests.convert.test_round_trip_files import tool


@pytest.fixture(scope="module")
def big_tokenizer(tmp_path_factory):
    """A word-level tokenizer of 2,000 ids (the tiny model has 512)."""
    path = tmp_path_factory.mktemp("tok") / "big.json"
    vocab = {f"w{i}": i for i in range(2000)}
    Tokenizer(models.WordLevel(vocab, unk_token="w0")).save(str(path))
    return str(path)


def test_export_refuses_a_tokenizer_larger_than_the_model(tmp_path, tiny, big_tokenizer):
    out = tmp_path / "hf_x"
    r = tool("export", "--checkpoint", tiny, "--output", out, "--tokenizer", big_tokenizer)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert r.stderr == (f"error: the vocab_size of --checkpoint {tiny} is 512, smaller than --tokenizer "
                        f"{big_tokenizer}'s vocabulary (2000): pass the tokenizer the model was trained with (its "
                        f"ids >= 512 would index past the embedding), or leave --tokenizer out to use the "
                        f"checkpoint's own copy\n")
    assert not out.exists() and os.listdir(tmp_path) == []


def test_import_refuses_a_tokenizer_larger_than_the_model(tmp_path, tiny, big_tokenizer):
    hf = tmp_path / "hf"
    hf_llama.export_to_hf(tiny, str(hf))
    out = tmp_path / "back"
    r = tool("import", "--hf", hf, "--output", out, "--tokenizer", big_tokenizer)
    assert r.returncode == 2, r.stderr
    assert r.stderr == (f"error: the vocab_size of --hf {hf} (config.json) is 512, smaller than --tokenizer "
                        f"{big_tokenizer}'s vocabulary (2000): pass the tokenizer of that model (its ids >= 512 "
                        f"would index past the embedding), or leave --tokenizer out to use the folder's own\n")
    assert not out.exists()
    # the API raises the same error (the trainer's rule: megasnow.model.config.check_tokenizer_fits)
    with pytest.raises(ConversionError, match=r"is 512, smaller than --tokenizer .*'s vocabulary \(2000\)"):
        hf_llama.import_from_hf(str(hf), str(out), tokenizer=big_tokenizer)
    assert not out.exists()
