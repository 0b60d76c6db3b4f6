"""The completions `suffix` parameter (how editor plugins ask for infilling) on a real megasnow.serve process driven
by the `openai` SDK: the text is the middle the engine writes for the FIM prompt, streamed or not, with usage counting
the FIM prompt; token-id prompts with a suffix are refused (400); --fim-format is a checked flag."""
import signal

import openai
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
    with pytest.raises(openai.BadRequestError, match="suffix needs text prompts"):
        c.completions.create(model=MODEL, prompt=[1, 2, 3], suffix="x", max_tokens=2)


def test_fim_format_flag():
    parser = make_parser()
    assert parser.parse_args(["m"]).fim_format is None
    assert parser.parse_args(["m", "--fim-format", "spm"]).fim_format == "spm"
    with pytest.raises(SystemExit):
        parser.parse_args(["m", "--fim-format", "pms"])
