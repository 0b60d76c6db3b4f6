"""megasnow.serve as a real process on 127.0.0.1 (random port) with a tiny random model, driven by the official
`openai` SDK: greedy text equals megasnow's own generate, streams concatenate to the same text, n and seeds,
chat templates, stop strings, batching of concurrent requests, OpenAI-shaped errors, 400s that are not retried,
a full queue (429), client disconnects, and the CLI rule."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import torch

from megasnow.generation.local import LocalEngine
from megasnow.generation.protocol import GenerationRequest
from megasnow.generation.tiny_model import write_tiny_checkpoint
from megasnow.model.generate import SequenceSpec, generate, generate_sequences
from megasnow.serve.process import ServerProcess
from megasnow.serve.request_log import request_hash

PROMPTS = ["def add(a, b):\n    return", "import os\n", "class Stack:\n    def push(self, x):\n"]
MODEL = "tiny"
ALIAS = "tiny-alias"  # a second --served-model-name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    write_tiny_checkpoint(str(out), seed=1)
    return str(out)


@pytest.fixture(scope="module")
def engine(tiny):
    return LocalEngine.from_path(tiny)


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "requests.jsonl"
    proc = ServerProcess(tiny, "--served-model-name", MODEL, "--served-model-name", ALIAS, "--batch-wait-ms", "100",
                         "--request-log", log, "--threads", "1").start()
    proc.request_log = log
    yield proc
    rc = proc.stop(signal.SIGINT)
    assert rc == 130  # the CLI rule: Ctrl-C exits 130 with one line
    assert proc.stderr_lines[-1] == "megasnow.serve: interrupted (Ctrl-C); server stopped"  # nothing to resume
    assert any(line.startswith("megasnow.serve: stopped after") for line in proc.stderr_lines)


def client(server, **kw):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", **kw)


def log_lines(server):
    return [json.loads(line) for line in server.request_log.read_text().splitlines()]


def expected(engine, text, max_tokens, **spec):
    ids = engine.tokenizer.encode(text)
    return generate_sequences(engine.model, [SequenceSpec(ids, max_tokens, stop_ids=engine.eos_ids, **spec)],
                              engine.tokenizer)[0]


def test_models_endpoint(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == [MODEL, ALIAS]
    assert models.data[0].max_model_len == 1024
    # GET /v1/models/ (an empty id) is the list, not a lookup of the model "" (vLLM redirects it to /v1/models)
    r = httpx.get(server.base_url + "/models/", timeout=30)
    assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == [MODEL, ALIAS]


def test_responses_echo_the_served_name_asked_for(server):
    """vLLM answers with the alias the request named, not the first --served-model-name."""
    c = client(server)
    r = c.completions.create(model=ALIAS, prompt="x", max_tokens=2, temperature=0)
    assert r.model == ALIAS
    r = c.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.model == ALIAS
    chunks = list(c.completions.create(model=ALIAS, prompt="x", max_tokens=2, stream=True,
                                       stream_options={"include_usage": True}))
    assert chunks and {ch.model for ch in chunks} == {ALIAS}
    chunks = list(c.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                            stream=True))
    assert chunks and {ch.model for ch in chunks} == {ALIAS}


def test_greedy_completions_equal_generate(server, engine):
    c = client(server)
    for p in PROMPTS:
        r = c.completions.create(model=MODEL, prompt=p, max_tokens=12, temperature=0)
        q = expected(engine, p, 12)
        ids = engine.tokenizer.encode(p)
        tokens = generate(engine.model, [ids], 12, stop_ids=engine.eos_ids)[0]
        assert r.choices[0].text == q.text == engine.tokenizer.decode(tokens)
        assert r.choices[0].finish_reason == q.finish_reason
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), q.num_generated)
        assert r.model == MODEL and r.object == "text_completion" and r.system_fingerprint.startswith("megasnow-")
    # several prompts in one request: choices indexed prompt-major
    r = c.completions.create(model=MODEL, prompt=PROMPTS[:2], max_tokens=5, temperature=0, n=2)
    assert [ch.index for ch in r.choices] == [0, 1, 2, 3]
    assert [ch.text for ch in r.choices] == [expected(engine, p, 5).text for p in PROMPTS[:2] for _ in range(2)]
    # token-id prompts
    ids = engine.tokenizer.encode(PROMPTS[0])
    r = c.completions.create(model=MODEL, prompt=ids, max_tokens=12, temperature=0)
    assert r.choices[0].text == expected(engine, PROMPTS[0], 12).text


def test_streaming_concatenates_to_the_same_text(server, engine):
    c = client(server)
    stream = c.completions.create(model=MODEL, prompt=PROMPTS[2], max_tokens=16, temperature=0, stream=True,
                                  stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    q = expected(engine, PROMPTS[2], 16)
    assert text == q.text
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [q.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == q.num_generated
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].text) >= 2  # really incremental
    # the wire format ends with the SSE terminator
    with httpx.stream("POST", server.base_url + "/completions", timeout=60,
                      json={"model": MODEL, "prompt": PROMPTS[0], "max_tokens": 4, "stream": True}) as r:
        events = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_n_choices_and_seeds(server, engine):
    c = client(server)
    r = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=10, temperature=1.0, top_p=0.95, n=2,
                             seed=5)
    assert len(r.choices) == 2 and r.choices[0].text != r.choices[1].text
    for j, ch in enumerate(r.choices):
        assert ch.text == expected(engine, PROMPTS[0], 10, temperature=1.0, top_p=0.95, seed=5 + j).text
    again = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=10, temperature=1.0, top_p=0.95, n=2,
                                 seed=5)
    assert [ch.text for ch in again.choices] == [ch.text for ch in r.choices]
    assert r.usage.completion_tokens == 20


def test_min_tokens_holds_off_the_end_of_text(server, engine):
    """vLLM's `min_tokens` extension: no end of text before that many tokens; the served text equals generate's
    with min_new_tokens, for a seed whose sample would otherwise end within 3 tokens; min_tokens > max_tokens is a
    400 naming min_tokens."""
    c = client(server, max_retries=0)
    sampling = {"temperature": 2.0, "top_p": 1.0}
    seed = next(s for s in range(500) if len(expected(engine, PROMPTS[0], 16, seed=s, **sampling).tokens) < 3
                and expected(engine, PROMPTS[0], 16, seed=s, **sampling).finish_reason == "stop")
    free = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=16, seed=seed, **sampling)
    assert free.choices[0].finish_reason == "stop" and free.usage.completion_tokens < 3
    held = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=16, seed=seed, extra_body={"min_tokens": 3},
                                **sampling)
    ref = expected(engine, PROMPTS[0], 16, seed=seed, min_new_tokens=3, **sampling)
    assert held.choices[0].text == ref.text and held.usage.completion_tokens == len(ref.tokens) >= 3
    for create, kw in [(c.completions.create, {"prompt": "x"}),
                       (c.chat.completions.create, {"messages": [{"role": "user", "content": "x"}]})]:
        with pytest.raises(openai.BadRequestError) as e:
            create(model=MODEL, max_tokens=2, extra_body={"min_tokens": 3}, **kw)
        assert e.value.body["param"] == "min_tokens" and "min_tokens must be in [0, max_tokens=2]" in str(e.value)


def test_chat_completions_use_the_chat_template(server, engine):
    from transformers import AutoTokenizer


    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "Sort a list."}]
    rendered = AutoTokenizer.from_pretrained(os.path.dirname(engine.files.tokenizer.path)) \
        .apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    c = client(server)
    r = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    q = expected(engine, rendered, 12)
    assert r.choices[0].message.content == q.text and r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(engine.tokenizer.encode(rendered))
    assert r.object == "chat.completion"
    stream = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == q.text
    assert chunks[-1].choices[0].finish_reason == q.finish_reason
    # max_completion_tokens (what newer SDKs send) and the default: the rest of the context
    r = c.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=3, temperature=0)
    assert r.usage.completion_tokens <= 3


def test_stop_strings(server, engine):
    free = expected(engine, PROMPTS[1], 16).text
    stop = free[6:8]
    r = client(server).completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=16, temperature=0,
                                          stop=[stop, "never-there"])
    assert (r.choices[0].text, r.choices[0].finish_reason) == (free[:free.index(stop)], "stop")
    chunks = client(server).completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=16, temperature=0,
                                               stop=stop, stream=True)
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == free[:free.index(stop)]


def test_concurrent_requests_share_a_batch_and_keep_their_answers(server, engine):
    """Requests that wait while a batch runs share the next batch. (They wait behind a long stream: six client
    threads on a loaded machine may arrive further apart than --batch-wait-ms, each then running alone.)"""
    prompts = [f"def f{i}(x):\n    return x * {i}" for i in range(6)]
    results = {}

    def ask(i):
        results[i] = client(server).completions.create(model=MODEL, prompt=prompts[i], max_tokens=8,
                                                       temperature=0).choices[0].text

    long_body = {"model": MODEL, "prompt": "def f():", "max_tokens": 1000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.base_url + "/completions", json=long_body, timeout=60) as stream:
        lines = stream.iter_lines()  # (kept referenced: closing this iterator closes the connection)
        assert next(lines).startswith("data: ")  # the long batch runs
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        deadline = time.time() + 60  # all six wait for the engine (poll; nothing timed)
        while httpx.get(server.base_url[:-3] + "/health", timeout=30).json()["unfinished_sequences"] < 7:
            assert time.time() < deadline
            time.sleep(0.05)
    # the stream's client left: its batch stops at the next step and the six waiting requests run
    for t in threads:
        t.join(120)
    assert [results[i] for i in range(6)] == [expected(engine, p, 8).text for p in prompts]
    lines = [x for x in log_lines(server) if x["status"] == 200 and x["completion_tokens"] == 8
             and x["prompt_tokens"] == len(engine.tokenizer.encode(prompts[0]))]
    assert max(max(x["batch_sizes"]) for x in lines) > 1  # arrivals within --batch-wait-ms shared a batch


def test_errors_have_the_openai_shape(server):
    c = client(server, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.completions.create(model="other", prompt="x", max_tokens=2)
    for kw, param in [({"temperature": 5}, "temperature"), ({"n": 0}, "n"), ({"top_p": 0}, "top_p"),
                      ({"max_tokens": 0}, "max_tokens"), ({"logprobs": 21}, "logprobs"),
                      ({"presence_penalty": 0.5}, "presence_penalty")]:
        with pytest.raises(openai.BadRequestError) as e:
            c.completions.create(model=MODEL, prompt="x", **{"max_tokens": 2, **kw})
        assert e.value.status_code == 400 and e.value.body["param"] == param, kw
        assert e.value.body["type"] == "invalid_request_error"
    # a body that is not a JSON object: a 400 saying so (with the position, worded as Python's json), param null
    broken = b'{"model": "tiny",\n "prompt": x}'
    with pytest.raises(json.JSONDecodeError) as bad:
        json.loads(broken)
    for body, content_type, message in [
            (broken, "application/json", f"The request body is not valid JSON: {bad.value.msg}: line 2 column 12 "
                                         f"(char {bad.value.pos})"),
            (b"{not json", "application/json", "The request body is not valid JSON: Expecting property name "
                                               "enclosed in double quotes: line 1 column 2 (char 1)"),
            (b"", "application/json", "The request body is empty; send the request as a JSON object"),
            (b"[1]", "application/json", "The request body must be a JSON object, got list"),
            (b'"str"', "application/json", "The request body must be a JSON object, got str"),
            (b"model=tiny", "text/plain", "The request body is not valid JSON: Expecting value: line 1 column 1 "
                                          "(char 0) (it came with Content-Type: text/plain; this server reads every "
                                          "body as JSON)")]:
        r = httpx.post(server.base_url + "/completions", content=body, timeout=30,
                       headers={"content-type": content_type})
        assert r.status_code == 400 and r.json() == {"error": {"message": message, "type": "invalid_request_error",
                                                               "param": None, "code": None}}, body
    r = httpx.post(server.base_url + "/completions", json={"model": MODEL, "prompt": []}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    # token ids outside the vocabulary: a 400 naming prompt, also when echo would decode them
    for extra in ({}, {"echo": True, "logprobs": 1}):
        r = httpx.post(server.base_url + "/completions", timeout=30,
                       json={"model": MODEL, "prompt": [-1], "max_tokens": 1, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", (extra, r.text)
        assert r.json()["error"]["message"].startswith("prompt token id -1 is outside the vocabulary [0, ")
    # stream_options without stream=True: vLLM's 400
    for path, body in [("/completions", {"prompt": "x"}), ("/chat/completions", {"messages": [{"role": "user",
                                                                                                "content": "hi"}]})]:
        r = httpx.post(server.base_url + path, timeout=30,
                       json={"model": MODEL, "max_tokens": 1, "stream_options": {"include_usage": True}, **body})
        assert r.status_code == 400 and r.json()["error"] == {
            "message": "Stream options can only be defined when `stream=True`.", "type": "invalid_request_error",
            "param": "stream_options", "code": None}, path
    r = httpx.post(server.base_url + "/chat/completions", json={"model": MODEL, "messages": []}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


# vLLM's (and OpenAI's) fields this server does not implement: each non-neutral value is a 400 naming it
REFUSED = [("completions", "repetition_penalty", 1.2),
           ("completions", "length_penalty", 0.5), ("completions", "use_beam_search", True),
           ("completions", "best_of", 3), ("completions", "prompt_logprobs", 1),
           ("completions", "presence_penalty", 0.5),
           ("completions", "frequency_penalty", 0.5), ("completions", "logit_bias", {"5": 10}),
           ("completions", "bad_words", ["x"]), ("completions", "stop_token_ids", [3]),
           ("completions", "allowed_token_ids", [3]), ("completions", "include_stop_str_in_output", True),
           ("completions", "skip_special_tokens", True), ("completions", "spaces_between_special_tokens", False),
           ("completions", "truncate_prompt_tokens", 8), ("completions", "return_tokens_as_token_ids", True),
           ("completions", "guided_json", {"type": "object"}), ("completions", "guided_regex", "[a-z]+"),
           ("completions", "guided_choice", ["a", "b"]), ("completions", "guided_grammar", "root ::= 'a'"),
           ("completions", "response_format", {"type": "json_object"}),
           ("chat", "repetition_penalty", 1.1),
           ("chat", "best_of", 2),
           ("chat", "use_beam_search", True), ("chat", "echo", True), ("chat", "continue_final_message", True),
           ("chat", "add_generation_prompt", False), ("chat", "chat_template", "{{ messages }}"),
           ("chat", "chat_template_kwargs", {"enable_thinking": True}),
           ("chat", "response_format", {"type": "json_object"}), ("chat", "guided_choice", ["a"])]
NEUTRAL = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "length_penalty": 1.0, "use_beam_search": False,
           "best_of": 1, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {}, "bad_words": [],
           "stop_token_ids": [], "include_stop_str_in_output": False, "skip_special_tokens": False,
           "spaces_between_special_tokens": True, "response_format": {"type": "text"}, "echo": False}
CHAT_NEUTRAL = {"logprobs": False, "top_logprobs": 0, "add_generation_prompt": True,
                "continue_final_message": False}


def refusal(c, endpoint, field, value):
    """The openai.BadRequestError a short request to `endpoint` ('chat' or 'completions') setting `field` gets."""
    with pytest.raises(openai.BadRequestError) as e:
        if endpoint == "chat":
            c.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "hi"}],
                                      extra_body={field: value})
        else:
            c.completions.create(model=MODEL, prompt="x", max_tokens=2, extra_body={field: value})
    return e.value


@pytest.mark.parametrize("endpoint,field,value", REFUSED, ids=[f"{e}-{f}" for e, f, _ in REFUSED])
def test_unimplemented_fields_are_a_400_naming_them(server, endpoint, field, value):
    error = refusal(client(server, max_retries=0), endpoint, field, value)
    assert error.status_code == 400 and error.body["param"] == field
    assert error.body["type"] == "invalid_request_error"
    assert error.body["message"].startswith(f"{field}={json.dumps(value)} is not supported")


def test_refusals_read_right(server):
    """The refusal messages, literally (the NEUTRAL_ONLY texts complete "this server does not implement")."""
    c = client(server, max_retries=0)
    for endpoint, field, value, message in [
            ("completions", "response_format", {"type": "json_object"},
             'response_format={"type": "json_object"} is not supported: this server does not implement response '
             'formats other than text; leave it unset or {"type": "text"}'),
            ("completions", "presence_penalty", 0.5, "presence_penalty=0.5 is not supported: this server does not "
                                                     "implement presence penalties; leave it unset or 0.0"),
            ("completions", "include_stop_str_in_output", True,
             "include_stop_str_in_output=true is not supported: this server does not implement keeping stop "
             "strings in the output (they are cut); leave it unset or false"),
            ("completions", "best_of", 3, "best_of=3 is not supported: this server does not implement best_of other "
                                          "than n; leave it unset or equal to n (1)"),
            ("chat", "add_generation_prompt", False,
             "add_generation_prompt=false is not supported: this server does not implement prompts without the "
             "generation prompt; leave it unset or true"),
            ("chat", "chat_template", "{{ messages }}",
             'chat_template="{{ messages }}" is not supported: this server does not implement per-request chat '
             "templates (use the server's --chat-template); leave it unset")]:
        error = refusal(c, endpoint, field, value)
        assert error.body["message"] == message and error.body["param"] == field


def test_null_means_the_default(server):
    """OpenAI and vLLM read null as "the default": every optional field of both request models (n, stream,
    ignore_eos, min_tokens, echo, ...) sent as null answers as if it were left out; required ones stay required."""
    from megasnow.serve.protocol import ChatCompletionRequest, CompletionRequest

    for path, model, base in [("/completions", CompletionRequest, {"prompt": PROMPTS[0]}),
                              ("/chat/completions", ChatCompletionRequest,
                               {"messages": [{"role": "user", "content": "hi", "name": None}]})]:
        nulls = {name: None for name, f in model.model_fields.items() if not f.is_required()}
        assert {"n", "stream", "ignore_eos", "min_tokens", "stream_options", "seed"} <= set(nulls)
        base = {**base, "model": MODEL, "max_tokens": 5, "temperature": 0}
        plain = httpx.post(server.base_url + path, json=base, timeout=60)
        for body in ({**nulls, **base}, {**base, "n": None, "stream": None}):
            r = httpx.post(server.base_url + path, json=body, timeout=60)
            assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
            assert len(r.json()["choices"]) == 1
            assert r.json()["choices"] == plain.json()["choices"] and r.json()["usage"] == plain.json()["usage"]
        missing = "prompt" if path == "/completions" else "messages"
        r = httpx.post(server.base_url + path, json={**base, missing: None}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == missing
    r = httpx.post(server.base_url + "/chat/completions", timeout=30,
                   json={"model": MODEL, "messages": [{"role": None, "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.role"


def test_model_retrieve_and_unknown_routes_have_the_openai_shape(server):
    c = client(server, max_retries=0)
    card = c.models.retrieve(MODEL)
    assert card.model_dump() == c.models.list().data[0].model_dump()
    assert (card.id, card.object, card.owned_by, card.max_model_len) == (MODEL, "model", "megasnow", 1024)
    for name in ("other", "org/other"):  # (a model id may hold a slash)
        with pytest.raises(openai.NotFoundError) as e:
            c.models.retrieve(name)
        assert e.value.body == {"message": f"The model `{name}` does not exist.", "type": "invalid_request_error",
                                "param": "model", "code": "model_not_found"}
    routes = ("GET /v1/models, GET /v1/models/{model}, POST /v1/completions, POST /v1/chat/completions, "
              "GET /health")
    root = server.base_url[:-len("/v1")]
    for method, url, status, message, code in [
            ("POST", server.base_url + "/embeddings", 404,
             f"Invalid URL (POST /v1/embeddings); this server serves {routes}", "not_found"),
            ("GET", root + "/", 404, f"Invalid URL (GET /); this server serves {routes}", "not_found"),
            ("GET", server.base_url + "/completions", 405, "Method not allowed (GET /v1/completions); use POST",
             "method_not_allowed"),
            ("DELETE", server.base_url + "/models", 405, "Method not allowed (DELETE /v1/models); use GET",
             "method_not_allowed")]:
        r = httpx.request(method, url, timeout=30)
        assert r.status_code == status and r.json() == {"error": {"message": message, "type": "invalid_request_error",
                                                                  "param": None, "code": code}}, (method, url)
    with pytest.raises(openai.NotFoundError, match="Invalid URL"):
        c.embeddings.create(model=MODEL, input="x")


def test_neutral_values_of_unimplemented_fields_change_nothing(server):
    c = client(server)
    for top_k in (-1, 0):  # both mean "all tokens" in vLLM
        plain = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=6, temperature=0.8, seed=5)
        same = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=6, temperature=0.8, seed=5,
                                    extra_body={**NEUTRAL, "top_k": top_k})
        assert same.choices[0].text == plain.choices[0].text
    messages = [{"role": "user", "content": "hello"}]
    plain = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0)
    same = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0,
                                     extra_body={**NEUTRAL, **CHAT_NEUTRAL})
    assert same.choices[0].message.content == plain.choices[0].message.content
    assert same.usage.completion_tokens == plain.usage.completion_tokens == 6 or \
        same.choices[0].finish_reason == plain.choices[0].finish_reason == "stop"


def test_top_k_and_min_p_sample_as_vllm(server):
    """vLLM's top_k / min_p extensions: top_k 1 or min_p 1 at temperature 1 is greedy decoding; a wider top_k
    stays seeded-reproducible; out-of-range values are a 400 naming the field."""
    c = client(server)
    greedy = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=8, temperature=0).choices[0].text
    for extra in ({"top_k": 1}, {"min_p": 1.0}):
        got = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=8, temperature=1.0, seed=3,
                                   extra_body=extra)
        assert got.choices[0].text == greedy, extra
    messages = [{"role": "user", "content": "hello"}]
    chat = [c.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=1.2, seed=9,
                                      extra_body={"top_k": 20, "min_p": 0.05}).choices[0].message.content
            for _ in range(2)]
    assert chat[0] == chat[1]
    strict = client(server, max_retries=0)
    for field, value in (("top_k", -2), ("min_p", 1.5), ("min_p", -0.1)):
        with pytest.raises(openai.BadRequestError) as e:
            strict.completions.create(model=MODEL, prompt="x", max_tokens=2, extra_body={field: value})
        assert e.value.body["param"] == field


def reference_logprobs(engine, ids):
    """log_softmax of the model's logits over `ids` in this process (one full forward): [len(ids), V]."""
    with torch.no_grad():
        return torch.log_softmax(engine.model(torch.tensor([list(ids)]))[0].float(), dim=-1)


def check_completion_logprobs(lp, text, ref, ids, first, n):
    """A choice's legacy `logprobs` against the reference: token i (ids[first + i]) has logprob
    ref[first + i - 1, id]; top_logprobs holds the n most likely plus the sampled token, sorted; tokens join to
    the text and text_offset counts their characters."""
    assert "".join(lp.tokens) == text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for i, (logprob, top) in enumerate(zip(lp.token_logprobs, lp.top_logprobs)):
        pos = first + i
        if pos == 0:
            assert logprob is None and top is None
            continue
        row = ref[pos - 1]
        assert logprob == pytest.approx(row[ids[pos]].item(), abs=1e-4)
        # (the tiny model's byte tokens may share a string, e.g. "" or "\ufffd": a dict keeps the larger value)
        values, best = list(top.values()), row.topk(n).values.tolist() if n else []
        assert values == sorted(values, reverse=True) and 1 <= len(top) <= n + 1
        assert values[0] == pytest.approx(max(best[:1] + [logprob]), abs=1e-4)  # most likely first
        assert all(v == pytest.approx(logprob, abs=1e-4) or any(v == pytest.approx(b, abs=1e-4) for b in best)
                   for v in values)  # only the top n and the sampled token
        assert top[lp.tokens[i]] >= logprob - 1e-4  # the sampled token is always there


def test_completion_logprobs_equal_the_models_log_softmax(server, engine):
    """logprobs: N: each generated token's raw logprob (log_softmax of the logits, before temperature and top-p:
    vLLM v1's default) and the N most likely tokens, equal to an in-process forward pass to 1e-4; the token
    strings join to the text, also when a stop string cuts it; with echo the prompt's tokens come first."""
    c = client(server)
    ids = engine.tokenizer.encode(PROMPTS[0])
    for sampling in ({"temperature": 0}, {"temperature": 1.3, "top_p": 0.7, "seed": 11}):
        r = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=10, logprobs=3, **sampling)
        spec = {"temperature": sampling["temperature"], "top_p": sampling.get("top_p", 1.0),
                "seed": sampling.get("seed")}
        q = expected(engine, PROMPTS[0], 10, **spec)
        full = ids + q.tokens
        assert r.choices[0].text == q.text and len(r.choices[0].logprobs.tokens) == len(q.tokens)
        check_completion_logprobs(r.choices[0].logprobs, q.text, reference_logprobs(engine, full), full, len(ids), 3)
    # echo: prompt text first, then the completion; the first prompt token has no logprob
    r = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=6, temperature=0, logprobs=2, echo=True)
    q = expected(engine, PROMPTS[0], 6)
    full = ids + q.tokens
    assert r.choices[0].text == PROMPTS[0] + q.text and r.usage.prompt_tokens == len(ids)
    check_completion_logprobs(r.choices[0].logprobs, PROMPTS[0] + q.text, reference_logprobs(engine, full), full, 0,
                              2)
    # a stop string: the tokens up to the one completing it, that one clipped to the text before the cut
    free = expected(engine, PROMPTS[1], 16)
    stop = free.text[6:8]
    r = c.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=16, temperature=0, stop=stop, logprobs=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == free.text[:6] == "".join(lp.tokens)
    assert lp.token_logprobs == pytest.approx(
        [reference_logprobs(engine, engine.tokenizer.encode(PROMPTS[1]) + free.tokens)[
            len(engine.tokenizer.encode(PROMPTS[1])) - 1 + k, t].item() for k, t in enumerate(free.tokens)][
            :len(lp.tokens)], abs=1e-4)
    # no logprobs asked: none sent
    assert c.completions.create(model=MODEL, prompt="x", max_tokens=2).choices[0].logprobs is None


def test_lm_eval_loglikelihood_request(server, engine):
    """lm-evaluation-harness's `local-completions` loglikelihood request (token-id prompts, max_tokens 1,
    logprobs 1, echo): the sum of token_logprobs[ctxlen:-1] is the continuation's log-likelihood computed in
    this process, and its is_greedy check reads top_logprobs. max_tokens 0 with echo scores the prompt alone."""
    tok = engine.tokenizer
    pairs = [("def add(a, b):\n    return", " a + b"), ("import", " os\nimport sys")]
    prompts = [tok.encode(ctx) + tok.encode(cont) for ctx, cont in pairs]
    ctxlens = [len(tok.encode(ctx)) for ctx, _ in pairs]
    r = client(server).completions.create(model=MODEL, prompt=prompts, max_tokens=1, temperature=0, logprobs=1,
                                          echo=True, seed=1234)
    assert len(r.choices) == 2
    for choice, ids, ctxlen in zip(r.choices, prompts, ctxlens):
        ref = reference_logprobs(engine, ids)
        expect = sum(ref[j - 1, ids[j]].item() for j in range(ctxlen, len(ids)))
        lp = choice.logprobs
        assert len(lp.token_logprobs) == len(ids) + 1 and lp.token_logprobs[0] is None
        assert sum(lp.token_logprobs[ctxlen:-1]) == pytest.approx(expect, abs=1e-4)
        greedy = all(max(top, key=top.get) == token
                     for token, top in zip(lp.tokens[ctxlen:-1], lp.top_logprobs[ctxlen:-1]))
        assert greedy == all(int(ref[j - 1].argmax()) == ids[j] for j in range(ctxlen, len(ids)))
        assert choice.text.startswith(tok.decode(ids)) and "".join(lp.tokens) == choice.text
    scored = client(server).completions.create(model=MODEL, prompt=prompts[0], max_tokens=0, logprobs=0, echo=True)
    assert scored.choices[0].text == tok.decode(prompts[0]) and scored.usage.completion_tokens == 0
    assert scored.choices[0].logprobs.token_logprobs == r.choices[0].logprobs.token_logprobs[:-1]


def test_streamed_logprobs_equal_the_plain_ones(server):
    """Each streamed chunk carries the logprobs of the tokens whose text it carries: concatenated they equal the
    non-streamed answer (completions with echo and a stop string, chat)."""
    c = client(server)
    kw = {"model": MODEL, "prompt": PROMPTS[2], "max_tokens": 14, "temperature": 0, "logprobs": 2, "echo": True,
          "stop": ["never", "\n\n\n"]}
    plain = c.completions.create(**kw).choices[0]
    chunks = [ch.choices[0] for ch in c.completions.create(stream=True, **kw) if ch.choices]
    assert "".join(ch.text for ch in chunks) == plain.text
    got = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for ch in chunks:
        for key in got:
            got[key] += getattr(ch.logprobs, key) if ch.logprobs else []
    assert got == plain.logprobs.model_dump()
    assert sum(1 for ch in chunks if ch.logprobs) >= 2
    messages = [{"role": "user", "content": "Write a loop."}]
    plain = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0, logprobs=True,
                                      top_logprobs=3).choices[0]
    streamed = [ch.choices[0] for ch in c.chat.completions.create(model=MODEL, messages=messages, max_tokens=10,
                                                                  temperature=0, logprobs=True, top_logprobs=3,
                                                                  stream=True)]
    content = [item for ch in streamed if ch.logprobs for item in ch.logprobs.content]
    assert [x.model_dump() for x in content] == [x.model_dump() for x in plain.logprobs.content]


def test_chat_logprobs_shape(server, engine):
    """Chat `logprobs: true, top_logprobs: N`: content[i] = {token, logprob, bytes, top_logprobs: N entries
    sorted} with values equal to the in-process reference; tokens join to the message; top_logprobs without
    logprobs and out-of-range values are 400s naming the field."""
    c = client(server, max_retries=0)
    messages = [{"role": "user", "content": "Sort a list."}]
    r = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0, logprobs=True,
                                  top_logprobs=4)
    rendered = engine.prompt_text(GenerationRequest(id="x", messages=messages))
    prompt_ids = engine.encode(rendered, add_bos=False)
    q = expected(engine, rendered, 8)
    ref = reference_logprobs(engine, prompt_ids + q.tokens)
    content = r.choices[0].logprobs.content
    assert "".join(x.token for x in content) == r.choices[0].message.content == q.text
    assert len(content) == len(q.tokens)
    for k, (x, t) in enumerate(zip(content, q.tokens)):
        row = ref[len(prompt_ids) - 1 + k]
        assert x.logprob == pytest.approx(row[t].item(), abs=1e-4) and x.bytes == list(x.token.encode())
        assert [y.logprob for y in x.top_logprobs] == pytest.approx(row.topk(4).values.tolist(), abs=1e-4)
        assert all(y.bytes == list(y.token.encode()) for y in x.top_logprobs)
    plain = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=3, temperature=0, logprobs=True)
    assert all(x.top_logprobs == [] for x in plain.choices[0].logprobs.content)
    assert c.chat.completions.create(model=MODEL, messages=messages, max_tokens=2).choices[0].logprobs is None
    for extra, param in [({"top_logprobs": 2}, "top_logprobs"), ({"logprobs": True, "top_logprobs": 21},
                                                                  "top_logprobs"),
                         ({"logprobs": True, "top_logprobs": -1}, "top_logprobs")]:
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, extra_body=extra)
        assert e.value.body["param"] == param, extra
    for extra, param in [({"logprobs": -1}, "logprobs"), ({"logprobs": 21}, "logprobs"),
                         ({"max_tokens": 0}, "max_tokens")]:
        with pytest.raises(openai.BadRequestError) as e:
            c.completions.create(model=MODEL, prompt="x", **{"max_tokens": 2, **extra})
        assert e.value.body["param"] == param, extra


def test_too_long_prompt_is_a_400_and_not_retried(server):
    c = client(server, max_retries=3)
    prompt = "x = 1\n" * 400  # > 1024 tokens
    with pytest.raises(openai.BadRequestError, match="maximum context length is 1024 tokens"):
        c.completions.create(model=MODEL, prompt=prompt, max_tokens=4)
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 4}
    seen = [x for x in log_lines(server) if x["request_hash"] == request_hash(body)]
    assert [x["status"] for x in seen] == [400]  # one arrival: the SDK did not retry


def test_queue_limit_disconnects_api_key_and_sigterm(tmp_path):
    """--max-queue 1: while one long stream runs (4000 tokens: seconds even on a fast machine), another request
    gets 429 (with Retry-After); the stream's client leaves, the server stops generating for it (logged 499) and
    answers the next request. A request that could never fit (n > --max-queue) is a 400. --api-key gives 401s.
    SIGTERM stops the server gracefully (exit 0)."""
    log = tmp_path / "log.jsonl"
    write_tiny_checkpoint(str(tmp_path / "ckpt"), seed=1, max_seq_len=4096)
    auth = {"Authorization": "Bearer sekret"}
    with ServerProcess(tmp_path / "ckpt", "--served-model-name", MODEL, "--max-queue", "1", "--batch-wait-ms", "0",
                       "--request-log", log, "--threads", "1", "--api-key", "sekret") as srv:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0).models.list()
        c = openai.OpenAI(base_url=srv.base_url, api_key="sekret", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="--max-queue 1"):
            c.completions.create(model=MODEL, prompt="x", max_tokens=2, n=2)
        long_body = {"model": MODEL, "prompt": "def f():", "max_tokens": 4000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", srv.base_url + "/completions", json=long_body, timeout=60, headers=auth) as stream:
            lines = stream.iter_lines()  # (kept referenced: closing this iterator closes the connection)
            assert next(lines).startswith("data: ")
            r = httpx.post(srv.base_url + "/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2},
                           timeout=30, headers=auth)
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "queue_full"
        # the stream's client went away: the server frees the slot (poll; no timing asserted)
        deadline, answer = time.time() + 60, None
        while answer is None and time.time() < deadline:
            try:
                answer = c.completions.create(model=MODEL, prompt="x", max_tokens=2)
            except openai.RateLimitError:
                time.sleep(0.1)
        assert answer is not None and answer.usage.completion_tokens == 2
        # a non-streaming client that times out is cancelled too
        with pytest.raises(httpx.TimeoutException):
            httpx.post(srv.base_url + "/completions", timeout=0.5, headers=auth,
                       json={"model": MODEL, "prompt": "y", "max_tokens": 4000, "ignore_eos": True})
        deadline = time.time() + 60
        while time.time() < deadline:
            statuses = [x["status"] for x in map(json.loads, log.read_text().splitlines())]
            if statuses.count(499) == 2:
                break
            time.sleep(0.1)
        port = srv.port
        taken = subprocess.run([sys.executable, "-m", "megasnow.serve", str(tmp_path / "ckpt"), "--port", str(port)],
                               capture_output=True, text=True, timeout=120)
        assert taken.returncode == 2 and taken.stderr.strip().splitlines()[-1].startswith(
            f"error: --port {port}: already in use on 127.0.0.1")
        assert srv.stop(signal.SIGTERM) == 0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    by_status = {}
    for x in lines:
        by_status.setdefault(x["status"], []).append(x)
    assert len(by_status[499]) == 2  # the abandoned stream and the abandoned plain request
    assert all(x.get("completion_tokens") is None for x in by_status[499])
    assert len(by_status[200]) == 1 and len(by_status[400]) == 1
    assert len(by_status[429]) >= 1  # (the polling above may meet the queue full once more)


@pytest.mark.parametrize("sig,endpoint", [(signal.SIGINT, "completions"), (signal.SIGTERM, "chat/completions")],
                         ids=["SIGINT", "SIGTERM"])
def test_shutdown_ends_running_requests_gracefully(tmp_path, sig, endpoint):
    """SIGINT/SIGTERM while a long stream runs and another request waits: the stream gets its final chunk
    (finish_reason "abort") and `data: [DONE]`, the waiting request a 503, and the server exits (130 / 0) with its
    summary and one line, well within uvicorn's graceful timeout: no traceback, no "ERROR:" line."""
    log = tmp_path / "log.jsonl"
    write_tiny_checkpoint(str(tmp_path / "ckpt"), seed=1, max_seq_len=4096)
    srv = ServerProcess(tmp_path / "ckpt", "--served-model-name", MODEL, "--batch-wait-ms", "0", "--threads", "1",
                        "--request-log", log).start()
    try:
        body = {"model": MODEL, "max_tokens": 4000, "ignore_eos": True, "stream": True}
        body.update({"prompt": "def f():"} if endpoint == "completions" else
                    {"messages": [{"role": "user", "content": "hi"}]})
        waiting = {}

        def plain():
            waiting["r"] = httpx.post(srv.base_url + "/completions", timeout=60,
                                      json={"model": MODEL, "prompt": "x", "max_tokens": 8})

        with httpx.stream("POST", f"{srv.base_url}/{endpoint}", json=body, timeout=60) as stream:
            lines = (line for line in stream.iter_lines() if line)
            first = [next(lines), next(lines)]  # the batch runs
            thread = threading.Thread(target=plain)
            thread.start()
            deadline = time.time() + 60  # the plain request waits for the next batch (poll; nothing timed)
            while httpx.get(srv.base_url[:-3] + "/health", timeout=30).json()["unfinished_sequences"] < 2:
                assert time.time() < deadline
                time.sleep(0.05)
            srv.proc.send_signal(sig)
            rest = list(lines)
        thread.join(60)
        srv.proc.wait(30)  # one signal only: a second SIGINT would force the exit
    finally:
        rc = srv.stop(signal.SIGKILL)
    assert rest[-1] == "data: [DONE]"
    chunks = [json.loads(x[len("data: "):]) for x in first + rest[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["abort"]
    r = waiting["r"]
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "server_shutting_down" and r.json()["error"]["type"] == "server_error"
    assert rc == (130 if sig == signal.SIGINT else 0)
    bad = [x for x in srv.stderr_lines if "Traceback" in x or "Exception in ASGI" in x or x.startswith("ERROR")]
    assert bad == [], srv.stderr_lines
    stop_line = srv.stderr_lines[-2 if sig == signal.SIGINT else -1]
    assert re.fullmatch(r"megasnow\.serve: stopped after 2 requests \((\d+) sequences? in (\d+) batch(es)?, "
                        r"largest \d+\)", stop_line), stop_line
    assert not re.search(r"\b1 (sequences|batches)\b|\b(0|[2-9]|\d\d+) (sequence|batch)\b", stop_line), stop_line
    if sig == signal.SIGINT:
        assert srv.stderr_lines[-1] == "megasnow.serve: interrupted (Ctrl-C); server stopped"
    records = sorted((x["status"], x["finish_reasons"] if x["status"] == 200 else x["error"])
                     for x in map(json.loads, log.read_text().splitlines()))
    assert records == [(200, ["abort"]), (503, r.json()["error"]["message"])]


def test_cli_errors(tmp_path):
    for args, message in [([str(tmp_path / "missing")], "does not exist"),
                          ([str(tmp_path), "--fault-kinds", "500,boom"], "--fault-kinds: unknown kind 'boom'"),
                          ([str(tmp_path), "--max-num-seqs", "0"], "--max-num-seqs must be >= 1"),
                          # file flags are checked before the model loads: one line, no "loading" line first
                          ([str(tmp_path), "--chat-template", str(tmp_path / "nosuch.jinja")],
                           f"--chat-template {tmp_path / 'nosuch.jinja'}: no such file"),
                          ([str(tmp_path), "--tokenizer", str(tmp_path / "tok.json")],
                           f"--tokenizer {tmp_path / 'tok.json'}: no such file or folder"),
                          ([str(tmp_path), "--request-log", str(tmp_path / "no" / "log.jsonl")],
                           f"--request-log {tmp_path / 'no' / 'log.jsonl'}: no folder {tmp_path / 'no'}"),
                          # resolve_device, before the model loads
                          ([str(tmp_path), "--device", "gpu"], "--device 'gpu' is not a torch device"),
                          *([] if torch.cuda.is_available() else
                            [([str(tmp_path), "--device", "cuda"],
                              "--device is cuda but this machine has no CUDA device")])]:
        res = subprocess.run([sys.executable, "-m", "megasnow.serve", *args, "--port", "0"], capture_output=True,
                             text=True, timeout=120)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    from megasnow.generation import local
    from megasnow.serve import cli_args

    assert (cli_args.DEFAULT_MAX_NUM_SEQS, cli_args.DEFAULT_MAX_BATCH_TOKENS) == \
        (local.DEFAULT_MAX_NUM_SEQS, local.DEFAULT_MAX_BATCH_TOKENS)
