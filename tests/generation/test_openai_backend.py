"""OpenAIBackend against real sockets on 127.0.0.1: unreachable URLs fail after bounded retries, naming the URL, and
say so at the first retry."""
import http.server
import socket
import threading

import pytest

from megasnow.generation.openai_backend import EndpointError, OpenAIBackend, request_body
from megasnow.generation.protocol import GenerationRequest, SamplingParams


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_fails_after_bounded_retries_naming_it(capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend([url], max_retries=2, backoff_initial=0.01, backoff_max=0.05, timeout=5)
    with pytest.raises(EndpointError, match=rf"{url}: unreachable after 3 attempt\(s\)"):
        backend.start()
    backend.close()
    # the first retry says what is happening (once per backend, not per attempt): the run is not silent
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {url}: connection failed (APIConnectionError); retrying up to 3 attempts with backoff "
        f"(backend.max_retries = 2)"]


def test_long_retries_are_never_silent(capsys):
    """Later retries (and long backoff waits) print a line at most every notice_interval_s (here 0, so each retry
    does; the default is 15 s)."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend([url], max_retries=3, backoff_initial=0.05, backoff_max=0.05, timeout=5)
    backend.notice_interval_s = 0.0
    with pytest.raises(EndpointError, match=rf"{url}: unreachable after 4 attempt\(s\)"):
        backend.start()
    backend.close()
    still = f"warning: {url}: still failing, connection failed (APIConnectionError) at attempt {{}} of 4; next " \
            f"attempt in 0 s"
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {url}: connection failed (APIConnectionError); retrying up to 4 attempts with backoff "
        f"(backend.max_retries = 3)", still.format(2), still.format(3)]


class NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_a_404_on_models_says_so():
    """Something answers at the URL, but not the OpenAI API (e.g. the /v1 suffix is missing): the error says it
    was a 404 and what to check, instead of "lists no model"."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        backend = OpenAIBackend([url], max_retries=1, backoff_initial=0.01, timeout=10)
        with pytest.raises(EndpointError) as e:
            backend.start()
        backend.close()
        assert str(e.value) == (f"{url}: GET {url}/models answered HTTP 404 (not found): is this an OpenAI-compatible "
                                f"server at that path? Check the URL (it usually ends in /v1); for a server without "
                                f"/models, set backend.model")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_messages_name_the_callers_settings(capsys):
    """A tool passes its own names for the settings (evaluate.py's flags): the retry warning and the start-up errors
    name them, not the synthesis config's backend.* keys."""
    names = {"model": "--model", "max_retries": "--max-retries"}
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend([url], max_retries=1, backoff_initial=0.01, backoff_max=0.02, timeout=5,
                            setting_names=names)
    with pytest.raises(EndpointError):
        backend.start()
    backend.close()
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {url}: connection failed (APIConnectionError); retrying up to 2 attempts with backoff "
        f"(--max-retries = 1)"]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        backend = OpenAIBackend([url], max_retries=0, timeout=10, setting_names=names)
        with pytest.raises(EndpointError, match=r"for a server without /models, set --model$"):
            backend.start()
        backend.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_request_body_sends_vllm_extensions_only_when_they_change_something():
    """A plain OpenAI endpoint refuses unknown fields, so vLLM's extensions are sent only when set."""
    plain = request_body(GenerationRequest("a", prompt="x", params=SamplingParams(max_tokens=4)), "m")
    assert plain == {"model": "m", "max_tokens": 4, "temperature": 0.0, "top_p": 1.0, "n": 1, "prompt": "x"}
    assert request_body(GenerationRequest("a", prompt="x", params=SamplingParams(top_k=-1)), "m") == \
        {**plain, "max_tokens": 256}
    extended = request_body(GenerationRequest("a", messages=[{"role": "user", "content": "hi"}], params=SamplingParams(
        max_tokens=4, temperature=0.8, top_k=40, min_p=0.05, min_tokens=2, seed=7)), "m")
    assert extended == {"model": "m", "max_tokens": 4, "temperature": 0.8, "top_p": 1.0, "n": 1, "seed": 7,
                        "min_tokens": 2, "top_k": 40, "min_p": 0.05,
                        "messages": [{"role": "user", "content": "hi"}]}


def test_logprobs_and_echo_are_sent_and_read_back():
    """logprobs / echo go out under OpenAI's names (chat: logprobs true + top_logprobs); a response's logprobs come
    back in Choice.logprobs' completions shape (a chat choice's content converted)."""
    import openai

    from megasnow.generation.openai_backend import choice_logprobs

    completion = request_body(GenerationRequest("a", prompt="x", params=SamplingParams(max_tokens=1, logprobs=1,
                                                                                       echo=True)), "m")
    assert (completion["logprobs"], completion["echo"]) == (1, True)
    chat = request_body(GenerationRequest("a", messages=[{"role": "user", "content": "hi"}],
                                          params=SamplingParams(logprobs=3)), "m")
    assert (chat["logprobs"], chat["top_logprobs"]) == (True, 3) and "echo" not in chat
    lp = {"tokens": ["a", "b"], "token_logprobs": [-1.5, -0.5], "top_logprobs": [{"a": -1.5}, {"b": -0.5}],
          "text_offset": [0, 1]}
    c = openai.types.Completion.model_validate({"id": "x", "object": "text_completion", "created": 0, "model": "m",
                                                "choices": [{"index": 0, "text": "ab", "finish_reason": "length",
                                                             "logprobs": lp}]})
    assert choice_logprobs(c.choices[0], chat=False) == lp
    top = [{"token": "é", "logprob": -0.1, "bytes": [195, 169]}, {"token": "e", "logprob": -2.5, "bytes": [101]}]
    r = openai.types.chat.ChatCompletion.model_validate(
        {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
         "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "xé"},
                      "logprobs": {"content": [{"token": "x", "logprob": -1.0, "bytes": [120], "top_logprobs": []},
                                               {**top[0], "top_logprobs": top}]}}]})
    assert choice_logprobs(r.choices[0], chat=True) == {
        "tokens": ["x", "é"], "token_logprobs": [-1.0, -0.1], "top_logprobs": [{}, {"é": -0.1, "e": -2.5}],
        "text_offset": [0, 1]}


def test_default_retry_waits_total_at_most_63_seconds(monkeypatch):
    """docs/evaluation.md's bound for an unreachable server: before retry r tenacity waits uniform(0, min(60,
    2**(r-1))) s, so the default 6 retries wait 0..63 s in all (31.5 s on average)."""
    import random
    from types import SimpleNamespace

    backend = OpenAIBackend(["http://127.0.0.1:1/v1"])
    wait = backend._retrying(lambda: "u").wait
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the longest wait each time
    highs = [wait(SimpleNamespace(attempt_number=n)) for n in range(1, backend.max_retries + 1)]
    assert highs == [1, 2, 4, 8, 16, 32] and sum(highs) == 63
    monkeypatch.setattr(random, "uniform", lambda low, high: (low + high) / 2)
    assert sum(wait(SimpleNamespace(attempt_number=n)) for n in range(1, 7)) == 31.5
