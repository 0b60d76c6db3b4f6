"""The bytes each token id stands for, so that text positions in a token sequence are found without decoding it.

Fill-in-the-middle (megasnow.data.fim) cuts documents at character positions; this table lets it count characters
and find the tokens around a cut with array lookups, and decode and re-encode only those few tokens.
"""
import json
import os
import re
from dataclasses import dataclass

import numpy as np

from megasnow.data.tokenizer import TokenizerError

# Texts every supported tokenizer must encode into tokens whose bytes concatenate back to the text: mixed
# indentation, CRLF, runs of spaces, non-ASCII (accents, CJK, emoji) and pieces that start mid-line.
PROBE_TEXTS = ("def f(x):\r\n\tif x  >  10:\n        return 'héllo ✓ 日本 🚀'\n\n\n# ünïcode\n",
               "x", " x", "  y = 1", "\n\tz", "é", "日本語のコメント", "🚀 launch", "1234567 + 89")
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_WHITESPACE = frozenset(b" \t\n\r")


@dataclass
class TokenBytes:
    """Per-id facts for a vocabulary of V ids.

    pieces: list of V bytes objects (b"" for atomic ids); nchars: int64 [V], characters a token starts (its bytes
    that are not UTF-8 continuation bytes; 0 for atomic ids); lead_first: bool [V], the token's first byte starts a
    character; word_start: bool [V], its first byte is whitespace; space_end: bool [V], its last byte is whitespace
    (BPE pre-tokenizers start a word where a token starting with whitespace follows one that does not end with it);
    atomic: bool [V], special/control/added tokens, never cut and never re-encoded.
    """

    pieces: list
    nchars: np.ndarray
    lead_first: np.ndarray
    word_start: np.ndarray
    space_end: np.ndarray
    atomic: np.ndarray

    def text_of(self, ids):
        """The text of non-atomic ids (UnicodeDecodeError if they cut a character)."""
        return b"".join([self.pieces[i] for i in ids]).decode("utf-8")


def _gpt2_byte_decoder():
    """GPT-2's byte-level alphabet (bytes_to_unicode in openai/gpt-2 encoder.py), inverted: char -> byte."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _sentencepiece_pieces(tokenizer, special):
    """(pieces, atomic ids) of a SentencePiece model from its proto: byte pieces <0xHH>, '▁' for spaces."""
    sp = tokenizer.sp
    n = sp.GetPieceSize()
    try:
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(sp.serialized_model_proto())
        types = [p.type for p in proto.pieces]
        normal, byte = sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL, \
            sentencepiece_model_pb2.ModelProto.SentencePiece.BYTE
    except ImportError:  # no protobuf: the processor's own type tests (user-defined pieces come from `special`)
        types, normal, byte = None, 1, 6
    pieces, atomic = [], set(special)
    for i in range(n):
        piece = sp.IdToPiece(i)
        kind = types[i] if types is not None else (
            byte if sp.IsByte(i) else 3 if (sp.IsControl(i) or sp.IsUnknown(i) or sp.IsUnused(i)) else normal)
        if kind == byte:
            pieces.append(bytes([int(piece[3:5], 16)]))
        elif kind == normal and i not in atomic:
            pieces.append(piece.replace("\u2581", " ").encode("utf-8"))
        else:  # control, unknown, unused, user-defined (megasnow's special tokens)
            pieces.append(b"")
            atomic.add(i)
    return pieces, atomic


def _decoder_types(node):
    if not isinstance(node, dict):
        return set()
    found = {node.get("type")}
    for child in node.get("decoders") or ():
        found |= _decoder_types(child)
    return found


def _huggingface_pieces(tokenizer, special):
    """(pieces, atomic ids) of a HF tokenizer.json: byte-level (GPT-2 alphabet) or '▁' + <0xHH> byte fallback."""
    tok = tokenizer.tok
    decoder = json.loads(tok.to_str()).get("decoder")
    types = _decoder_types(decoder)
    n = tok.get_vocab_size(with_added_tokens=True)
    atomic = set(special) | set(tok.get_added_tokens_decoder())
    pieces = [b""] * n
    byte_level = "ByteLevel" in types
    if not byte_level and not types & {"Metaspace", "Replace", "ByteFallback", "Fuse", "Strip"}:
        found = sorted(t for t in types if t) or "none"
        raise TokenizerError(f"{tokenizer.path}: fill-in-the-middle cannot map this tokenizer's tokens to text "
                             f"(decoder {found}; supported: ByteLevel, Metaspace/ByteFallback)")
    table = _gpt2_byte_decoder() if byte_level else None
    for token, i in tok.get_vocab(with_added_tokens=True).items():
        if i in atomic:
            continue
        if byte_level:
            try:
                pieces[i] = bytes(table[c] for c in token)
            except KeyError:
                atomic.add(i)  # not in the byte alphabet: an added text token
            continue
        m = _BYTE_PIECE.match(token)
        pieces[i] = bytes([int(m.group(1), 16)]) if m and "ByteFallback" in types else \
            token.replace("\u2581", " ").encode("utf-8")
    return pieces, atomic


def _build(tokenizer, special):
    if tokenizer.backend == "sentencepiece":
        pieces, atomic = _sentencepiece_pieces(tokenizer, special)
    elif tokenizer.backend == "huggingface":
        pieces, atomic = _huggingface_pieces(tokenizer, special)
    else:
        raise TokenizerError(f"{tokenizer.path}: fill-in-the-middle supports SentencePiece and HF tokenizers")
    n = len(pieces)
    nchars = np.zeros(n, dtype=np.int64)
    lead_first = np.ones(n, dtype=bool)
    word_start = np.zeros(n, dtype=bool)
    space_end = np.zeros(n, dtype=bool)
    is_atomic = np.zeros(n, dtype=bool)
    for i, p in enumerate(pieces):
        if i in atomic:
            is_atomic[i] = True
            continue
        nchars[i] = sum(1 for b in p if b & 0xC0 != 0x80)
        if p:
            lead_first[i] = p[0] & 0xC0 != 0x80
            word_start[i] = p[0] in _WHITESPACE
            space_end[i] = p[-1] in _WHITESPACE
    table = TokenBytes(pieces, nchars, lead_first, word_start, space_end, is_atomic)
    for text in PROBE_TEXTS:
        ids = tokenizer.encode(text)
        if any(i >= n or is_atomic[i] for i in ids) or b"".join(pieces[i] for i in ids) != text.encode("utf-8"):
            raise TokenizerError(
                f"{tokenizer.path}: fill-in-the-middle needs a tokenizer whose tokens spell the text exactly, and this "
                f"one encodes {text!r} as {[tokenizer.id_to_token(i) for i in ids][:12]} (a normalizer or a dummy "
                f"prefix space changes the text); use a megasnow-trained tokenizer or a byte-level BPE tokenizer.json")
    return table


_TABLES = {}  # (backend, path, file stamp, special ids) -> TokenBytes, filled on first use


def token_bytes(tokenizer, special_ids=()):
    """The validated TokenBytes of a megasnow Tokenizer (cached per tokenizer file). `special_ids` are treated as
    atomic on top of the tokenizer's own control/added tokens. Raises TokenizerError (naming the file) for a
    tokenizer whose tokens do not spell the text they encode (text normalization, dummy-prefix spaces)."""
    special = frozenset(int(i) for i in special_ids)
    try:
        st = os.stat(tokenizer.path if not os.path.isdir(tokenizer.path)
                     else os.path.join(tokenizer.path, "tokenizer.json"))
    except OSError:
        return _build(tokenizer, special)
    key = (tokenizer.backend, os.path.abspath(tokenizer.path), st.st_mtime_ns, st.st_size, special)
    if key not in _TABLES:
        _TABLES[key] = _build(tokenizer, special)
    return _TABLES[key]
