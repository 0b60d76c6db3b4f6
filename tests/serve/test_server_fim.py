"""The completions `suffix` parameter (how editor plugins ask for infilling) on a real megasnow.serve process driven
by the `openai` SDK: the text is the middle the engine writes for the FIM prompt, streamed or not, with usage counting
the FIM prompt; token-id prompts with a suffix are refused (400); --fim-format is a checked flag; a model trained
without FIM refuses `suffix` (400); completions-only fields on chat are refused; an SPM-trained checkpoint exported
to HF keeps its layout."""
import signal

import openai
import yaml
import pytest

from megasnow.generation.local import LocalEngine
from megasnow.generation.tiny_model import write_tiny_checkpoint
from megasnow.model.generate import SequenceSpec, generate_sequences
from megasnow.serve.cli_args import make_parser
from megasnow.serve.process import ServerProcess

MODEL = "tiny-fim"
CASES = [("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"),
         ("class Stack:\n    def push(self, x):\n        ",
          "\n\n    def pop(self):\n        return self.items.pop()\n")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    write_tiny_checkpoint(str(out), seed=2)
    return str(out)


@pytest.fixture(scope="module")
def engine(tiny):
    return LocalEngine.from_path(tiny)


@pytest.fixture(scope="module")
def server(tiny):
    proc = ServerProcess(tiny, "--served-model-name", MODEL, "--threads", "1").start()
    yield proc
    assert proc.stop(signal.SIGINT) == 130


def middle(engine, prefix, suffix, max_tokens, **spec):
    prompt = engine.fim_prompt_ids(prefix, suffix)
    q = generate_sequences(engine.model, [SequenceSpec(prompt, max_tokens, stop_ids=engine.fim_stop_ids(), **spec)],
                           engine.tokenizer)[0]
    return q, len(prompt)


def test_suffix_returns_the_middle(server, engine):
    c = openai.OpenAI(base_url=server.base_url, api_key="unused")
    for prefix, suffix in CASES:
        r = c.completions.create(model=MODEL, prompt=prefix, suffix=suffix, max_tokens=10, temperature=0)
        q, prompt_tokens = middle(engine, prefix, suffix, 10)
        assert r.choices[0].text == q.text and r.choices[0].finish_reason == q.finish_reason
        assert r.usage.prompt_tokens == prompt_tokens == len(engine.tokenizer.encode(prefix)) + len(
            engine.tokenizer.encode(suffix)) + 3
        plain = c.completions.create(model=MODEL, prompt=prefix, max_tokens=10, temperature=0)
        assert plain.choices[0].text != r.choices[0].text  # the suffix reached the model
        stream = c.completions.create(model=MODEL, prompt=prefix, suffix=suffix, max_tokens=10, temperature=0,
                                      stream=True)
        assert "".join(ch.choices[0].text for ch in stream if ch.choices) == q.text


def test_sampled_choices_follow_their_seeds(server, engine):
    c = openai.OpenAI(base_url=server.base_url, api_key="unused")
    prefix, suffix = CASES[0]
    r = c.completions.create(model=MODEL, prompt=prefix, suffix=suffix, max_tokens=8, temperature=0.8, seed=5, n=2)
    for j, choice in enumerate(r.choices):
        assert choice.text == middle(engine, prefix, suffix, 8, temperature=0.8, seed=5 + j)[0].text


def test_suffix_with_token_prompts_is_a_400(server):
    c = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model=MODEL, prompt=[1, 2, 3], suffix="x", max_tokens=2)
    assert e.value.body["message"] == ("suffix needs text prompts: send the prompt as text to use suffix "
                                       "(fill-in-the-middle builds the prompt from text)"), e.value.body


def test_fim_format_flag():
    parser = make_parser()
    assert parser.parse_args(["m"]).fim_format is None
    assert parser.parse_args(["m", "--fim-format", "spm"]).fim_format == "spm"
    with pytest.raises(SystemExit):
        parser.parse_args(["m", "--fim-format", "pms"])


def with_training_config(step_dir, fim):
    """Give a tiny checkpoint's step folder the training config a trainer would have left there (data.fim)."""
    with open(f"{step_dir}/config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump({"data": {"seq_len": 64, "fim": fim}, "checkpoint": {"init_from": None}}, f)
    return step_dir


@pytest.fixture(scope="module")
def nofim_server(tmp_path_factory):
    """A server over a checkpoint whose config.yaml says it was trained with data.fim.rate 0."""
    step = with_training_config(write_tiny_checkpoint(str(tmp_path_factory.mktemp("nofim")), seed=2),
                                {"rate": 0.0, "spm_rate": 0.5, "level": "file"})
    proc = ServerProcess(step, "--served-model-name", "tiny-nofim", "--threads", "1").start()
    yield proc
    assert proc.stop(signal.SIGINT) == 130


def test_suffix_for_a_model_trained_without_fim_is_a_400(nofim_server):
    c = openai.OpenAI(base_url=nofim_server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="tiny-nofim", prompt=CASES[0][0], suffix=CASES[0][1], max_tokens=4)
    assert (e.value.status_code, e.value.type, e.value.param) == (400, "invalid_request_error", "suffix")
    assert e.value.body["message"].startswith("model tiny-nofim was not trained with fill-in-the-middle "
                                              "(data.fim.rate is 0 in its config.yaml); ")
    assert c.completions.create(model="tiny-nofim", prompt=CASES[0][0], max_tokens=2).choices[0].text is not None


@pytest.mark.parametrize("field,value,message", [
    ("suffix", "\nprint(1)\n", "suffix is a /v1/completions parameter (fill-in-the-middle); chat completions do "
                               "not take it"),
    ("prompt", "def f():", "prompt is a /v1/completions parameter; chat completions take `messages`"),
])
def test_completions_only_fields_on_chat_are_a_400(server, field, value, message):
    c = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                  extra_body={field: value})
    assert (e.value.param, e.value.type) == (field, "invalid_request_error")
    assert e.value.body["message"].startswith(message)
    # a null is "not given" (as for every other field)
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                  extra_body={field: None})
    assert r.choices[0].finish_reason in ("stop", "length")


def test_an_spm_trained_checkpoint_exported_to_hf_keeps_its_format(tmp_path):
    """The export records data.fim in generation_config.json (transformers reads the folder, and keeps the entry);
    the server on the HF folder lays out `suffix` prompts suffix-prefix-middle, as trained."""
    import json

    from transformers import GenerationConfig

    from megasnow.convert.hf_llama import export_to_hf

    fim = {"rate": 0.5, "spm_rate": 1.0, "level": "file"}
    step = with_training_config(write_tiny_checkpoint(str(tmp_path / "ckpt"), seed=2), fim)
    hf = str(tmp_path / "hf")
    export_to_hf(step, hf)
    assert json.load(open(f"{hf}/generation_config.json"))["fim"] == fim
    assert GenerationConfig.from_pretrained(hf).fim == fim
    engine = LocalEngine.from_path(hf)
    assert engine.fim_format == "spm"
    prefix, suffix = CASES[0]
    spm_prompt = engine.fim_prompt_ids(prefix, suffix)
    fim_ids = engine.tokenizer.fim_tokens()
    assert spm_prompt[:2] == [fim_ids.prefix, fim_ids.suffix]  # <fim_prefix><fim_suffix> suffix <fim_middle> prefix
    want = generate_sequences(engine.model, [SequenceSpec(spm_prompt, 10, stop_ids=engine.fim_stop_ids())],
                              engine.tokenizer)[0]
    psm = generate_sequences(engine.model, [SequenceSpec(engine.fim_prompt_ids(prefix, suffix, fmt="psm"), 10,
                                                         stop_ids=engine.fim_stop_ids())], engine.tokenizer)[0]
    assert want.tokens != psm.tokens  # the layout changes the answer, so the served text tells which one ran
    proc = ServerProcess(hf, "--served-model-name", "tiny-spm", "--threads", "1").start()
    try:
        c = openai.OpenAI(base_url=proc.base_url, api_key="unused", max_retries=0)
        r = c.completions.create(model="tiny-spm", prompt=prefix, suffix=suffix, max_tokens=10, temperature=0)
        assert r.choices[0].text == want.text and r.usage.prompt_tokens == len(spm_prompt)
    finally:
        assert proc.stop(signal.SIGINT) == 130
