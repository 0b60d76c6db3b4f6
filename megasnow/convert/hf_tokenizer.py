"""Tokenizer files for a HuggingFace export: the SentencePiece model as tokenizer.model plus an equivalent
tokenizer.json (built offline with transformers' SentencePiece converter and checked token-for-token on real
code before it is written), or a HF tokenizer.json copied as is; plus tokenizer_config.json."""
import glob
import json
import os
import shutil

from megasnow.data import special_tokens
from megasnow.utils.atomic import atomic_write_text

# Text the converted tokenizer must encode exactly like SentencePiece before tokenizer.json is written.
_CHECK_SNIPPET = ("def f(x):\r\n\tif x  >  10:\n        return 'héllo ✓ 日本 🚀'\n\n\n"
                  f"{special_tokens.REPO_NAME}a/b{special_tokens.FILE_SEP}x.py\n  \t \n{special_tokens.EOD}")


def _check_texts(limit=20):
    """A fixed snippet plus some real source files of the Python standard library."""
    texts = [_CHECK_SNIPPET]
    for path in sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:limit]:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    return texts


def sentencepiece_to_tokenizer_json(model_path):
    """A `tokenizers.Tokenizer` equivalent to the SentencePiece model, or (None, reason) when not exact."""
    import sentencepiece as spm
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    with open(model_path, "rb") as f:
        proto.ParseFromString(f.read())
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    tok = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=False)
    if tok is None:
        return None, "transformers could not build a fast tokenizer from this SentencePiece model"
    tok.post_processor = None  # megasnow adds no BOS/EOS at encode time; neither must the export
    sp = spm.SentencePieceProcessor(model_file=model_path)
    for i, text in enumerate(_check_texts()):
        if sp.encode(text) != tok.encode(text, add_special_tokens=False).ids:
            return None, f"the converted tokenizer encodes check text {i} differently from SentencePiece"
    return tok, None


def export_tokenizer(path, out_dir, eod_id=None):
    """Write the tokenizer files into `out_dir`; returns (summary dict, {'bos', 'eos', 'pad'} ids).

    eos (and bos) is the end-of-document token the model was trained with: `eod_id` when given (the id the
    training data ended documents with, megasnow.data.dataset_meta.resolve_document_tokens), else the tokenizer's
    `eod_id` (Megatron-LM's --append-eod token: the SentencePiece eos piece).
    """
    from megasnow.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(path)
    summary = {}
    if path.endswith(".json") or os.path.isdir(path):
        src = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        shutil.copyfile(src, os.path.join(out_dir, "tokenizer.json"))
        summary["tokenizer.json"] = "copied"
        fast = True
    else:
        shutil.copyfile(path, os.path.join(out_dir, "tokenizer.model"))
        summary["tokenizer.model"] = "copied"
        tok, reason = sentencepiece_to_tokenizer_json(path)
        if tok is not None:
            tok.save(os.path.join(out_dir, "tokenizer.json"))
            summary["tokenizer.json"] = "converted (checked equal to SentencePiece on real code)"
        else:
            summary["tokenizer.json"] = f"not written: {reason}"
        fast = tok is not None
    eos = tokenizer.eod_id if eod_id is None else int(eod_id)
    eos_token = tokenizer.id_to_token(eos)
    pad = tokenizer.token_to_id(special_tokens.PAD)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast" if fast else "LlamaTokenizer",
        "bos_token": eos_token, "eos_token": eos_token,
        "pad_token": special_tokens.PAD if pad is not None else None,
        "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "additional_special_tokens": [t for t in special_tokens.SPECIAL_TOKENS if t not in (eos_token, special_tokens.PAD)
                                      and tokenizer.token_to_id(t) is not None],
    }
    atomic_write_text(os.path.join(out_dir, "tokenizer_config.json"), json.dumps(config, indent=2))
    atomic_write_text(os.path.join(out_dir, "special_tokens_map.json"),
                      json.dumps({k: config[k] for k in ("bos_token", "eos_token", "pad_token")}, indent=2))
    return summary, {"bos": eos, "eos": eos, "pad": pad}
