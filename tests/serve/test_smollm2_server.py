"""megasnow.serve with a real instruct model (SmolLM2-135M-Instruct imported from its GGUF) and the `openai` SDK:
greedy text equals transformers' (and megasnow's) greedy generation, streams concatenate to it, chat requests use
the model's template, n=2 gives two choices, a too-long prompt is a 400 that the SDK does not retry."""
import json

import openai
import pytest

from megasnow.data.tokenizer import load_tokenizer
from megasnow.serve.process import ServerProcess
from megasnow.serve.request_log import request_hash
from tests.smollm2 import REFERENCE_CHAT, REFERENCE_NEW_TOKENS, REFERENCE_PROMPTS


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    log = tmp_path_factory.mktemp("smollm2_log") / "requests.jsonl"
    with ServerProcess(smollm2.checkpoint, "--served-model-name", "smollm2", "--request-log", log) as proc:
        proc.request_log = log
        yield proc


def test_greedy_completion_and_stream_equal_the_reference(server, smollm2):
    tok = load_tokenizer(smollm2.step_dir)
    c = openai.OpenAI(base_url=server.base_url, api_key="unused")
    want = tok.decode(smollm2.reference[0])
    r = c.completions.create(model="smollm2", prompt=REFERENCE_PROMPTS[0], max_tokens=REFERENCE_NEW_TOKENS,
                             temperature=0)
    assert r.choices[0].text == want and "fibonacci" in (REFERENCE_PROMPTS[0] + want).lower()
    assert r.usage.prompt_tokens == len(smollm2.prompt_ids[0])
    stream = c.completions.create(model="smollm2", prompt=REFERENCE_PROMPTS[0], max_tokens=REFERENCE_NEW_TOKENS,
                                  temperature=0, stream=True)
    assert "".join(ch.choices[0].text for ch in stream if ch.choices) == want


def test_chat_uses_the_template_and_n_gives_two_choices(server, smollm2):
    tok = load_tokenizer(smollm2.step_dir)
    c = openai.OpenAI(base_url=server.base_url, api_key="unused")
    r = c.chat.completions.create(model="smollm2", messages=REFERENCE_CHAT, max_tokens=REFERENCE_NEW_TOKENS,
                                  temperature=0)
    assert r.choices[0].message.content == tok.decode(smollm2.reference[2])
    assert r.usage.prompt_tokens == len(smollm2.prompt_ids[2])  # the template's tokens, as transformers renders
    r = c.chat.completions.create(model="smollm2", messages=REFERENCE_CHAT, max_tokens=6, temperature=1.0, n=2,
                                  seed=1)
    assert len(r.choices) == 2 and all(ch.message.content for ch in r.choices)
    assert r.choices[0].message.content != r.choices[1].message.content


def test_too_long_prompt_is_a_400_not_retried(server):
    c = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=3)
    prompt = "def f(x):\n    return x\n" * 1200  # about 9,600 tokens > 8,192
    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192 tokens"):
        c.completions.create(model="smollm2", prompt=prompt, max_tokens=8)
    h = request_hash({"model": "smollm2", "prompt": prompt, "max_tokens": 8})
    entries = [json.loads(x) for x in server.request_log.read_text().splitlines()]
    assert [e["status"] for e in entries if e["request_hash"] == h] == [400]
