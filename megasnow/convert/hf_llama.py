"""Convert between megasnow checkpoints and HuggingFace `LlamaForCausalLM` folders (config.json, model.safetensors,
tokenizer files). Both use HF's rotate_half RoPE layout, so q/k rows need no permutation; the fused qkv and
gate/up projections are split (export) or fused (import), tensor-parallel shards merged, vocabulary padding cut."""
import dataclasses
import json
import os
import shutil

import torch

from megasnow.convert.errors import ConversionError  # noqa: F401 - defined there (light), raised here
from megasnow.train import checkpoint as ckpt
from megasnow.utils.atomic import atomic_write_text


# ----------------------------------------------------------------------------- megasnow checkpoint -> full state
# How each megasnow parameter is split over tensor-parallel ranks: (dim, fused partition names).
_COLUMN_FUSED = {"attn.qkv_proj.weight": ("q", "k", "v"), "mlp.gate_up_proj.weight": ("gate", "up")}
_ROW = ("attn.o_proj.weight", "mlp.down_proj.weight")
_VOCAB = ("embed.weight", "lm_head.weight")


def partition_sizes(model_cfg, suffix):
    d = model_cfg.head_dim
    if suffix == "attn.qkv_proj.weight":
        return [model_cfg.num_heads * d, model_cfg.num_kv_heads * d, model_cfg.num_kv_heads * d]
    return [model_cfg.ffn_hidden_size, model_cfg.ffn_hidden_size]


def merge_tensor_parallel(name, shards, model_cfg):
    """The full tensor from its TP shards (each rank holds its own slice of every fused partition)."""
    if len(shards) == 1:
        return shards[0]
    for suffix in _COLUMN_FUSED:
        if name.endswith(suffix):
            tp = len(shards)
            sizes = [s // tp for s in partition_sizes(model_cfg, suffix)]
            parts = [s.split(sizes, dim=0) for s in shards]
            return torch.cat([torch.cat([p[i] for p in parts], dim=0) for i in range(len(sizes))], dim=0)
    if name.endswith(_ROW):
        return torch.cat(shards, dim=1)
    if name in _VOCAB:
        return torch.cat(shards, dim=0)
    return shards[0]  # replicated (norms)


def model_config_from_meta(meta, step_dir):
    from megasnow.model.config import ModelConfig

    if "model_config" not in meta:
        raise ConversionError(f"{step_dir}/meta.json has no model_config (checkpoint from an older megasnow?)")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    values = {k: v for k, v in meta["model_config"].items() if k in known}
    if "sequence_parallel" in values:
        values["sequence_parallel"] = False  # a merged, single-process model
    return ModelConfig(**values)


def load_full_state(path):
    """(ModelConfig, full unsharded state dict, step folder) from a megasnow checkpoint of any TP x PP layout."""
    step_dir = ckpt.resolve_checkpoint(path)
    meta = ckpt.read_meta(step_dir)
    model_cfg = model_config_from_meta(meta, step_dir)
    lay = meta["layout"]
    by_name = {}
    for pp in range(lay["pp_size"]):
        for tp in range(lay["tp_size"]):
            file = os.path.join(step_dir, ckpt.model_file(tp, pp))
            chunks = ckpt._torch_load(file)
            for chunk in chunks:
                for name, t in chunk.items():
                    by_name.setdefault(name, {}).setdefault(pp, {})[tp] = t
    state = {}
    for name, per_stage in by_name.items():
        # A tied embedding lives on the first and the last stage; the copies are equal, take the first.
        stage = min(per_stage)
        shards = [per_stage[stage][tp] for tp in sorted(per_stage[stage])]
        state[name] = merge_tensor_parallel(name, shards, model_cfg)
    return model_cfg, state, step_dir


# ----------------------------------------------------------------------------- name mapping
def megasnow_to_hf(state, model_cfg):
    """HF LlamaForCausalLM tensors from a full megasnow state dict (padding rows of the vocabulary cut)."""
    v = model_cfg.vocab_size
    q, k, _ = partition_sizes(model_cfg, "attn.qkv_proj.weight")
    out = {"model.embed_tokens.weight": state["embed.weight"][:v], "model.norm.weight": state["norm.weight"]}
    if not model_cfg.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"][:v]
    for i in range(model_cfg.num_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        qw, kw, vw = state[src + "attn.qkv_proj.weight"].split([q, k, k], dim=0)
        gate, up = state[src + "mlp.gate_up_proj.weight"].chunk(2, dim=0)
        out.update({
            dst + "input_layernorm.weight": state[src + "input_norm.weight"],
            dst + "self_attn.q_proj.weight": qw,
            dst + "self_attn.k_proj.weight": kw,
            dst + "self_attn.v_proj.weight": vw,
            dst + "self_attn.o_proj.weight": state[src + "attn.o_proj.weight"],
            dst + "post_attention_layernorm.weight": state[src + "post_attn_norm.weight"],
            dst + "mlp.gate_proj.weight": gate,
            dst + "mlp.up_proj.weight": up,
            dst + "mlp.down_proj.weight": state[src + "mlp.down_proj.weight"],
        })
    return {name: t.contiguous() for name, t in out.items()}


def hf_to_megasnow(hf, model_cfg, source=""):
    """A full megasnow state dict from HF tensors; vocabulary padding rows are zero (they never reach a logit)."""
    def get(name):
        if name not in hf:
            raise ConversionError(f"{source}: tensor {name!r} is missing")
        return hf[name]

    def pad_vocab(t, name):
        if t.shape[0] != model_cfg.vocab_size:
            raise ConversionError(f"{source}: {name} has {t.shape[0]} rows, config.json says vocab_size "
                                  f"{model_cfg.vocab_size}")
        out = torch.zeros(model_cfg.padded_vocab_size, t.shape[1], dtype=t.dtype)
        out[:t.shape[0]] = t
        return out

    state = {"embed.weight": pad_vocab(get("model.embed_tokens.weight"), "model.embed_tokens.weight"),
             "norm.weight": get("model.norm.weight")}
    if not model_cfg.tie_embeddings:
        state["lm_head.weight"] = pad_vocab(get("lm_head.weight"), "lm_head.weight")
    for i in range(model_cfg.num_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        state.update({
            dst + "input_norm.weight": get(src + "input_layernorm.weight"),
            dst + "attn.qkv_proj.weight": torch.cat([get(src + f"self_attn.{p}_proj.weight") for p in "qkv"], dim=0),
            dst + "attn.o_proj.weight": get(src + "self_attn.o_proj.weight"),
            dst + "post_attn_norm.weight": get(src + "post_attention_layernorm.weight"),
            dst + "mlp.gate_up_proj.weight": torch.cat([get(src + "mlp.gate_proj.weight"),
                                                        get(src + "mlp.up_proj.weight")], dim=0),
            dst + "mlp.down_proj.weight": get(src + "mlp.down_proj.weight"),
        })
    return state


def hf_config_dict(model_cfg, dtype="float32", bos_id=None, eos_id=None, pad_id=None):
    """config.json contents for LlamaForCausalLM, as `model.save_pretrained` writes them: transformers' own
    LlamaConfig, only the values that differ from its defaults (to_diff_dict), `dtype`; plus `rope_theta` at the
    top level, which transformers 4.x and vLLM versions read (5.x keeps it in rope_parameters)."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=model_cfg.vocab_size, hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.ffn_hidden_size, num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads, num_key_value_heads=model_cfg.num_kv_heads,
        head_dim=model_cfg.head_dim, max_position_embeddings=model_cfg.max_seq_len,
        rms_norm_eps=model_cfg.norm_eps, rope_theta=model_cfg.rope_base, hidden_act="silu",
        tie_word_embeddings=model_cfg.tie_embeddings, attention_bias=False, mlp_bias=False,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id,
    )
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.dtype = dtype
    d = cfg.to_diff_dict()
    d.setdefault("rope_theta", model_cfg.rope_base)  # read by older transformers / vLLM versions
    return d


def model_config_from_hf(d, source=""):
    from megasnow.model.config import ModelConfig

    if d.get("model_type") not in (None, "llama"):
        raise ConversionError(f"{source}: model_type is {d.get('model_type')!r}, only 'llama' converts")
    for key in ("attention_bias", "mlp_bias"):
        if d.get(key):
            raise ConversionError(f"{source}: {key} is true; megasnow's Llama has no biases")
    if d.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"{source}: hidden_act {d['hidden_act']!r}; megasnow uses SwiGLU (silu)")
    rope = d.get("rope_theta") or (d.get("rope_parameters") or {}).get("rope_theta") or 10000.0
    scaling = d.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type") or (d.get("rope_parameters") or {}).get("rope_type") or "default"
    if rope_type != "default":
        raise ConversionError(f"{source}: RoPE scaling {rope_type!r} is not supported")
    heads = d["num_attention_heads"]
    head_dim = d.get("head_dim") or d["hidden_size"] // heads
    if head_dim * heads != d["hidden_size"]:
        raise ConversionError(f"{source}: head_dim x heads != hidden_size; megasnow needs them equal")
    return ModelConfig(vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
                       ffn_hidden_size=d["intermediate_size"], num_layers=d["num_hidden_layers"], num_heads=heads,
                       num_kv_heads=d.get("num_key_value_heads") or heads,
                       max_seq_len=d.get("max_position_embeddings", 2048), rope_base=float(rope),
                       norm_eps=d.get("rms_norm_eps", 1e-6), tie_embeddings=bool(d.get("tie_word_embeddings")))


# ----------------------------------------------------------------------------- export / import
def export_to_hf(checkpoint_path, out_dir, dtype="float32", tokenizer=None, overwrite=False):
    """Write `out_dir` as a LlamaForCausalLM folder from a megasnow checkpoint; returns a summary dict.

    The folder is built under a temporary name and swapped in whole; a non-empty `out_dir` is refused
    (ConversionError) unless `overwrite`, which deletes what it held. bos/eos/pad ids in config.json and
    generation_config.json are those of the tokenizer_config.json written (hf_tokenizer.export_tokenizer);
    generation_config.json's eos_token_id keeps an imported model's own list (e.g. [eos, end-of-turn]); its `fim`
    entry records the checkpoint's FIM training (data.fim rate, spm_rate, level) when its config records it.
    """
    from megasnow.convert.output_folder import conversion_record, replace_folder, stamped

    step_dir = ckpt.resolve_checkpoint(checkpoint_path)
    tok_path = tokenizer or _checkpoint_tokenizer(step_dir)
    if tok_path:  # before the weights load (seconds to minutes): a tokenizer that does not fit fails at once
        vocab = model_config_from_meta(ckpt.read_meta(step_dir), step_dir).vocab_size
        check_tokenizer_vocab(
            tok_path, vocab, f"the vocab_size of --checkpoint {checkpoint_path}",
            f"--tokenizer {tokenizer}" if tokenizer else f"the checkpoint's tokenizer {tok_path}",
            f"pass the tokenizer the model was trained with (its ids >= {vocab} would index past the embedding)"
            + (", or leave --tokenizer out to use the checkpoint's own copy" if tokenizer else ""))
    model_cfg, state, step_dir = load_full_state(checkpoint_path)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    hf = {k: t.to(torch_dtype) for k, t in megasnow_to_hf(state, model_cfg).items()}
    with replace_folder(out_dir, overwrite) as tmp:
        tok_summary, ids, generation = {}, {}, {}
        if tok_path:
            from megasnow.convert.hf_tokenizer import export_tokenizer, read_json

            tok_summary, ids = export_tokenizer(tok_path, tmp)
            tok_folder = tok_path if os.path.isdir(tok_path) else os.path.dirname(os.path.abspath(tok_path))
            generation = read_json(os.path.join(tok_folder, "generation_config.json"))
        eos = _single(generation.get("eos_token_id")) if generation.get("eos_token_id") is not None else ids.get("eos")
        generation.update({"bos_token_id": ids.get("bos"), "eos_token_id": eos, "pad_token_id": ids.get("pad")})
        generation.pop("fim", None)  # the model's own FIM training is recorded, never a tokenizer folder's
        generation.update(_fim_entry(step_dir))
        atomic_write_text(os.path.join(tmp, "config.json"),
                          json.dumps(hf_config_dict(model_cfg, dtype, ids.get("bos"), eos, ids.get("pad")),
                                     indent=2, sort_keys=True))
        atomic_write_text(os.path.join(tmp, "generation_config.json"), json.dumps(generation, indent=2))
        record = stamped(conversion_record("export", step_dir, dtype=dtype, tokenizer=tokenizer))
        _save_safetensors(hf, os.path.join(tmp, "model.safetensors"),
                          {"format": "pt", "source": os.path.abspath(step_dir), "conversion": json.dumps(record)})
    return {"source": step_dir, "out": out_dir, "tensors": len(hf),
            "parameters": sum(t.numel() for t in hf.values()), **tok_summary,
            "special_token_ids": {k: ids.get(k) for k in ("bos", "eos", "pad")}}


def _fim_entry(step_dir):
    """{'fim': {rate, spm_rate, level}} of a checkpoint's recorded FIM training (model_files.trained_fim), for
    generation_config.json (transformers keeps unknown entries there), so generation on the exported folder lays
    out `suffix` prompts as trained and refuses them for a model trained without FIM; {} when nothing is recorded."""
    from megasnow.generation.model_files import GENERATION_FIM_KEY, trained_fim

    state = trained_fim(step_dir)
    return {} if state.trained is None else {GENERATION_FIM_KEY: state.settings or {"rate": 0.0}}


def check_tokenizer_vocab(tok_path, model_vocab, model_name, tokenizer_name, fix):
    """ConversionError when the tokenizer at `tok_path` has more ids than the model's vocabulary
    (megasnow.model.config.check_tokenizer_fits: the trainer's rule and wording)."""
    from megasnow.data.tokenizer import load_tokenizer
    from megasnow.model.config import check_tokenizer_fits

    check_tokenizer_fits(model_vocab, load_tokenizer(tok_path).vocab_size, model_name, tokenizer_name, fix,
                         ConversionError)


def _single(ids):
    """An eos_token_id list of one id as that id (HF writes both forms; transformers reads both)."""
    return ids[0] if isinstance(ids, list) and len(ids) == 1 else ids


def _save_safetensors(tensors, path, metadata):
    """safetensors' save_file, with the mode a plain open() gives (it leaves its output 0600 whatever the umask)."""
    from safetensors.torch import save_file

    from megasnow.utils.atomic import current_umask

    save_file(tensors, path, metadata=metadata)
    os.chmod(path, 0o666 & ~current_umask())


def _checkpoint_tokenizer(step_dir):
    for name in ("tokenizer.model", "tokenizer.json"):
        p = os.path.join(step_dir, name)
        if os.path.exists(p):
            return p
    return None


def read_safetensors(path):
    """All tensors of one .safetensors file ({name: CPU tensor}); the one reader of HF weights (import --hf,
    generate --hf, the server). A truncated, empty or otherwise damaged file raises ConversionError (a UserError)
    naming it, instead of safetensors' SafetensorError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        raise ConversionError(f"{path}: damaged safetensors file ({size} bytes; {e}); re-download or re-export "
                              f"it") from None


def read_hf_state(folder):
    """All tensors of a HF folder (single model.safetensors or a sharded index); ConversionError for a damaged
    file (read_safetensors) or a missing one."""
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single)
    if os.path.exists(index):
        try:
            with open(index, encoding="utf-8") as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConversionError(f"{index}: not a safetensors index ({type(e).__name__}: {e}); re-download or "
                                  f"re-export it") from None
        state = {}
        for name in files:
            state.update(read_safetensors(os.path.join(folder, name)))
        return state
    raise ConversionError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def import_from_hf(hf_dir, out_dir, tokenizer=None, overwrite=False):
    """Write a megasnow checkpoint (tensor 1 x pipeline 1, step 0) usable as checkpoint.init_from or to serve.

    The step folder gets the tokenizer (tokenizer.model, else tokenizer.json; or the `tokenizer` file given) and
    the files beside it that generation reads (hf_tokenizer.TOKENIZER_SIDE_FILES: tokenizer_config.json with the
    chat template and BOS/EOS, chat_template.jinja, special_tokens_map.json, generation_config.json). Without a
    generation_config.json, one is made from config.json's bos/eos/pad_token_id. A non-empty `out_dir` is refused
    (ConversionError) unless `overwrite`, which deletes what it held. Returns a summary dict.
    """
    from megasnow.convert.hf_tokenizer import TOKENIZER_SIDE_FILES
    from megasnow.convert.output_folder import check_output, conversion_record

    cfg_path = os.path.join(hf_dir, "config.json")
    if not os.path.exists(cfg_path):
        raise ConversionError(f"{hf_dir}: no config.json")
    with open(cfg_path, encoding="utf-8") as f:
        hf_config = json.load(f)
    model_cfg = model_config_from_hf(hf_config, cfg_path)
    if tokenizer and not os.path.isfile(tokenizer):
        raise ConversionError(f"--tokenizer {tokenizer}: no such file (give a tokenizer.json or a SentencePiece "
                              f".model)")
    own = [os.path.join(hf_dir, n) for n in ("tokenizer.model", "tokenizer.json")
           if os.path.exists(os.path.join(hf_dir, n))]
    tok_path = tokenizer or (own[0] if own else None)
    if tok_path:  # before the slow read
        check_tokenizer_vocab(
            tok_path, model_cfg.vocab_size, f"the vocab_size of --hf {hf_dir} (config.json)",
            f"--tokenizer {tokenizer}" if tokenizer else f"the folder's tokenizer {tok_path}",
            f"pass the tokenizer of that model (its ids >= {model_cfg.vocab_size} would index past the embedding)"
            + (", or leave --tokenizer out to use the folder's own" if tokenizer else ""))
    check_output(out_dir, overwrite)  # before the slow read
    state = hf_to_megasnow(read_hf_state(hf_dir), model_cfg, hf_dir)
    state = {k: v.float() for k, v in state.items()}
    extra = {}
    if tokenizer:  # stored under the name the checkpoint's readers look for (model_files.TOKENIZER_FILES)
        extra["tokenizer.json" if tokenizer.endswith(".json") else "tokenizer.model"] = tokenizer
    for name in ("tokenizer.model", "tokenizer.json"):
        if not extra and os.path.exists(os.path.join(hf_dir, name)):
            extra[name] = os.path.join(hf_dir, name)
    tok_folder = os.path.dirname(os.path.abspath(tokenizer)) if tokenizer else hf_dir
    for name in TOKENIZER_SIDE_FILES:
        if os.path.exists(os.path.join(tok_folder, name)):
            extra[name] = os.path.join(tok_folder, name)
    generation = None
    if "generation_config.json" not in extra:
        generation = {k: hf_config.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                      if hf_config.get(k) is not None}
    texts = {"generation_config.json": json.dumps(generation, indent=2)} if generation else None
    step_dir = write_single_rank_checkpoint(out_dir, model_cfg, state, extra, source=os.path.abspath(hf_dir),
                                            texts=texts, overwrite=overwrite,
                                            conversion=conversion_record("import --hf", hf_dir, tokenizer=tokenizer))
    return {"source": hf_dir, "out": step_dir, "tensors": len(state), "files": sorted(extra) +
            (["generation_config.json (from config.json)"] if generation else [])}


def write_single_rank_checkpoint(out_dir, model_cfg, state, extra_files=None, source=None, texts=None,
                                 overwrite=False, conversion=None):
    """A complete megasnow checkpoint folder holding only weights (no optimizer state) at step 0; returns the step
    folder. extra_files: {name in the step folder: file to copy}; texts: {name: text to write}. The run folder is
    built under a temporary name and swapped in whole: a non-empty `out_dir` (another run's checkpoint would
    otherwise get its `latest` moved to the imported weights) is refused (ConversionError) unless `overwrite`,
    which deletes what it held. conversion: output_folder.conversion_record of the import, stored (stamped) in
    meta.json so a rerun of the same command sees it finished."""
    from megasnow.convert.output_folder import replace_folder, stamped
    from megasnow.utils.atomic import atomic_write

    name = ckpt.step_dir_name(0)
    with replace_folder(out_dir, overwrite) as run_dir:
        step = os.path.join(run_dir, name)
        os.makedirs(step)
        with atomic_write(os.path.join(step, ckpt.model_file(0, 0))) as f:
            torch.save([state], f)
        for fname, src in (extra_files or {}).items():
            shutil.copyfile(src, os.path.join(step, fname))
        for fname, text in (texts or {}).items():
            atomic_write_text(os.path.join(step, fname), text)
        meta = {"step": 0, "reason": "import", "source": source, "format": 1, "num_chunks": 1,
                "layout": {"world": 1, "tp_size": 1, "pp_size": 1, "dp_size": 1},
                "model_config": dataclasses.asdict(model_cfg), "trainer": {"step": 0}}
        if conversion is not None:
            meta["conversion"] = stamped(conversion)
        atomic_write_text(os.path.join(step, ckpt.META), json.dumps(meta, indent=1, sort_keys=True))
        atomic_write_text(os.path.join(run_dir, ckpt.LATEST), name + "\n")
    return os.path.join(out_dir, name)


def build_megasnow_model(checkpoint_path, device="cpu", dtype=torch.float32):
    """A single-process LlamaModel with a checkpoint's weights (any layout), plus its step folder."""
    from megasnow.model.llama import LlamaModel

    model_cfg, state, step_dir = load_full_state(checkpoint_path)
    model = LlamaModel(model_cfg, init_seed=None)
    ckpt.load_model_state(model, state, step_dir)
    return model.to(device=device, dtype=dtype).eval(), step_dir
