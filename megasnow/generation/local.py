"""Generation with a local megasnow or HF Llama model: the engine that synthesis, evaluation and megasnow.serve
share (one implementation), and LocalBackend, the GenerationBackend over it.

LocalEngine turns a GenerationRequest into token ids (chat template for `messages`, fill-in-the-middle for
`suffix` in the format the model was trained with: megasnow.data.fim), checks it against the context length, and
runs batches of sequences with megasnow.model.generate's KV-cache generator. LocalBackend sorts requests by prompt length and runs them in batches of at most
`max_num_seqs` sequences and `max_batch_tokens` cache positions.
"""
import os
import threading
from dataclasses import dataclass

from megasnow.data.fim import FORMATS as FIM_FORMATS
from megasnow.data.fim import fim_prompt_ids
from megasnow.generation.base import GenerationBackend
from megasnow.generation.chat_template import ChatTemplateError, render_chat
from megasnow.generation.logprobs import completion_logprobs
from megasnow.generation.protocol import Choice, GenerationRequest, GenerationResult
from megasnow.model.generate import SequenceSpec, generate_stream

DEFAULT_MAX_NUM_SEQS = 32
DEFAULT_MAX_BATCH_TOKENS = 65536


class BadRequestError(ValueError):
    """A request this model cannot run as given (prompt too long, bad token id, no chat template): an HTTP 400,
    never worth retrying. The message says what to change; `param` names the request field at fault (None: the
    prompt)."""

    def __init__(self, message, param=None):
        super().__init__(message)
        self.param = param


@dataclass
class PreparedRequest:
    """A request ready for the engine: its prompt token ids, one SequenceSpec per choice (n of them) and, with
    echo, the prompt text each choice's text starts with."""

    request: object  # GenerationRequest
    prompt_ids: tuple
    specs: list
    echo_text: str = ""


class LocalEngine:
    """A model, its tokenizer files and the batch runner; thread-safe (one batch runs at a time).

    model: a megasnow LlamaModel in eval mode; files: model_files.TokenizerFiles; model_name: the served id;
    fingerprint: recorded as `system_fingerprint`; max_num_seqs: sequences per batch; max_batch_tokens: cap on
    batch rows x (longest prompt + largest max_tokens), i.e. KV-cache positions, so long requests run in smaller
    batches; fim_format: 'psm' or 'spm', how a request with `suffix` is laid out (megasnow.data.fim.fim_prompt_ids);
    fim_trained: model_files.TrainedFim or None (nothing recorded): a model recorded as trained without FIM refuses
    `suffix` requests.
    """

    def __init__(self, model, files, model_name="", fingerprint=None, max_num_seqs=DEFAULT_MAX_NUM_SEQS,
                 max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS, fim_format="psm", fim_trained=None):
        if max_num_seqs < 1 or max_batch_tokens < 1:
            raise ValueError("max_num_seqs and max_batch_tokens must be >= 1")
        if fim_format not in FIM_FORMATS:
            raise ValueError(f"fim_format must be one of {FIM_FORMATS}, got {fim_format!r}")
        self.fim_format, self.fim_trained = fim_format, fim_trained
        self.model, self.files = model, files
        self.tokenizer = files.tokenizer
        self.model_name, self.fingerprint = model_name, fingerprint
        self.max_num_seqs, self.max_batch_tokens = max_num_seqs, max_batch_tokens
        self.max_model_len = model.cfg.max_seq_len
        self.eos_ids = frozenset(files.eos_ids)
        self.pad_id = min(files.eos_ids) if files.eos_ids else 0
        self._lock = threading.Lock()

    @classmethod
    def from_path(cls, path, *, device="cpu", dtype=None, tokenizer=None, chat_template=None, model_name=None,
                  max_num_seqs=DEFAULT_MAX_NUM_SEQS, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS, fim_format=None):
        """An engine for a megasnow checkpoint (run folder or step folder) or a HF Llama folder.

        tokenizer / chat_template override the folder's own files (model_files.read_tokenizer_files); dtype is a
        torch dtype (default float32 on CPU, bfloat16 on CUDA); model_name defaults to the folder's name;
        fim_format None: the checkpoint's trained format (model_files.trained_fim_format: 'spm' only for a model
        trained with data.fim.spm_rate 1, else 'psm'). Raises ModelLoadError / CheckpointError / TokenizerError
        (UserErrors) naming the path.
        """
        from megasnow.generation.model_files import load_model, read_tokenizer_files, trained_fim

        model, folder, fingerprint = load_model(path, device=device, dtype=dtype)
        files = read_tokenizer_files(folder, tokenizer, chat_template)
        fim_trained = trained_fim(folder)
        fim_format = fim_format or fim_trained.format
        if model_name is None:
            norm = os.path.normpath(os.path.abspath(path))
            model_name = os.path.basename(norm)
            if model_name.startswith("step_"):
                model_name = os.path.basename(os.path.dirname(norm))
        return cls(model, files, model_name, fingerprint, max_num_seqs, max_batch_tokens, fim_format, fim_trained)

    def warm_up(self):
        """Run one short generation (and load the chat-template renderer), so the first request is not slow."""
        if self.files.chat_template:
            try:
                self.prompt_text(GenerationRequest(id="warm-up", messages=[{"role": "user", "content": "hi"}]))
            except BadRequestError:
                pass
        spec = SequenceSpec(tuple(self.encode("def") or [self.pad_id]), 2, stop_ids=frozenset())
        for _ in self.run_batch([spec]):
            pass

    # ------------------------------------------------------------------------------------- requests -> tokens
    def prompt_text(self, request):
        """The prompt string a request stands for (chat template applied to `messages`; for `suffix`, the FIM prompt
        spelled with its sentinel names, for logs: the engine itself builds those prompts as ids)."""
        if request.messages is not None:
            try:
                return render_chat(self.files.chat_template, request.messages, self.files.special_tokens)
            except ChatTemplateError as e:
                raise BadRequestError(str(e)) from None
        if request.suffix is not None:
            return self.tokenizer.decode(self.fim_prompt_ids(request.prompt, request.suffix, add_bos=False))
        return request.prompt

    def fim_tokens(self):
        """The tokenizer's FIM sentinels, or BadRequestError (param 'suffix') when the model is recorded as trained
        without fill-in-the-middle (model_files.trained_fim) or its tokenizer has no FIM tokens."""
        if self.fim_trained is not None and self.fim_trained.trained is False:
            from megasnow.generation.model_files import not_trained_message

            raise BadRequestError(not_trained_message(self.model_name or "this model", self.fim_trained), "suffix")
        fim = self.tokenizer.fim_tokens()
        if fim is None:
            raise BadRequestError("suffix (fill-in-the-middle) needs a tokenizer with FIM tokens (<fim_prefix>, "
                                  "<fim_suffix>, <fim_middle> or another family's); this model's has none: leave "
                                  "suffix out", "suffix")
        return fim

    def fim_prompt_ids(self, prefix, suffix, add_bos=True, fmt=None):
        """Token ids of an infilling prompt: prefix and suffix encoded apart and laid out as the model was trained
        (self.fim_format, or `fmt`: 'psm' / 'spm'); the model's continuation is the middle."""
        ids = fim_prompt_ids(self.fim_tokens(), self.tokenizer.encode, prefix, suffix, fmt or self.fim_format)
        if add_bos and self.files.add_bos and self.files.bos_id is not None:
            ids.insert(0, self.files.bos_id)
        return ids

    def fim_stop_ids(self):
        """Ids that end a middle: the EOS ids, the file separator (file-level FIM puts one after a middle that ends
        a file) and the FIM tokens themselves."""
        fim = self.fim_tokens()
        extra = {*fim.sentinels, fim.pad}
        if self.tokenizer.file_sep_id is not None:
            extra.add(self.tokenizer.file_sep_id)
        return self.eos_ids | extra

    def encode(self, text, add_bos=True):
        ids = list(self.tokenizer.encode(text))
        if add_bos and self.files.add_bos and self.files.bos_id is not None:
            ids.insert(0, self.files.bos_id)
        return ids

    def prepare(self, request, prompt_ids=None, ignore_eos=False):
        """A PreparedRequest, or BadRequestError saying what to change. `prompt_ids` (token ids) replaces the
        request's prompt text (OpenAI allows token-id prompts). Choice j samples with seed `seed + j`.
        ignore_eos: generate max_tokens even past EOS (vLLM's benchmark option). With echo the prompt text is the
        request's prompt, or the decoded ids when `prompt_ids` are given (as vLLM)."""
        fim = request.suffix is not None and request.messages is None
        p = request.params
        if p.echo and (request.messages is not None or request.suffix is not None):
            raise BadRequestError("echo works with completion prompts only (not with messages or suffix); "
                                  "leave echo out")
        given_ids = prompt_ids is not None
        if prompt_ids is None:
            prompt_ids = self.fim_prompt_ids(request.prompt, request.suffix) if fim else \
                self.encode(self.prompt_text(request), add_bos=request.messages is None)
        prompt_ids = tuple(int(t) for t in prompt_ids)
        if not prompt_ids:
            raise BadRequestError("the prompt is empty (0 tokens); give at least one token")
        vocab = self.model.cfg.vocab_size
        bad = next((t for t in prompt_ids if not 0 <= t < vocab), None)
        if bad is not None:  # checked before echo decodes the ids (a negative id overflows the tokenizer)
            raise BadRequestError(f"prompt token id {bad} is outside the vocabulary [0, {vocab})")
        echo_text = ""
        if p.echo:
            echo_text = self.tokenizer.decode(list(prompt_ids)) if given_ids else request.prompt
        if len(prompt_ids) + p.max_tokens > self.max_model_len:
            raise BadRequestError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{len(prompt_ids) + p.max_tokens} tokens ({len(prompt_ids)} in the prompt, {p.max_tokens} in the "
                f"completion). Please reduce the length of the prompt or max_tokens.")
        stop_ids = frozenset() if ignore_eos else (self.fim_stop_ids() if fim else self.eos_ids)
        prompt_logprobs = p.logprobs if p.echo else None
        specs = [SequenceSpec(prompt_ids, p.max_tokens, p.temperature, p.top_p,
                              None if p.seed is None else p.seed + j, stop_ids, p.stop, p.min_tokens, p.top_k, p.min_p,
                              p.logprobs, prompt_logprobs)
                 for j in range(p.n)]
        return PreparedRequest(request, prompt_ids, specs, echo_text)

    # ------------------------------------------------------------------------------------- batches
    def plan_batches(self, specs):
        """Split SequenceSpecs into batches: sorted by prompt length (little padding), at most max_num_seqs each
        and rows x (longest prompt + largest budget) <= max_batch_tokens. Returns lists of indices into specs."""
        order = sorted(range(len(specs)), key=lambda i: len(specs[i].prompt))
        batches, cur, longest, budget = [], [], 0, 0
        for i in order:
            s = specs[i]
            new_longest, new_budget = max(longest, len(s.prompt)), max(budget, s.max_new_tokens)
            if cur and (len(cur) >= self.max_num_seqs
                        or (len(cur) + 1) * (new_longest + new_budget) > self.max_batch_tokens):
                batches.append(cur)
                cur, new_longest, new_budget = [], len(s.prompt), s.max_new_tokens
            cur.append(i)
            longest, budget = new_longest, new_budget
        if cur:
            batches.append(cur)
        return batches

    def run_batch(self, specs):
        """Generate one batch; yields the list of Sequences after every step (see generate_stream). Holds the
        engine's lock while running, so callers in several threads take turns."""
        with self._lock:
            yield from generate_stream(self.model, specs, tokenizer=self.tokenizer, pad_id=self.pad_id)

    @staticmethod
    def choice(prepared, sequence):
        """The Choice of one finished Sequence of `prepared`: its text (after the echoed prompt, with echo) and
        its logprobs in the OpenAI completions shape (echoed prompt tokens first; None when the request asked for
        none: megasnow.generation.logprobs.completion_logprobs)."""
        logprobs = None
        if sequence.logprobs is not None:
            logprobs = completion_logprobs((sequence.prompt_logprobs or []) + sequence.logprobs)[0]
        return Choice(prepared.echo_text + sequence.text, sequence.finish_reason, sequence.num_generated, logprobs)

    def result(self, prepared, sequences):
        """The GenerationResult of a request from its finished Sequences (in choice order)."""
        choices = [self.choice(prepared, q) for q in sequences]
        return GenerationResult(request_id=prepared.request.id, choices=choices,
                                prompt_tokens=len(prepared.prompt_ids),
                                completion_tokens=sum(c.completion_tokens for c in choices), model=self.model_name,
                                system_fingerprint=self.fingerprint)


class LocalBackend(GenerationBackend):
    """GenerationBackend over a LocalEngine: batches of requests sorted by prompt length, in this process.

    model: a LocalEngine, or a path (megasnow checkpoint or HF Llama folder) plus LocalEngine.from_path's keyword
    arguments (device, dtype, tokenizer, chat_template, model_name, max_num_seqs, max_batch_tokens).
    sort_window: requests read ahead and sorted together (default 8 x max_num_seqs). Results come back in
    completion order; a request the model cannot run comes back at once with error_kind 'bad_request'.
    """

    def __init__(self, model, sort_window=None, **engine_kwargs):
        self.engine = model if isinstance(model, LocalEngine) else LocalEngine.from_path(model, **engine_kwargs)
        self.model_name = self.engine.model_name
        self.sort_window = sort_window or 8 * self.engine.max_num_seqs

    def check(self, request):
        try:
            self.engine.prepare(request)
        except BadRequestError as e:
            return str(e)
        return None

    def generate(self, requests):
        window = []
        for request in requests:
            window.append(request)
            if len(window) >= self.sort_window:
                yield from self._generate_window(window)
                window = []
        if window:
            yield from self._generate_window(window)

    def _generate_window(self, requests):
        prepared, items = [], []  # items: (request index, choice index, spec)
        for request in requests:
            try:
                prep = self.engine.prepare(request)
            except BadRequestError as e:
                yield GenerationResult(request_id=request.id, model=self.model_name, error=str(e),
                                       error_kind="bad_request")
                continue
            k = len(prepared)
            prepared.append(prep)
            items.extend((k, j, spec) for j, spec in enumerate(prep.specs))
        done = [[None] * len(p.specs) for p in prepared]
        remaining = [len(p.specs) for p in prepared]
        failed = set()
        for batch in self.engine.plan_batches([spec for _, _, spec in items]):
            seqs = []
            try:
                for seqs in self.engine.run_batch([items[i][2] for i in batch]):
                    pass
            except Exception as e:  # noqa: BLE001 - a failed batch fails its requests, not the whole run
                for k in sorted({items[i][0] for i in batch} - failed):
                    failed.add(k)
                    yield GenerationResult(request_id=prepared[k].request.id, model=self.model_name,
                                           error=f"generation failed: {type(e).__name__}: {e}",
                                           error_kind="unavailable")
                continue
            for i, q in zip(batch, seqs):
                k, j, _ = items[i]
                done[k][j] = q
                remaining[k] -= 1
                if remaining[k] == 0 and k not in failed:
                    yield self.engine.result(prepared[k], done[k])
