"""One tokenizer interface over a SentencePiece `.model` and a HuggingFace `tokenizer.json`.

`load_tokenizer(path)` picks the backend from the file; special tokens (megasnow.data.special_tokens) are single ids.
`eod_id` is the id Megatron-LM's `--append-eod` appends for the tokenizer (docs/data.md).
"""
import json
import os
from dataclasses import dataclass
from typing import Optional

from megasnow.errors import UserError
from megasnow.data import special_tokens


class TokenizerError(UserError, ValueError):
    """A tokenizer file that cannot be loaded or lacks a required token."""


@dataclass(frozen=True)
class FIMTokens:
    """Fill-in-the-middle sentinel ids of a vocabulary and their names (`names`: prefix, middle, suffix, pad).

    pad is the family's pad token, else the tokenizer's pad id (`<pad>`, else the end-of-document id)."""

    prefix: int
    middle: int
    suffix: int
    pad: int
    names: tuple

    @property
    def sentinels(self):
        return (self.prefix, self.middle, self.suffix)


class Tokenizer:
    """Common interface; subclasses wrap one backend. Ids are plain Python ints."""

    backend = None

    def __init__(self, path):
        self.path = os.fspath(path)

    def encode(self, text):
        raise NotImplementedError

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids):
        raise NotImplementedError

    def token_to_id(self, token):
        raise NotImplementedError

    @property
    def vocab_size(self):
        raise NotImplementedError

    def _megatron_eod(self):
        """The id Megatron-LM main appends with --append-eod, or None where it has none."""
        return None

    @property
    def eod_id(self):
        """End-of-document id: what Megatron-LM main's `--append-eod` appends for this tokenizer (SentencePiece: the
        model's eos piece; HuggingFace: eos_token of tokenizer_config.json), else the first of `<|endoftext|>`,
        `</s>`, `<eos>` in the vocabulary. A dataset binarized with another token records it in its metadata
        (megasnow.data.dataset_meta)."""
        tid = self._megatron_eod()
        if tid is not None:
            return tid
        token = fallback_eod_token(self.token_to_id)
        if token is None:
            raise TokenizerError(f"{self.path}: no end-of-document token (no eos, {special_tokens.EOD!r} or '</s>')")
        return self.token_to_id(token)

    @property
    def pad_id(self):
        tid = self.token_to_id(special_tokens.PAD)
        return self.eod_id if tid is None else tid

    def special_token_ids(self):
        """{token: id} for every megasnow special token present in the vocabulary."""
        ids = {t: self.token_to_id(t) for t in special_tokens.SPECIAL_TOKENS}
        return {t: i for t, i in ids.items() if i is not None}

    def fim_tokens(self):
        """FIMTokens of the first family of special_tokens.FIM_FAMILIES whose prefix, middle and suffix are all in the
        vocabulary (StarCoder's `<fim_prefix>` names first), or None when there is none."""
        for family in special_tokens.FIM_FAMILIES:
            ids = [self.token_to_id(t) if t is not None else None for t in family]
            if None in ids[:3]:
                continue
            pad = ids[3] if ids[3] is not None else self.pad_id
            names = tuple(family[:3]) + ((family[3] if ids[3] is not None else self.id_to_token(pad)),)
            return FIMTokens(ids[0], ids[1], ids[2], pad, names)
        return None

    @property
    def file_sep_id(self) -> Optional[int]:
        """The repository documents' file separator (`<file_sep>` or another family's), or None."""
        for token in special_tokens.FILE_SEP_ALIASES:
            tid = self.token_to_id(token)
            if tid is not None:
                return tid
        return None

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __repr__(self):
        return f"{type(self).__name__}({self.path!r}, vocab_size={self.vocab_size})"


class SentencePieceTokenizer(Tokenizer):
    backend = "sentencepiece"

    def __init__(self, path):
        super().__init__(path)
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(self.path)
        except (OSError, RuntimeError) as e:
            raise TokenizerError(f"{self.path}: cannot load SentencePiece model: {e}") from e

    def encode(self, text):
        return self.sp.Encode(text, out_type=int)

    def encode_batch(self, texts, num_threads=1):
        return self.sp.Encode(list(texts), out_type=int, num_threads=num_threads)

    def decode(self, ids):
        return self.sp.Decode([int(i) for i in ids])

    def token_to_id(self, token):
        tid = self.sp.PieceToId(token)
        # PieceToId answers unk for unknown pieces; only the unk piece itself may map to it.
        if tid == self.sp.unk_id() and token != self.sp.IdToPiece(tid):
            return None
        return tid

    def id_to_token(self, tid):
        return self.sp.IdToPiece(int(tid))

    def _megatron_eod(self):
        return self.sp.eos_id() if self.sp.eos_id() >= 0 else None

    @property
    def vocab_size(self):
        return self.sp.GetPieceSize()


class HFTokenizer(Tokenizer):
    backend = "huggingface"

    def __init__(self, path):
        super().__init__(path)
        from tokenizers import Tokenizer as RustTokenizer

        file = os.path.join(self.path, "tokenizer.json") if os.path.isdir(self.path) else self.path
        try:
            self.tok = RustTokenizer.from_file(file)
        except Exception as e:  # the Rust side raises a bare Exception on malformed files
            raise TokenizerError(f"{file}: cannot load HuggingFace tokenizer: {e}") from e
        # A tokenizer.json may carry truncation/padding (an encoder's max_length 128, say): megasnow encodes whole
        # documents, so both are switched off (as megatron_tokenizers.HuggingFaceEncoder does for its backend).
        self.tok.no_truncation()
        self.tok.no_padding()

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts):
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids):
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_to_id(self, token):
        return self.tok.token_to_id(token)

    def id_to_token(self, tid):
        return self.tok.id_to_token(int(tid))

    def _megatron_eod(self):
        token = hf_config_token(self.path, "eos_token")
        return None if token is None else self.token_to_id(token)

    @property
    def vocab_size(self):
        return self.tok.get_vocab_size(with_added_tokens=True)


def fallback_eod_token(token_to_id):
    """megasnow's end-of-document token where the tokenizer defines no eos: the first of `<|endoftext|>`, `</s>`,
    `<eos>` that `token_to_id` knows, or None."""
    for token in (special_tokens.EOD, "</s>", "<eos>"):
        if token_to_id(token) is not None:
            return token
    return None


def hf_config_token(path, name):
    """A special token's text (e.g. name="eos_token") from the tokenizer_config.json or special_tokens_map.json
    beside a HuggingFace tokenizer.json (or in its folder), as transformers reads it; None when neither sets it."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    if os.path.isfile(path) and os.path.basename(path) != "tokenizer.json":
        return None  # a lone .json file: transformers would see no config either
    for fname in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            with open(os.path.join(folder, fname), encoding="utf-8") as f:
                value = json.load(f).get(name)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, AttributeError) as e:
            raise TokenizerError(f"{os.path.join(folder, fname)}: cannot read {name}: {e}") from e
        if isinstance(value, dict):  # AddedToken serialised as {"content": ...}
            value = value.get("content")
        if isinstance(value, str):
            return value
    return None


def load_tokenizer(path):
    """A Tokenizer for a SentencePiece `.model` file or a HF `tokenizer.json` (file or folder holding one)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise TokenizerError(f"{path}: tokenizer file does not exist")
    if os.path.isdir(path) or path.endswith(".json"):
        return HFTokenizer(path)
    return SentencePieceTokenizer(path)


def tokenizer_type_of(path):
    """Megatron's --tokenizer-type name for a tokenizer file."""
    return "HuggingFaceTokenizer" if (os.path.isdir(path) or os.fspath(path).endswith(".json")) else "SentencePieceTokenizer"
