"""The interface every generation backend implements; drivers depend on this and nothing else."""
import abc


class GenerationBackend(abc.ABC):
    """Turns GenerationRequests into GenerationResults.

    `generate(requests)` yields exactly one result per request, in completion order (match them by
    `result.request_id`); a request that fails yields a result with `error` set rather than raising, so one bad
    prompt never loses the batch. Errors that make every request fail (an unreachable URL after its retries, a
    401, a missing model file) raise a UserError instead, naming the URL or file. Backends are context managers.
    """

    #: provenance: which model answered (a served model id, an HF folder, a checkpoint path)
    model_name: str = ""

    @abc.abstractmethod
    def generate(self, requests):
        """Yield one GenerationResult per GenerationRequest in `requests` (any order)."""

    def check(self, request):
        """The error message of a request this backend can tell, without generating, that it cannot run (a prompt
        plus max_tokens longer than a local model's context), else None. Remote backends cannot tell: None."""
        return None

    def start(self):
        """Connect and check before any request: resolve the served model name, check URLs and keys, load an
        engine. Raises a UserError naming the URL or file. Idempotent; `generate` calls it if needed."""

    def close(self):
        """Release connections, processes or GPU memory."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
