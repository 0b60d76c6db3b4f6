"""Load a model for generation from a megasnow checkpoint or a HuggingFace Llama folder, with what generation needs
besides the weights: the tokenizer, the chat template and the end-of-sequence ids (HF file conventions)."""
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Optional

from megasnow.convert.hf_tokenizer import read_json, token_text
from megasnow.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class ModelLoadError(UserError, RuntimeError):
    """A model path that cannot be served: names the path and what is missing."""


@dataclass
class TokenizerFiles:
    """tokenizer: a megasnow Tokenizer; chat_template: Jinja text (HF convention) or None; eos_ids: ids that end a
    generation; special_tokens: {'bos_token': '<s>', ...} strings the chat template may use; add_bos: whether a
    completion prompt starts with bos_id (tokenizer_config.json `add_bos_token`, as HF tokenizers do)."""

    tokenizer: object
    chat_template: Optional[str] = None
    eos_ids: tuple = ()
    special_tokens: dict = field(default_factory=dict)
    add_bos: bool = False
    bos_id: Optional[int] = None


def is_hf_folder(path):
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")) and (
        os.path.exists(os.path.join(path, "model.safetensors"))
        or os.path.exists(os.path.join(path, "model.safetensors.index.json")))


def check_model_kind(path, then=None):
    """Refuse (ModelLoadError), with the command that converts it, a model path that cannot be loaded as given: a
    GGUF file (import it once), another file, a folder holding GGUF files, or a HF folder whose weights are not
    safetensors. `then`: what to run after the import, with `{out}` for its folder (the server passes its own
    command). A folder of any other kind is left to the loader, whose message names what it looked for."""
    convert = "python tools/convert_checkpoint.py import"
    if os.path.isfile(path):
        if path.lower().endswith(".gguf"):
            out = os.path.join("ckpt", os.path.splitext(os.path.basename(path))[0])
            after = f" && {then.format(out=out)}" if then else ""
            raise ModelLoadError(f"{path}: a GGUF file is not loaded directly; import it once into a megasnow "
                                 f"checkpoint (fp32, keeps its tokenizer and chat template), then use that folder: "
                                 f"{convert} --gguf {path} --output {out}{after}")
        raise ModelLoadError(f"{path}: is a file; give a megasnow checkpoint folder, a HF Llama folder, or import a "
                             f"GGUF file first ({convert} --gguf FILE --output DIR)")
    has = lambda name: os.path.exists(os.path.join(path, name))  # noqa: E731
    ggufs = sorted(n for n in os.listdir(path) if n.lower().endswith(".gguf")) if os.path.isdir(path) else []
    if ggufs and not has("config.json") and not has("latest"):  # e.g. a pip package's folder holding the file
        raise ModelLoadError(f"{path}: a folder holding GGUF file(s) ({', '.join(ggufs[:3])}), not a checkpoint; "
                             f"import one once into a megasnow checkpoint, then use that folder: {convert} --gguf "
                             f"{os.path.join(path, ggufs[0])} --output DIR")
    if has("config.json") and not (has("model.safetensors") or has("model.safetensors.index.json")):
        weights = [n for n in ("pytorch_model.bin", "pytorch_model.bin.index.json") if has(n)]
        found = f"it has {weights[0]}, which is not read" if weights else "no weights found"
        raise ModelLoadError(f"{path}: a HF folder (config.json) without model.safetensors ({found}); save it with "
                             f"transformers' save_pretrained(..., safe_serialization=True), then use it as is or "
                             f"import it ({convert} --hf {path} --output DIR)")


def load_model(path, device="cpu", dtype=None):
    """(LlamaModel in eval mode, folder holding its tokenizer files, fingerprint) for a megasnow checkpoint (a
    run's checkpoint folder or one step folder) or a HF LlamaForCausalLM folder. dtype: a torch dtype (default
    float32 on CPU, bfloat16 on CUDA). The fingerprint is a short hash of the checkpoint's metadata / config."""
    import torch

    from megasnow.convert import hf_llama
    from megasnow.model.llama import LlamaModel
    from megasnow.train import checkpoint as ckpt

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: does not exist; give a megasnow checkpoint folder or a HF Llama folder")
    check_model_kind(path)
    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if is_hf_folder(path):
        cfg_file = os.path.join(path, "config.json")
        with open(cfg_file, encoding="utf-8") as f:
            model_cfg = hf_llama.model_config_from_hf(json.load(f), cfg_file)
        model = LlamaModel(model_cfg, init_seed=None)
        ckpt.load_model_state(model, hf_llama.hf_to_megasnow(hf_llama.read_hf_state(path), model_cfg, path), path)
        folder, meta_file = path, cfg_file
    else:
        try:
            model, folder = hf_llama.build_megasnow_model(path, device="cpu")
        except ckpt.CheckpointError as e:
            raise ModelLoadError(f"{e} (nor a HF folder with config.json and model.safetensors)") from None
        meta_file = os.path.join(folder, ckpt.META)
    with open(meta_file, "rb") as f:
        fingerprint = "megasnow-" + hashlib.sha256(f.read()).hexdigest()[:12]
    return model.to(device=device, dtype=dtype).eval(), folder, fingerprint


def read_tokenizer_files(folder, tokenizer=None, chat_template=None):
    """The tokenizer, chat template and EOS ids of a model folder.

    tokenizer: a tokenizer file/folder overriding the folder's own; chat_template: a Jinja file or the template
    text itself, overriding tokenizer_config.json's `chat_template` (or `chat_template.jinja`). EOS ids: the
    tokenizer_config.json `eos_token`, generation_config.json / config.json `eos_token_id` (int or list) and the
    tokenizer's end-of-document token, whichever exist.
    """
    from megasnow.data import special_tokens
    from megasnow.data.tokenizer import TokenizerError, load_tokenizer

    tok_path = tokenizer
    if tok_path is None:
        tok_path = next((os.path.join(folder, n) for n in TOKENIZER_FILES if os.path.exists(os.path.join(folder, n))),
                        None)
    if tok_path is None:
        raise ModelLoadError(f"{folder}: holds no tokenizer.json / tokenizer.model; pass --tokenizer")
    tok = load_tokenizer(tok_path)
    tok_folder = tok_path if os.path.isdir(tok_path) else os.path.dirname(tok_path)
    config = read_json(os.path.join(tok_folder, "tokenizer_config.json"), ModelLoadError) or read_json(
        os.path.join(folder, "tokenizer_config.json"), ModelLoadError)

    template = config.get("chat_template")
    if isinstance(template, list):  # HF allows named templates; the default one is what clients expect
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    for base in (tok_folder, folder):
        jinja_file = os.path.join(base, "chat_template.jinja")
        if template is None and os.path.exists(jinja_file):
            with open(jinja_file, encoding="utf-8") as f:
                template = f.read()
    if chat_template is not None:
        if os.path.exists(chat_template):
            with open(chat_template, encoding="utf-8") as f:
                template = f.read()
        elif "{" in chat_template:
            template = chat_template
        else:
            raise ModelLoadError(f"--chat-template {chat_template!r}: no such file (nor Jinja template text)")

    special = {k: token_text(config.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    special = {k: v for k, v in special.items() if v}
    eos = []
    if special.get("eos_token") is not None:
        eos.append(tok.token_to_id(special["eos_token"]))
    for name in ("generation_config.json", "config.json"):
        value = read_json(os.path.join(folder, name), ModelLoadError).get("eos_token_id")
        eos.extend(value if isinstance(value, list) else [value])
    try:
        eos.append(tok.eod_id)
    except TokenizerError:
        pass
    eos.append(tok.token_to_id(special_tokens.EOD))  # the StarCoder-style separator, wherever eod_id points
    eos_ids = tuple(sorted({int(i) for i in eos if i is not None}))
    bos_id = tok.token_to_id(special["bos_token"]) if "bos_token" in special else None
    return TokenizerFiles(tok, template, eos_ids, special, bool(config.get("add_bos_token")), bos_id)


@dataclass(frozen=True)
class TrainedFim:
    """What a model folder records about its fill-in-the-middle training.

    trained: True (data.fim.rate > 0), False (recorded as off: rate 0 or no data.fim in a training config) or None
    (nothing recorded: a HF model from elsewhere, an imported checkpoint, or a run started from an init_from whose
    state is unknown); format: 'spm' for spm_rate 1, else 'psm' (StarCoder's default order, also for both orders);
    source: the file it was read from (for messages), or None; settings: the recorded {rate, spm_rate, level}."""

    trained: Optional[bool] = None
    format: str = "psm"
    source: Optional[str] = None
    settings: dict = field(default_factory=dict)


GENERATION_FIM_KEY = "fim"  # generation_config.json's entry that an export writes (transformers keeps it)


def _fim_state(fim, source):
    if fim is None:  # a training config without data.fim: trained before FIM existed, i.e. without it
        return TrainedFim(False, "psm", source, {})
    try:
        rate, spm_rate = float(fim.get("rate", 0) or 0), float(fim.get("spm_rate", 0) or 0)
    except (TypeError, ValueError, AttributeError):
        return TrainedFim(source=source)
    settings = {"rate": rate, "spm_rate": spm_rate, "level": fim.get("level", "file")}
    return TrainedFim(rate > 0, "spm" if rate > 0 and spm_rate >= 1.0 else "psm", source, settings)


def trained_fim(folder, _depth=0):
    """The TrainedFim of a model folder (a checkpoint step folder or a HF folder).

    Read from the training config a megasnow checkpoint keeps (config.yaml: data.fim; a run with rate 0 started
    from checkpoint.init_from takes that checkpoint's state, unknown when it cannot be read), else from the `fim`
    entry of generation_config.json that tools/convert_checkpoint.py export writes (and import copies back). A file
    that cannot be read counts as nothing recorded."""
    import yaml

    config_file = os.path.join(folder, "config.yaml")
    try:
        with open(config_file, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        config = None
    if isinstance(config, dict) and isinstance(config.get("data"), dict):  # a training config (it has data:)
        state = _fim_state(config["data"].get("fim"), config_file)
        if state.trained is False:
            init_from = (config.get("checkpoint") or {}).get("init_from") \
                if isinstance(config.get("checkpoint"), dict) else None
            if init_from:  # fine-tuned without FIM from weights that may have learnt it
                from megasnow.convert.output_folder import step_folder

                try:
                    base = step_folder(str(init_from))
                except OSError:
                    base = None
                return trained_fim(base, _depth + 1) if base and _depth < 8 else TrainedFim(source=config_file)
        return state
    generation_file = os.path.join(folder, "generation_config.json")
    try:
        with open(generation_file, encoding="utf-8") as f:
            fim = json.load(f).get(GENERATION_FIM_KEY)
    except (OSError, ValueError, AttributeError):
        fim = None
    return _fim_state(fim, generation_file) if isinstance(fim, dict) else TrainedFim()


def not_trained_message(name, state, field="suffix", instead="use a model trained with data.fim.rate > 0"):
    """Why a fill-in-the-middle request (its `field`: 'suffix', '--suffix', '--infill') is refused for a model
    whose TrainedFim says FIM was off; `instead`: what else to do."""
    file = os.path.basename(state.source or "config.yaml")
    if file == "generation_config.json":
        why = "its generation_config.json `fim` entry records data.fim.rate 0"
    else:
        why = f"data.fim.rate is 0 in its {file}" if state.settings else f"its {file} has no data.fim"
    return (f"model {name} was not trained with fill-in-the-middle ({why}); it never saw the FIM sentinels, so "
            f"its middle would be noise: leave {field} out, or {instead}")


def trained_fim_format(folder):
    """'spm' for a model trained with fill-in-the-middle in suffix-prefix-middle order only (data.fim.rate > 0 and
    data.fim.spm_rate == 1, as trained_fim reads it), else 'psm' (StarCoder's default order, and what a model
    trained with both orders or a HF folder without a recorded format gets)."""
    return trained_fim(folder).format
