"""One tokenizer interface over a SentencePiece `.model` and a HuggingFace `tokenizer.json`.

`load_tokenizer(path)` picks the backend from the file; special tokens (megasnow.data.special_tokens) are single ids.
"""
import os

from megasnow.errors import UserError
from megasnow.data import special_tokens


class TokenizerError(UserError, ValueError):
    """A tokenizer file that cannot be loaded or lacks a required token."""


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

    @property
    def eod_id(self):
        """End-of-document id: the EOD special token, else the backend's end-of-sequence token."""
        for token in (special_tokens.EOD, "</s>", "<eos>"):
            tid = self.token_to_id(token)
            if tid is not None:
                return tid
        raise TokenizerError(f"{self.path}: no end-of-document token ({special_tokens.EOD!r} or '</s>')")

    @property
    def pad_id(self):
        tid = self.token_to_id(special_tokens.PAD)
        return self.eod_id if tid is None else tid

    def special_token_ids(self):
        """{token: id} for every megasnow special token present in the vocabulary."""
        ids = {t: self.token_to_id(t) for t in special_tokens.SPECIAL_TOKENS}
        return {t: i for t, i in ids.items() if i is not None}

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

    @property
    def vocab_size(self):
        return self.tok.get_vocab_size(with_added_tokens=True)


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
