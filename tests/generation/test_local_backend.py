"""LocalEngine / LocalBackend: results equal the KV-cache generator's, chat requests use the model's template (as
transformers renders it), EOS ids come from the tokenizer files, seeds are per request, batches are planned by
length and budget, bad requests come back as errors, and a HF export serves the same text."""
import pytest

from megasnow.generation.local import BadRequestError, LocalBackend, LocalEngine
from megasnow.generation.protocol import GenerationRequest, SamplingParams
from megasnow.generation.tiny_model import IM_END, write_tiny_checkpoint
from megasnow.model.generate import SequenceSpec, generate_sequences
from megasnow.train import checkpoint as ckpt


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    write_tiny_checkpoint(str(out), seed=3)
    return str(out)


@pytest.fixture(scope="module")
def engine(tiny):
    return LocalEngine.from_path(tiny, max_num_seqs=4)


def req(i, prompt=None, messages=None, **params):
    return GenerationRequest(id=str(i), prompt=prompt, messages=messages, params=SamplingParams(**params))


def direct(engine, text, **spec):
    ids = engine.tokenizer.encode(text)
    return generate_sequences(engine.model, [SequenceSpec(ids, stop_ids=engine.eos_ids, **spec)], engine.tokenizer)[0]


def test_results_equal_the_generator_whatever_the_batch(engine):
    prompts = ["def add(a, b):\n    return", "import os\n", "class A:\n    def __init__(self):\n        self.x ="]
    requests = [req(i, p, max_tokens=6 + 3 * i) for i, p in enumerate(prompts)]
    requests.append(req("s", prompts[0], max_tokens=10, temperature=0.9, top_p=0.9, seed=11, n=2))
    free = direct(engine, prompts[1], max_new_tokens=12).text
    stop_string = free[4:6]
    requests.append(req("stop", prompts[1], max_tokens=12, stop=[stop_string]))
    results = {r.request_id: r for r in LocalBackend(engine).generate(requests)}
    assert set(results) == {"0", "1", "2", "s", "stop"}
    for i, p in enumerate(prompts):
        r, q = results[str(i)], direct(engine, p, max_new_tokens=6 + 3 * i)
        assert r.ok and [(c.text, c.finish_reason) for c in r.choices] == [(q.text, q.finish_reason)]
        assert (r.prompt_tokens, r.completion_tokens) == (len(engine.tokenizer.encode(p)), q.num_generated)
        assert r.model == engine.model_name and r.system_fingerprint.startswith("megasnow-")
    # n=2: choice j samples with seed + j, the same as asking alone with that seed
    s = results["s"]
    for j, choice in enumerate(s.choices):
        assert choice.text == direct(engine, prompts[0], max_new_tokens=10, temperature=0.9, top_p=0.9,
                                     seed=11 + j).text
    assert s.choices[0].text != s.choices[1].text
    alone = next(LocalBackend(engine).generate([requests[3]]))
    assert [c.text for c in alone.choices] == [c.text for c in s.choices]
    stop = results["stop"].choices[0]
    assert (stop.text, stop.finish_reason) == (free[:free.index(stop_string)], "stop")


def test_chat_uses_the_models_template_like_transformers(engine, tiny):
    from transformers import AutoTokenizer

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write add(a, b)."}]
    hf_tok = AutoTokenizer.from_pretrained(ckpt.resolve_checkpoint(tiny))
    expected = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    request = req("c", messages=messages, max_tokens=8)
    assert engine.prompt_text(request) == expected
    assert expected.endswith("<|im_start|>assistant\n")
    prepared = engine.prepare(request)
    assert list(prepared.prompt_ids) == engine.tokenizer.encode(expected)
    assert engine.tokenizer.token_to_id(IM_END) in engine.eos_ids  # the template's turn end stops generation
    result = next(LocalBackend(engine).generate([request]))
    assert result.choices[0].text == direct(engine, expected, max_new_tokens=8).text


def test_bad_requests_come_back_as_errors(engine):
    too_long = req("long", "x " * engine.max_model_len, max_tokens=4)
    with pytest.raises(BadRequestError, match="maximum context length is 1024 tokens"):
        engine.prepare(too_long)
    fits = req("ok", "x = 1", max_tokens=engine.max_model_len - len(engine.tokenizer.encode("x = 1")))
    assert engine.prepare(fits).specs[0].max_new_tokens == fits.params.max_tokens
    results = list(LocalBackend(engine).generate([too_long, req("fine", "y =", max_tokens=3)]))
    assert [(r.request_id, r.error_kind) for r in results] == [("long", "bad_request"), ("fine", None)]
    assert "Please reduce the length" in results[0].error


def test_fill_in_the_middle_prompt_format(engine):
    # the tiny tokenizer has megasnow's FIM tokens: StarCoder's prefix-suffix-middle order
    text = engine.prompt_text(GenerationRequest(id="f", prompt="def f(", suffix="    return y\n"))
    assert text == "<fim_prefix>def f(<fim_suffix>    return y\n<fim_middle>"


def test_batches_are_sorted_by_length_within_count_and_token_budget(engine):
    specs = [SequenceSpec(tuple(range(1, n + 1)), m) for n, m in [(9, 4), (2, 4), (5, 4), (1, 4), (7, 4), (3, 4)]]
    assert engine.plan_batches(specs) == [[3, 1, 5, 2], [4, 0]]  # max_num_seqs 4, shortest first
    small = LocalEngine(engine.model, engine.files, max_num_seqs=8, max_batch_tokens=30)
    # rows x (longest prompt + budget) <= 30: 3 x (3 + 4), 2 x (7 + 4), 1 x (9 + 4)
    assert small.plan_batches(specs) == [[3, 1, 5], [2, 4], [0]]


def test_hf_export_serves_the_same_text(engine, tiny, tmp_path):
    from megasnow.convert.hf_llama import export_to_hf

    export_to_hf(tiny, str(tmp_path / "hf"))
    hf = LocalEngine.from_path(str(tmp_path / "hf"))
    assert hf.eos_ids == engine.eos_ids and hf.files.chat_template == engine.files.chat_template
    requests = [req(0, "def main():\n", max_tokens=9), req(1, messages=[{"role": "user", "content": "hi"}])]
    ours = [[c.text for c in r.choices] for r in LocalBackend(engine).generate(requests)]
    theirs = [[c.text for c in r.choices] for r in LocalBackend(hf).generate(requests)]
    assert ours == theirs


def test_a_failed_batch_fails_only_its_requests(engine, monkeypatch):
    calls = []
    real = LocalEngine.run_batch

    def flaky(self, specs):
        calls.append(len(specs))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        yield from real(self, specs)

    monkeypatch.setattr(LocalEngine, "run_batch", flaky)
    small = LocalEngine(engine.model, engine.files, model_name="tiny", max_num_seqs=1)
    requests = [req(i, "x" * (i + 1), max_tokens=2) for i in range(3)]
    results = {r.request_id: r for r in LocalBackend(small).generate(requests)}
    assert results["0"].error == "generation failed: RuntimeError: out of memory"
    assert results["0"].error_kind == "unavailable"
    assert results["1"].ok and results["2"].ok and calls == [1, 1, 1]


def test_logprobs_and_echo_through_the_backend(engine):
    """SamplingParams.logprobs / echo: each Choice carries the generator's records in the OpenAI completions shape
    (echoed prompt tokens first, the first with logprob None), its text starts with the prompt, max_tokens 0 with
    echo scores the prompt alone; bad values are ValueErrors naming the field, echo with messages a bad request."""
    prompt = "def add(a, b):\n    return"
    ids = engine.tokenizer.encode(prompt)
    requests = [req("lp", prompt, max_tokens=5, logprobs=2), req("echo", prompt, max_tokens=5, logprobs=1, echo=True),
                req("score", prompt, max_tokens=0, logprobs=0, echo=True), req("plain", prompt, max_tokens=5),
                req("chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2, echo=True)]
    results = {r.request_id: r for r in LocalBackend(engine).generate(requests)}
    q = generate_sequences(engine.model, [SequenceSpec(ids, 5, stop_ids=engine.eos_ids, logprobs=2,
                                                       prompt_logprobs=1)], engine.tokenizer)[0]
    lp = results["lp"].choices[0].logprobs
    assert results["lp"].choices[0].text == q.text == "".join(lp["tokens"])
    assert lp["token_logprobs"] == pytest.approx([r.logprob for r in q.logprobs], abs=1e-5)
    assert lp["text_offset"] == [sum(len(r.text) for r in q.logprobs[:k]) for k in range(len(q.logprobs))]
    echo = results["echo"].choices[0]
    assert echo.text == prompt + q.text and echo.logprobs["token_logprobs"][0] is None
    assert echo.logprobs["token_logprobs"][1:] == pytest.approx(
        [r.logprob for r in q.prompt_logprobs[1:] + q.logprobs], abs=1e-5)
    assert "".join(echo.logprobs["tokens"]) == echo.text
    score = results["score"]
    assert score.choices[0].text == prompt and score.completion_tokens == 0
    assert score.choices[0].logprobs["token_logprobs"] == echo.logprobs["token_logprobs"][:len(ids)]
    assert results["plain"].choices[0].logprobs is None
    assert results["chat"].error_kind == "bad_request" and "echo" in results["chat"].error
    for kw, message in [({"logprobs": 21}, "logprobs must be in [0, 20], got 21"),
                        ({"logprobs": -1}, "logprobs must be in [0, 20]"),
                        ({"max_tokens": 0}, "max_tokens must be >= 1, got 0")]:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            SamplingParams(**kw)
