"""What Megatron-LM's tools/preprocess_data.py writes for each --tokenizer-type: a document's ids and the id that
--append-eod appends, as in Megatron-LM main (megatron.core.tokenizers) or its legacy megatron.training.tokenizer.

The rules, per type and version, are in docs/data.md ("What each --tokenizer-type writes"); sources are cited per class.
"""
import os
import re
from dataclasses import dataclass

import numpy as np

from megasnow.data.tokenizer import TokenizerError, fallback_eod_token, tokenizer_type_of

SENTENCEPIECE_TYPES = ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer")
HUGGINGFACE_TYPES = ("HuggingFaceTokenizer",)
TOKENIZER_TYPES = SENTENCEPIECE_TYPES + HUGGINGFACE_TYPES

MAIN, LEGACY = "megatron-lm main", "megatron-lm legacy"


@dataclass
class TokenizerOptions:
    """Megatron-LM's tokenizer flags, under their names (megatron/training/config: TokenizerConfig).

    legacy_tokenizer: `--legacy-tokenizer` (core 0.15-0.16; the only system through core 0.14).
    hf_include_special_tokens: not `--tokenizer-hf-no-include-special-tokens` (main's default: include).
    hf_use_fast: not `--tokenizer-hf-no-use-fast`.
    """

    tokenizer_model: str
    tokenizer_type: str | None = None
    legacy_tokenizer: bool = False
    hf_include_special_tokens: bool = True
    hf_use_fast: bool = True
    trust_remote_code: bool = False

    def resolved_type(self):
        return self.tokenizer_type or tokenizer_type_of(self.tokenizer_model)


class DocumentEncoder:
    """Encodes documents exactly as Megatron-LM's preprocess_data `Encoder.encode` does for one tokenizer type.

    `encode_batch(texts)` -> one 1-D int32 array per text (str or UTF-8 bytes); `eod` is the id `--append-eod`
    appends (None: the tokenizer defines none), `vocab_size` what Megatron sizes the dtype by, `rule` a sentence
    for the summary.
    """

    tokenizer_type = None
    semantics = MAIN
    vocab_size = 0
    eod = None
    bos = None
    rule = ""

    def encode_batch(self, texts):
        raise NotImplementedError

    def token_id(self, token):
        """The id of `token` in this tokenizer's vocabulary, or None."""
        raise NotImplementedError

    def token_of(self, tid):
        raise NotImplementedError

    def _plain_ids(self, text):
        """The text's ids with nothing added around them."""
        raise NotImplementedError

    def framing(self):
        """(ids put before, ids put after) every document's text ids, found by encoding a probe text both ways:
        e.g. ([bos], []) for a BOS-adding post-processor or the legacy Llama2Tokenizer."""
        probe = "x = 1"
        plain = [int(i) for i in self._plain_ids(probe)]
        full = [int(i) for i in self.encode_batch([probe])[0]]
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start], full[start + len(plain):]
        return [], []

    def settings(self):
        """What determines the written ids (recorded in the dataset's metadata)."""
        prefix, suffix = self.framing()
        return {"tokenizer_type": self.tokenizer_type, "semantics": self.semantics, "vocab_size": self.vocab_size,
                "bos_id": self.bos, "prefix_ids": prefix, "suffix_ids": suffix}


def _as_str(text):
    return text.decode("utf-8") if isinstance(text, (bytes, bytearray, memoryview)) else text


def _load_sentencepiece(path):
    import sentencepiece as spm

    if not os.path.isfile(path):
        raise TokenizerError(f"{path}: tokenizer file does not exist")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(path)
    except (OSError, RuntimeError) as e:
        hint = ("; it is a HuggingFace tokenizer (JSON): use --tokenizer-type HuggingFaceTokenizer"
                if tokenizer_file_kind(path) == "huggingface" else "")
        raise TokenizerError(f"{path}: cannot load SentencePiece model: {e}{hint}") from e
    return sp


def tokenizer_file_kind(path):
    """'huggingface' (a folder, or a file starting with a JSON object), 'sentencepiece' (a .model file or one
    starting with a ModelProto's first field tag, 0x0a) or None: which --tokenizer-type a file that failed to load
    under the other one wants."""
    if os.path.isdir(path):
        return "huggingface"
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if head.lstrip().startswith(b"{"):
        return "huggingface"
    if path.endswith(".model") or head[:1] == b"\x0a":
        return "sentencepiece"
    return None


class SentencePieceEncoder(DocumentEncoder):
    """All three SentencePiece types on main, and legacy GPTSentencePieceTokenizer / Llama2Tokenizer.

    main: megatron/core/tokenizers/text/libraries/sentencepiece_tokenizer.py, `text_to_ids` = encode_as_ids(text)
    (legacy=False, ignore_extra_whitespaces=True), `eod` = the model's eos_id (abstract_tokenizer.py: no eod_id,
    so eos_id). legacy (megatron/training/tokenizer/tokenizer.py, core_v0.14.0): `_GPTSentencePieceTokenizer`
    encode_as_ids, eod = eos_id; `_Llama2Tokenizer.tokenize(s, bos=True)` = [bos_id] + encode(s), eod = eos_id.
    """

    def __init__(self, tokenizer_type, path, legacy=False):
        self.tokenizer_type, self.path = tokenizer_type, path
        self.semantics = LEGACY if legacy else MAIN
        self.sp = _load_sentencepiece(path)
        self.vocab_size = self.sp.GetPieceSize()
        self.eod = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.bos = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.add_bos = legacy and tokenizer_type == "Llama2Tokenizer"
        if self.add_bos and self.bos is None:
            raise TokenizerError(f"{path}: --legacy-tokenizer Llama2Tokenizer starts every document with the BOS "
                                 f"id, but this SentencePiece model has none (bos_id -1); use another type")
        self.rule = ("[bos] + SentencePiece ids" if self.add_bos else "SentencePiece ids, nothing added")

    def encode_batch(self, texts):
        # SentencePiece's C++ encoder, GIL released, int32 numpy buffers out.
        return self.sp.Encode(list(texts), out_type="numpy", num_threads=1, add_bos=self.add_bos)

    def token_id(self, token):
        tid = self.sp.PieceToId(token)
        if tid == self.sp.unk_id() and token != self.sp.IdToPiece(tid):
            return None
        return tid

    def token_of(self, tid):
        return self.sp.IdToPiece(int(tid)) if 0 <= tid < self.vocab_size else None

    def _plain_ids(self, text):
        return self.sp.Encode(text)


class LegacySentencePieceEncoder(DocumentEncoder):
    """Legacy `SentencePieceTokenizer` (megatron/training/tokenizer/tokenizer.py `_SentencePieceTokenizer`,
    core_v0.14.0 and `--legacy-tokenizer` in 0.15-0.16).

    It adds the special tokens <CLS>, <SEP>, <EOD>, <MASK> and the model's pad/bos/eos pieces (<PAD>, <BOS>, <EOS>
    when the model has none), each past the SentencePiece vocabulary when the model lacks it; `tokenize` cuts the
    text at every occurrence of one of them (leftmost first, ties in that order: NeMo's loop), encodes the pieces
    between with SentencePiece and puts the special token's id in place. eod = the <EOD> id.
    """

    def __init__(self, path):
        self.tokenizer_type, self.path, self.semantics = "SentencePieceTokenizer", path, LEGACY
        self.sp = _load_sentencepiece(path)
        n = self.sp.GetPieceSize()
        vocab = {self.sp.IdToPiece(i): i for i in range(n)}
        self.special = {}

        def add(token):
            if token not in vocab:
                vocab[token] = len(vocab)
            self.special[token] = vocab[token]

        for token in ("<CLS>", "<SEP>", "<EOD>", "<MASK>"):
            add(token)
        for tid, default in ((self.sp.pad_id(), "<PAD>"), (self.sp.bos_id(), "<BOS>"), (self.sp.eos_id(), "<EOS>")):
            add(self.sp.IdToPiece(tid) if 0 <= tid < n else default)
        self.vocab = vocab
        self.inv = {i: t for t, i in vocab.items()}
        self.vocab_size = len(vocab)
        self.eod = self.special["<EOD>"]
        self.bos = self.special[self.sp.IdToPiece(self.sp.bos_id()) if 0 <= self.sp.bos_id() < n else "<BOS>"]
        self.added = [t for t, i in vocab.items() if i >= n]
        # Regex alternation tries the tokens in insertion order at the leftmost position: the legacy loop's choice.
        self.pattern = re.compile("|".join(re.escape(t) for t in self.special))
        self.rule = ("SentencePiece ids, text cut at the special tokens " + ", ".join(self.special))

    def encode_batch(self, texts):
        segments, plans = [], []
        for text in map(_as_str, texts):
            plan, start = [], 0
            for m in self.pattern.finditer(text):
                plan.append(len(segments))
                segments.append(text[start:m.start()])
                plan.append(-1 - self.special[m.group()])  # negative: a special token's id
                start = m.end()
            plan.append(len(segments))
            segments.append(text[start:])
            plans.append(plan)
        encoded = self.sp.Encode(segments, out_type="numpy", num_threads=1) if segments else []
        out = []
        for plan in plans:
            parts = [encoded[p] if p >= 0 else np.array([-1 - p], np.int32) for p in plan]
            out.append(parts[0] if len(parts) == 1 else np.concatenate(parts).astype(np.int32, copy=False))
        return out

    def _plain_ids(self, text):
        return self.sp.Encode(text)

    def token_id(self, token):
        return self.vocab.get(token)

    def token_of(self, tid):
        return self.inv.get(int(tid))

    def settings(self):
        return dict(super().settings(), added_tokens={t: self.vocab[t] for t in self.added})


class HuggingFaceEncoder(DocumentEncoder):
    """`HuggingFaceTokenizer`: transformers' AutoTokenizer over the folder (or tokenizer.json file).

    main (megatron/core/tokenizers/text/libraries/huggingface_tokenizer.py): use_fast=True unless
    --tokenizer-hf-no-use-fast; include_special_tokens=True unless --tokenizer-hf-no-include-special-tokens, when
    `text_to_ids` is `tokenizer(text).input_ids` (the post-processor's BOS/EOS included) instead of
    tokens_to_ids(tokenize(text)); eod = eos_token's id (eos_token falls back to sep_token when unset).
    legacy (`_HuggingFaceTokenizer`): AutoTokenizer defaults, `tokenizer(text).input_ids`, eod = eos_token_id.
    """

    def __init__(self, path, include_special_tokens=True, use_fast=True, trust_remote_code=False, legacy=False):
        self.tokenizer_type, self.path = "HuggingFaceTokenizer", path
        self.semantics = LEGACY if legacy else MAIN
        self.include = True if legacy else include_special_tokens
        self.use_fast = True if legacy else use_fast
        self.hf = _load_hf(path, self.use_fast, trust_remote_code)
        self.vocab_size = len(self.hf)
        self._vocab = self.hf.get_vocab()
        eos = self.hf.eos_token
        if eos is None and not legacy:
            eos = self.hf.sep_token  # huggingface_tokenizer.py: eos_token <- sep_token when the model has no eos
        self.eod = self._vocab.get(str(eos)) if eos is not None else None
        self.bos = self.hf.bos_token_id
        self.backend = getattr(self.hf, "backend_tokenizer", None) if getattr(self.hf, "is_fast", False) else None
        if self.backend is not None:  # tokenizer(text) calls run with truncation and padding off
            self.backend.no_truncation()
            self.backend.no_padding()
        self.rule = ("tokenizer(text).input_ids (special tokens of the post-processor included)" if self.include
                     else "tokens_to_ids(tokenize(text)) (no special tokens added)")

    def encode_batch(self, texts):
        strs = [_as_str(t) for t in texts]
        if self.backend is not None:
            encs = self.backend.encode_batch(strs, add_special_tokens=self.include)
            return [np.asarray(e.ids, dtype=np.int32) for e in encs]
        if self.include:
            return [np.asarray(self.hf(t).input_ids, dtype=np.int32) for t in strs]
        return [np.asarray(self.hf.convert_tokens_to_ids(self.hf.tokenize(t)), dtype=np.int32) for t in strs]

    def _plain_ids(self, text):
        if self.backend is not None:
            return self.backend.encode(text, add_special_tokens=False).ids
        return self.hf.convert_tokens_to_ids(self.hf.tokenize(text))

    def token_id(self, token):
        return self._vocab.get(token)

    def token_of(self, tid):
        return self.hf.convert_ids_to_tokens(int(tid))

    def settings(self):
        return dict(super().settings(), hf_include_special_tokens=self.include, hf_use_fast=self.use_fast)


def _load_hf(path, use_fast, trust_remote_code):
    """AutoTokenizer for a folder, or for the folder of a `tokenizer.json`; any other .json file is read alone."""
    try:
        import transformers
    except ImportError as e:
        raise TokenizerError("HuggingFaceTokenizer needs the transformers package (pip install transformers)") from e
    if not os.path.exists(path):
        raise TokenizerError(f"{path}: tokenizer file or folder does not exist")
    try:
        if os.path.isfile(path) and os.path.basename(path) != "tokenizer.json":
            return transformers.PreTrainedTokenizerFast(tokenizer_file=path)
        folder = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path
        return transformers.AutoTokenizer.from_pretrained(folder, use_fast=use_fast,
                                                          trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a bad folder
        hint = ("; it is a SentencePiece model: use --tokenizer-type SentencePieceTokenizer"
                if tokenizer_file_kind(path) == "sentencepiece" else "")
        raise TokenizerError(f"{path}: cannot load HuggingFace tokenizer: {str(e).splitlines()[0][:300]}{hint}") from e


def build_document_encoder(options):
    """The DocumentEncoder for Megatron-LM's flags (TokenizerOptions); TokenizerError for a bad model file."""
    kind = options.resolved_type()
    if kind not in TOKENIZER_TYPES:
        raise TokenizerError(f"--tokenizer-type {kind!r} is not supported (use one of {', '.join(TOKENIZER_TYPES)})")
    if kind in HUGGINGFACE_TYPES:
        return HuggingFaceEncoder(options.tokenizer_model, options.hf_include_special_tokens, options.hf_use_fast,
                                  options.trust_remote_code, legacy=options.legacy_tokenizer)
    if options.legacy_tokenizer and kind == "SentencePieceTokenizer":
        return LegacySentencePieceEncoder(options.tokenizer_model)
    return SentencePieceEncoder(kind, options.tokenizer_model, legacy=options.legacy_tokenizer)


def end_of_document(encoder, eod_token=None):
    """(id, token, note) that --append-eod appends with this encoder: `eod_token`'s id when given (megasnow's
    --eod-token), else Megatron's eod. Where Megatron has none (it would fail), megasnow's fallback token is used and
    `note` says so. TokenizerError when no id can be found."""
    if eod_token is not None:
        tid = encoder.token_id(eod_token)
        if tid is None:
            raise TokenizerError(f"--eod-token {eod_token!r} is not a token of {encoder.path}")
        return tid, eod_token, None
    if encoder.eod is not None:
        return encoder.eod, encoder.token_of(encoder.eod), None
    token = fallback_eod_token(encoder.token_id)
    what = "eos_token" if encoder.tokenizer_type in HUGGINGFACE_TYPES else "eos piece (eos_id -1)"
    if token is None:
        raise TokenizerError(f"{encoder.path}: the tokenizer has no {what}, which Megatron-LM's --append-eod "
                             f"appends; name the token to append with --eod-token")
    note = (f"{encoder.path} has no {what} (Megatron-LM's --append-eod would fail); appending {token!r} "
            f"(id {encoder.token_id(token)}) instead; pass --eod-token to choose")
    return encoder.token_id(token), token, note
