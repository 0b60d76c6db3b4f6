"""build_backend: kinds, config errors as UserErrors, and the OpenAI backend's error classes."""
import httpx2
import openai
import pytest
import torch

from megasnow.config import from_dict
from megasnow.errors import UserError
from megasnow.generation.factory import BackendConfig, build_backend, build_backend_from_config
from megasnow.generation.openai_backend import OpenAIBackend, describe_error, error_kind, is_retryable


def test_openai_backend_from_kwargs_and_config():
    b = build_backend("openai", base_urls=["http://127.0.0.1:1/v1/", "http://127.0.0.1:2/v1"], concurrency=3,
                      timeout=5, max_retries=1)
    assert isinstance(b, OpenAIBackend) and b.base_urls == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    assert (b.concurrency, b.timeout, b.max_retries) == (3, 5.0, 1)
    cfg = from_dict(BackendConfig, {"kind": "openai", "model": "m", "concurrency": 8})
    assert build_backend_from_config(cfg).model_name == "m"


@pytest.mark.parametrize("kwargs,match", [
    ({"kind": "nope"}, "backend.kind must be one of"),
    ({"kind": "openai", "colour": 1}, "unexpected keyword"),
    ({"kind": "openai", "base_urls": []}, "base_urls is empty"),
    ({"kind": "openai", "concurrency": 0}, "concurrency"),
    ({"kind": "local"}, "backend.model is empty"),
])
def test_bad_settings_are_user_errors(kwargs, match):
    kind = kwargs.pop("kind")
    with pytest.raises(UserError, match=match):
        build_backend(kind, **kwargs)


@pytest.mark.parametrize("device,match", [
    ("gpu", "backend.device 'gpu' is not a torch device"),
    pytest.param("cuda", "backend.device is cuda but this machine has no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")),
])
def test_local_backend_device_is_resolved_naming_the_key(device, match):
    with pytest.raises(UserError, match=match):  # before any model load: the model folder need not exist
        build_backend("local", model="no/such/model", device=device)


def status_error(code):
    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/completions")
    cls = {400: openai.BadRequestError, 401: openai.AuthenticationError, 404: openai.NotFoundError,
           429: openai.RateLimitError}.get(code, openai.InternalServerError)
    return cls("x", response=httpx2.Response(code, request=request), body=None)


@pytest.mark.parametrize("code,retry,kind", [(400, False, "bad_request"), (404, False, "bad_request"),
                                             (422, False, "bad_request"), (401, False, "auth"),
                                             (429, True, "unavailable"), (500, True, "unavailable"),
                                             (503, True, "unavailable")])
def test_only_429_5xx_timeouts_and_connection_errors_are_retried(code, retry, kind):
    e = status_error(code)
    assert (is_retryable(e), error_kind(e)) == (retry, kind)


def test_timeouts_and_connection_errors_are_retried():
    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/completions")
    assert is_retryable(openai.APITimeoutError(request)) and error_kind(openai.APITimeoutError(request)) == "timeout"
    conn = openai.APIConnectionError(request=request)
    assert is_retryable(conn) and error_kind(conn) == "unavailable"


def test_describe_error_gives_the_server_message_once():
    """The SDK's text starts "Error code: 400 - " (and older SDKs add the whole body): the status is said once and
    the server's message once."""
    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/completions")
    message = "This model's maximum context length is 1024 tokens. However, you requested 9001 tokens."
    with_body = openai.BadRequestError(f"Error code: 400 - {{'error': {{'message': {message!r}}}}}",
                                       response=httpx2.Response(400, request=request),
                                       body={"message": message, "type": "invalid_request_error"})
    assert describe_error(with_body) == f"HTTP 400: {message}"
    no_body = openai.InternalServerError("Error code: 502 - bad gateway",
                                         response=httpx2.Response(502, request=request), body=None)
    assert describe_error(no_body) == "HTTP 502: bad gateway"
    assert describe_error(openai.APIConnectionError(request=request)) == "APIConnectionError: Connection error."
