"""Fill-in-the-middle requests in LocalEngine: prefix and suffix are encoded apart and laid out as the model was
trained (PSM, or SPM for a checkpoint trained with data.fim.spm_rate 1 or when asked), the middle stops at EOS, the
file separator and the FIM tokens, and the result equals the generator run on that prompt."""
import pytest
import yaml

from megasnow.generation.local import BadRequestError, LocalBackend, LocalEngine
from megasnow.generation.model_files import trained_fim_format
from megasnow.generation.protocol import GenerationRequest, SamplingParams
from megasnow.generation.tiny_model import write_tiny_checkpoint
from megasnow.model.generate import SequenceSpec, generate_sequences

PREFIX, SUFFIX = "def area(w, h):\n    \"\"\"Rectangle area.\"\"\"\n    return ", "\n\n\nprint(area(2, 3))\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("tiny")), seed=5)


@pytest.fixture(scope="module")
def engine(tiny):
    return LocalEngine.from_path(tiny)


def fim_request(i="f", fmt=None, **params):
    return GenerationRequest(id=str(i), prompt=PREFIX, suffix=SUFFIX, params=SamplingParams(**params))


def test_prompt_layout_in_both_formats(engine):
    tok, fim = engine.tokenizer, engine.tokenizer.fim_tokens()
    p, s = tok.encode(PREFIX), tok.encode(SUFFIX)
    assert engine.fim_format == "psm"  # the tiny checkpoint was not trained with FIM: StarCoder's default order
    assert list(engine.prepare(fim_request()).prompt_ids) == [fim.prefix, *p, fim.suffix, *s, fim.middle]
    spm = LocalEngine(engine.model, engine.files, fim_format="spm")
    assert list(spm.prepare(fim_request()).prompt_ids) == [fim.prefix, fim.suffix, *s, fim.middle, *p]
    stops = engine.prepare(fim_request()).specs[0].stop_ids
    assert stops == engine.eos_ids | {fim.prefix, fim.middle, fim.suffix, fim.pad, tok.file_sep_id}
    assert engine.prepare(GenerationRequest(id="plain", prompt=PREFIX)).specs[0].stop_ids == engine.eos_ids
    with pytest.raises(ValueError, match="fim_format"):
        LocalEngine(engine.model, engine.files, fim_format="pms")


def test_middle_equals_the_generator_on_the_fim_prompt(engine):
    (result,) = LocalBackend(engine).generate([fim_request(max_tokens=12)])
    prompt = engine.fim_prompt_ids(PREFIX, SUFFIX)
    q = generate_sequences(engine.model, [SequenceSpec(prompt, 12, stop_ids=engine.fim_stop_ids())],
                           engine.tokenizer)[0]
    assert result.ok and result.choices[0].text == q.text and result.prompt_tokens == len(prompt)
    plain = generate_sequences(engine.model, [SequenceSpec(engine.encode(PREFIX), 12, stop_ids=engine.eos_ids)],
                               engine.tokenizer)[0]
    assert q.tokens != plain.tokens  # the suffix changes what the model is asked


def test_trained_format_read_from_the_checkpoint(tmp_path, tiny):
    def with_fim(fim):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({"data": {"fim": fim}}))
        return str(folder)

    assert trained_fim_format(with_fim({"rate": 0.5, "spm_rate": 1.0})) == "spm"
    assert trained_fim_format(with_fim({"rate": 0.5, "spm_rate": 0.5})) == "psm"
    assert trained_fim_format(with_fim({"rate": 0.0, "spm_rate": 1.0})) == "psm"
    assert trained_fim_format(str(tmp_path / "missing")) == "psm"
    assert trained_fim_format(tiny) == "psm"  # no config.yaml (a HF folder has none either)


def test_tokenizer_without_fim_tokens_is_a_bad_request(tmp_path, engine):
    from megasnow.generation.model_files import TokenizerFiles
    from tests.data.test_fim import family_tokenizer
    from megasnow.data.tokenizer import load_tokenizer

    tok = load_tokenizer(family_tokenizer(tmp_path, "plain", ["<|endoftext|>"]))
    bare = LocalEngine(engine.model, TokenizerFiles(tok, eos_ids=(0,)))
    with pytest.raises(BadRequestError, match="needs a tokenizer with FIM tokens") as e:
        bare.prepare(fim_request())
    assert e.value.param == "suffix"  # the server's 400 names the field at fault
    (result,) = LocalBackend(bare).generate([fim_request()])
    assert result.error_kind == "bad_request"


def with_config(parent, name, config=None, generation=None):
    """A folder holding a config.yaml (a training config) and/or a generation_config.json."""
    import json

    folder = parent / name
    folder.mkdir()
    if config is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation))
    return str(folder)


def test_trained_fim_reads_what_the_folder_records(tmp_path):
    from megasnow.generation.model_files import TrainedFim, trained_fim

    fim_on = {"rate": 0.5, "spm_rate": 1.0, "level": "file"}
    on = with_config(tmp_path, "on", {"data": {"fim": fim_on}})
    assert trained_fim(on) == TrainedFim(True, "spm", on + "/config.yaml", fim_on)
    off = with_config(tmp_path, "off", {"data": {"fim": {"rate": 0.0, "spm_rate": 1.0}}})
    assert (trained_fim(off).trained, trained_fim(off).format) == (False, "psm")
    assert trained_fim(with_config(tmp_path, "old", {"data": {"seq_len": 8}})).trained is False  # no data.fim
    assert trained_fim(with_config(tmp_path, "bare", {"x": 1})) == TrainedFim()  # not a training config
    # a run trained without FIM from init_from weights: that checkpoint's state, unknown when it cannot be read
    assert trained_fim(with_config(tmp_path, "ft", {"data": {"fim": {"rate": 0}}, "checkpoint": {"init_from": on}}))\
        .format == "spm"
    assert trained_fim(with_config(tmp_path, "lost", {"data": {"fim": {"rate": 0}},
                                                     "checkpoint": {"init_from": str(tmp_path / "gone")}})).trained \
        is None
    # a HF folder: the `fim` entry an export writes into generation_config.json, else nothing recorded
    hf = with_config(tmp_path, "hf", generation={"eos_token_id": 2, "fim": fim_on})
    assert (trained_fim(hf).trained, trained_fim(hf).format) == (True, "spm")
    assert trained_fim(with_config(tmp_path, "hf0", generation={"fim": {"rate": 0.0}})).trained is False
    assert trained_fim(with_config(tmp_path, "hf1", generation={"eos_token_id": 2})) == TrainedFim()


def test_a_model_trained_without_fim_refuses_suffix(tmp_path, engine):
    from megasnow.generation.model_files import trained_fim

    state = trained_fim(with_config(tmp_path, "off", {"data": {"fim": {"rate": 0.0}}}))
    off = LocalEngine(engine.model, engine.files, model_name="tiny-off", fim_trained=state)
    with pytest.raises(BadRequestError) as e:
        off.prepare(fim_request())
    assert e.value.param == "suffix" and str(e.value).startswith(
        "model tiny-off was not trained with fill-in-the-middle (data.fim.rate is 0 in its config.yaml); ")
    assert off.prepare(GenerationRequest(id="plain", prompt=PREFIX)).prompt_ids  # left-to-right still runs
