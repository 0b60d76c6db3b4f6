"""The vLLM offline backend without vLLM: what can be checked here is the translation to and from vLLM's
documented types, the batching and the import guard. The engine itself runs only where vLLM is installed."""
from types import SimpleNamespace

import pytest

from megasnow.errors import UserError
from megasnow.generation.factory import build_backend
from megasnow.generation.protocol import GenerationRequest, SamplingParams
from megasnow.generation.vllm_backend import batches, prompt_input, sampling_kwargs, to_result, vllm_available


def test_sampling_kwargs_follow_openai_semantics():
    p = SamplingParams(max_tokens=64, temperature=0.7, top_p=0.9, stop=("\n\n", "```"), seed=5, n=2)
    assert sampling_kwargs(p) == {"n": 2, "max_tokens": 64, "temperature": 0.7, "top_p": 0.9,
                                  "stop": ["\n\n", "```"], "include_stop_str_in_output": False, "seed": 5}
    assert "seed" not in sampling_kwargs(SamplingParams())
    # vLLM's own extensions pass through when set; -1 (vLLM's old "all tokens") is the same as unset
    assert sampling_kwargs(SamplingParams(top_k=40, min_p=0.05, min_tokens=3)).items() >= \
        {"top_k": 40, "min_p": 0.05, "min_tokens": 3}.items()
    assert "top_k" not in sampling_kwargs(SamplingParams(top_k=-1)) and "min_p" not in sampling_kwargs(SamplingParams())
    for p in (SamplingParams(logprobs=1), SamplingParams(echo=True)):  # not translated: refused, never dropped
        with pytest.raises(UserError, match="does not return logprobs"):
            sampling_kwargs(p)


def test_request_output_becomes_a_generation_result():
    # the fields of vllm.outputs.RequestOutput / CompletionOutput that the backend reads
    out = SimpleNamespace(prompt_token_ids=[1, 2, 3], outputs=[
        SimpleNamespace(index=1, text="b", token_ids=[7], finish_reason="length"),
        SimpleNamespace(index=0, text="a", token_ids=[5, 6], finish_reason="stop")])
    r = to_result("req-1", out, "m")
    assert (r.request_id, r.model, r.prompt_tokens, r.completion_tokens, r.ok) == ("req-1", "m", 3, 3, True)
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in r.choices] == [("a", "stop", 2),
                                                                                   ("b", "length", 1)]


def test_chat_requests_are_rendered_by_the_model_template_once():
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "<s>": 1, "user": 2, "hi": 3, ":": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="[UNK]")
    hf.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    chat = GenerationRequest(id="c", messages=[{"role": "user", "content": "hi"}])
    assert prompt_input(chat, hf) == {"prompt_token_ids": [1, 2, 4, 3]}
    assert prompt_input(GenerationRequest(id="p", prompt="def f("), hf) == "def f("
    with pytest.raises(UserError, match="fill-in-the-middle"):
        prompt_input(GenerationRequest(id="s", prompt="a", suffix="b"), hf)


def test_batches():
    assert list(batches(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batches([], 3)) == []


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
def test_missing_vllm_is_a_user_error_saying_what_to_do():
    with pytest.raises(UserError, match="pip install vllm.*backend.kind=openai"):
        build_backend("vllm", model="/models/any")
