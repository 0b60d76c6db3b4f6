"""load_model, the one loader of synthesis, evaluation and the server, names the conversion a model file needs (a
GGUF file is imported once) instead of a checkpoint loader's message about files the user never named."""
import pytest

from megasnow.generation.model_files import ModelLoadError, load_model


def test_a_gguf_file_given_as_a_model_names_the_import_command(tmp_path):
    gguf = tmp_path / "smol.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError) as e:
        load_model(str(gguf))
    assert str(e.value) == (f"{gguf}: a GGUF file is not loaded directly; import it once into a megasnow checkpoint "
                            f"(fp32, keeps its tokenizer and chat template), then use that folder: python "
                            f"tools/convert_checkpoint.py import --gguf {gguf} --output ckpt/smol")
    with pytest.raises(ModelLoadError, match=r"a folder holding GGUF file\(s\) \(smol.gguf\), not a checkpoint"):
        load_model(str(tmp_path))
