"""OpenAIBackend against real sockets on 127.0.0.1: unreachable URLs fail after bounded retries, naming the URL."""
import socket

import pytest

from megasnow.generation.openai_backend import EndpointError, OpenAIBackend


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_fails_after_bounded_retries_naming_it():
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend([url], max_retries=2, backoff_initial=0.01, backoff_max=0.05, timeout=5)
    with pytest.raises(EndpointError, match=rf"{url}: unreachable after 3 attempt\(s\)"):
        backend.start()
    backend.close()
