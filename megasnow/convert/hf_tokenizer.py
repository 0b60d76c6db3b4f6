"""Tokenizer files for a HuggingFace export: the SentencePiece model as tokenizer.model plus an equivalent
tokenizer.json (built offline with transformers' SentencePiece converter and checked token-for-token on real
code before it is written), or a HF tokenizer.json copied as is; plus tokenizer_config.json (an imported model's own,
else one made from the tokenizer) and a special_tokens_map.json that agrees with it."""
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


SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
# Files beside a tokenizer that describe how it is used (HF conventions); an import or export carries them along.
TOKENIZER_SIDE_FILES = ("tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                        "generation_config.json")


def token_text(value):
    """A special token entry of tokenizer_config.json: a string or an AddedToken dict ({'content': ...})."""
    return value.get("content") if isinstance(value, dict) else value


def special_tokens_map(config):
    """special_tokens_map.json contents that agree with a tokenizer_config.json dict (same tokens, same keys)."""
    out = {k: config[k] for k in SPECIAL_KEYS if config.get(k) is not None}
    if config.get("additional_special_tokens"):
        out["additional_special_tokens"] = config["additional_special_tokens"]
    return out


def read_json(path, error=None):
    """A JSON file's contents, {} when it does not exist; `error` (a UserError type; default ConversionError)
    naming the file when it is not JSON."""
    if error is None:
        from megasnow.convert.errors import ConversionError as error

    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise error(f"{path}: not valid JSON ({e})") from None


def _generic_config(tokenizer, fast):
    """tokenizer_config.json for a tokenizer without one (a megasnow-trained SentencePiece model): bos/eos/pad
    from the model. eos is the end-of-document token (Megatron-LM's --append-eod token: the SentencePiece eos
    piece); bos is the model's bos piece where it has one, else the same token; pad is `<pad>` when present.
    megasnow adds neither at encode time, so add_bos_token/add_eos_token are false."""
    eos_token = tokenizer.id_to_token(tokenizer.eod_id)
    sp = getattr(tokenizer, "sp", None)
    bos_token = sp.IdToPiece(sp.bos_id()) if sp is not None and sp.bos_id() >= 0 else eos_token
    pad = tokenizer.token_to_id(special_tokens.PAD)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast" if fast else "LlamaTokenizer",
        "bos_token": bos_token, "eos_token": eos_token,
        "pad_token": special_tokens.PAD if pad is not None else None,
        "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "additional_special_tokens": [t for t in special_tokens.SPECIAL_TOKENS
                                      if t not in (eos_token, bos_token, special_tokens.PAD)
                                      and tokenizer.token_to_id(t) is not None],
    }
    if sp is not None and sp.unk_id() >= 0:
        config["unk_token"] = sp.IdToPiece(sp.unk_id())
    return config


def special_token_ids(tokenizer, config, source=""):
    """{'bos', 'eos', 'pad'} ids of a tokenizer_config.json dict's tokens (None where it names none). Raises
    ConversionError for a named token the vocabulary lacks."""
    from megasnow.convert.errors import ConversionError

    ids = {}
    for key in ("bos", "eos", "pad"):
        token = token_text(config.get(f"{key}_token"))
        tid = None if token is None else tokenizer.token_to_id(token)
        if token is not None and tid is None:
            raise ConversionError(f"{source}: {key}_token {token!r} is not in the tokenizer's vocabulary")
        ids[key] = tid
    return ids


def export_tokenizer(path, out_dir, eod_id=None):
    """Write the tokenizer files into `out_dir`; returns (summary dict, {'bos', 'eos', 'pad'} ids).

    A tokenizer_config.json beside `path` (an imported model's: chat template, BOS rule, special tokens) is copied
    as is, with its chat_template.jinja; otherwise one is made from the tokenizer (_generic_config), eos being
    `eod_id` there when given (the id the training data ended documents with,
    megasnow.data.dataset_meta.resolve_document_tokens). special_tokens_map.json is always derived from the
    tokenizer_config.json written, so the two agree. Raises ConversionError.
    """
    from megasnow.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(path)
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
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
    config_path = os.path.join(folder, "tokenizer_config.json")
    config = read_json(config_path)
    if config:
        summary["tokenizer_config.json"] = f"copied from {folder}"
        jinja = os.path.join(folder, "chat_template.jinja")
        if os.path.exists(jinja):
            shutil.copyfile(jinja, os.path.join(out_dir, "chat_template.jinja"))
            summary["chat_template.jinja"] = "copied"
    else:
        config_path = path
        config = _generic_config(tokenizer, fast)
        if eod_id is not None:
            config["eos_token"] = tokenizer.id_to_token(int(eod_id))
    ids = special_token_ids(tokenizer, config, config_path)
    atomic_write_text(os.path.join(out_dir, "tokenizer_config.json"), json.dumps(config, indent=2))
    atomic_write_text(os.path.join(out_dir, "special_tokens_map.json"),
                      json.dumps(special_tokens_map(config), indent=2))
    return summary, ids
