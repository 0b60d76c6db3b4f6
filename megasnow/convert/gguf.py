"""Import a GGUF file (llama.cpp's format, e.g. SmolLM2-135M-Instruct.Q4_1.gguf) as a megasnow checkpoint.

transformers reads the file (needs the `gguf` package) and dequantizes it to fp32; it refuses `save_pretrained` on
the result, so we convert its state dict with hf_llama's name mapping. The checkpoint's step folder also holds the
HF tokenizer files (tokenizer.json; tokenizer_config.json with the chat template, BOS/EOS; special_tokens_map.json;
generation_config.json), so it loads as a tokenizer folder too.
"""
import contextlib
import json
import os
import tempfile
import threading
import time

from megasnow.convert.errors import ConversionError  # light: the file is checked before torch loads

GGUF_MAGIC = b"GGUF"
HEARTBEAT_S = 15.0  # a slow step logs "still ..." this often (no step silent for more than ~30 s)


def check_gguf_file(path, parse=True):
    """Refuse a path that is not a complete GGUF file, naming it; returns its tensor count.

    The magic (b"GGUF", ggml's docs/gguf.md) is checked first; then the `gguf` package's reader parses the header
    (memory-mapped: 1.5-6 s for SmolLM2 on 2 busy cores, against the 40-70 s of transformers' read) and the
    tensors' extents are checked against the file size, so a download cut short fails here in one line instead of
    in transformers' read with a traceback or a reshape message; `parse=False` stops after the magic (returns
    None). Imports numpy and gguf only. Raises ConversionError."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        header = f.read(16)
    if not header:
        raise ConversionError(f"{path}: empty file (0 bytes); re-download it")
    if len(header) < len(GGUF_MAGIC) and GGUF_MAGIC.startswith(header):
        raise ConversionError(f"{path}: truncated GGUF file ({len(header)} bytes); re-download it")
    if header[:4] != GGUF_MAGIC:
        raise ConversionError(f"{path}: not a GGUF file (starts with {header[:4]!r}, expected {GGUF_MAGIC!r})")
    if not parse:  # the cheap checks only (the tool runs them before its output checks, the parse after)
        return None
    size = os.path.getsize(path)
    try:
        reader = _extent_reader_class()(path)
    except Exception as e:  # noqa: BLE001 - the reader indexes past the end (IndexError, ValueError, ...) of a cut file
        # The reader's own message is numpy's ("When changing to a larger dtype, its size must be a divisor ..."):
        # nothing a user can act on, so the line names the file and the fix only (--debug shows the cause).
        raise ConversionError(f"{path}: truncated or damaged GGUF file ({size} bytes; its header cannot be read); "
                              f"re-download it") from e
    if reader.tensor_extent > size:
        raise ConversionError(f"{path}: truncated GGUF file ({size} bytes, tensors need {reader.tensor_extent}); "
                              f"re-download it")
    return reader.tensor_count


def _extent_reader_class():
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

    class ExtentReader(GGUFReader):
        """GGUFReader that records where the tensor data ends (`tensor_extent`, bytes) and `tensor_count` instead
        of mapping every tensor as an array (which fails with a reshape error on a cut file)."""

        def _build_tensors(self, start_offs, fields):
            self.tensor_count, self.tensor_extent = len(fields), int(start_offs)
            for field in fields:
                _name_len, _name, _n_dims, dims, raw_dtype, offset = field.parts
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(int(raw_dtype[0]))]
                n_elems = 1
                for d in dims.tolist():
                    n_elems *= int(d)
                end = int(start_offs) + int(offset[0]) + n_elems * type_size // block
                self.tensor_extent = max(self.tensor_extent, end)

    return ExtentReader


@contextlib.contextmanager
def heartbeat(log, what, every=HEARTBEAT_S):
    """Log `still {what} (N s)` every `every` seconds while the block runs (a slow call without progress); `what`
    may be a callable returning the phase text at that moment."""
    stop, start = threading.Event(), time.time()

    def beat():
        while not stop.wait(every):
            log(f"still {what() if callable(what) else what} ({time.time() - start:.0f} s)")

    thread = threading.Thread(target=beat, name="gguf-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def load_gguf(path, log=lambda message: None):
    """(transformers model in fp32, eval mode; its tokenizer) read from a GGUF file (40-70 s for SmolLM2-135M
    on 2 cores). `log` gets a line before each slow step and a heartbeat while it runs."""
    tensors = check_gguf_file(path)
    log(f"reading {path} with transformers: the tokenizer, then {tensors} tensors dequantized to fp32 "
        f"(40-70 s for a 135M model on 2 cores, longer beside other jobs; a line every "
        f"{HEARTBEAT_S:.0f} s meanwhile)...")
    with heartbeat(log, "loading transformers"):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # its tqdm bars would interleave with the lines below (the heartbeat's)

    folder, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    # Most of the call is transformers parsing the GGUF metadata (config, tensor list) before the dequantization.
    phase = [f"reading the GGUF metadata (the config and the list of {tensors} tensors)"]
    try:
        with heartbeat(log, "reading the GGUF tokenizer"):
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        log(f"tokenizer read ({len(tokenizer)} tokens); dequantizing {tensors} tensors, then building the model "
            f"from them...")
        with heartbeat(log, lambda: phase[0]), counted_dequantization(phase):
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)  # dequantized to fp32
    except (ValueError, KeyError, OSError, NotImplementedError) as e:
        raise ConversionError(f"{path}: transformers cannot read it ({type(e).__name__}: {e})") from None
    return model.eval(), tokenizer


@contextlib.contextmanager
def counted_dequantization(phase):
    """While the block runs, transformers' per-tensor GGUF loop (modeling_gguf_pytorch_utils' own tqdm bar, which
    disable_progress_bar does not reach) runs without a bar and keeps `phase[0]` saying where it is: "dequantizing
    tensors (i/n)", then "building the model from the dequantized tensors" once the loop ends. A transformers
    version without that loop leaves everything as is (the heartbeat keeps the phase it started with)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        gguf_utils = None
    original = getattr(gguf_utils, "tqdm", None)

    def quiet(iterable, *args, **kwargs):
        items = list(iterable)
        for i, item in enumerate(items):
            phase[0] = f"dequantizing tensors ({i}/{len(items)} done)"
            yield item
        phase[0] = f"building the model from the {len(items)} dequantized tensors"

    if original is not None:
        gguf_utils.tqdm = quiet
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original


def float32_as_written(x):
    """The shortest decimal that reads back as the same float32 (numpy's repr), as a Python float: a GGUF stores
    its float metadata as float32, so 1e-05 comes back as 9.999999747378752e-06; other values pass unchanged."""
    import numpy as np

    f32 = np.float32(x)
    return float(str(f32)) if float(f32) == x else x


def tokenizer_config(hf_tokenizer, max_len):
    """tokenizer_config.json contents: special tokens, BOS policy and the chat template from the GGUF metadata."""
    add_bos = bool(getattr(hf_tokenizer, "add_bos_token", False))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": add_bos, "add_eos_token": False,
              "clean_up_tokenization_spaces": False, "model_max_length": max_len}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = getattr(hf_tokenizer, key, None)
        if value is not None:
            config[key] = str(value)
    template = getattr(hf_tokenizer, "chat_template", None)
    if template:
        config["chat_template"] = template
    return config


def import_from_gguf(gguf_path, out_dir, loaded=None, log=print, overwrite=False):
    """Write a megasnow checkpoint (tensor 1 x pipeline 1, step 0, fp32) with the GGUF's tokenizer files
    (tokenizer.json, tokenizer_config.json, special_tokens_map.json, generation_config.json).

    loaded: (hf_model, hf_tokenizer) already returned by load_gguf (saves the 40-70 s read). A non-empty `out_dir`
    is refused before the read unless `overwrite`, which deletes what it held. Returns a summary dict (source, out
    step folder, tensors, parameters, eos ids, whether a chat template was found). Raises ConversionError for a
    file that is not GGUF, not a Llama architecture, or unreadable, and for a non-empty `out_dir`.
    """
    from megasnow.convert.output_folder import check_output, conversion_record

    check_output(out_dir, overwrite)  # before the slow read
    from megasnow.convert.hf_llama import hf_to_megasnow, model_config_from_hf, write_single_rank_checkpoint
    from megasnow.convert.hf_tokenizer import special_tokens_map

    start = time.time()
    if loaded is None:
        loaded = load_gguf(gguf_path, log)
    hf_model, hf_tokenizer = loaded
    hf_config = hf_model.config.to_dict()
    for key in ("rms_norm_eps", "rope_theta"):  # stored as float32: 1e-05 was read back as 9.999999747378752e-06
        if isinstance(hf_config.get(key), float):
            hf_config[key] = float32_as_written(hf_config[key])
    model_cfg = model_config_from_hf(hf_config, gguf_path)
    hf_state = {k: v.detach().float().contiguous() for k, v in hf_model.state_dict().items()}
    state = hf_to_megasnow(hf_state, model_cfg, gguf_path)
    eos = {hf_tokenizer.convert_tokens_to_ids(hf_tokenizer.eos_token)} if hf_tokenizer.eos_token else set()
    gen_eos = hf_config.get("eos_token_id")
    eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    eos_ids = sorted(int(i) for i in eos if i is not None)
    config = tokenizer_config(hf_tokenizer, model_cfg.max_seq_len)
    texts = {"tokenizer_config.json": json.dumps(config, indent=2),
             "special_tokens_map.json": json.dumps(special_tokens_map(config), indent=2),
             "generation_config.json": json.dumps({"bos_token_id": hf_config.get("bos_token_id"),
                                                   "eos_token_id": eos_ids,
                                                   "pad_token_id": hf_config.get("pad_token_id")}, indent=2)}
    with tempfile.TemporaryDirectory() as tmp:
        hf_tokenizer.backend_tokenizer.save(os.path.join(tmp, "tokenizer.json"))
        log(f"writing the checkpoint to {out_dir}...")
        step_dir = write_single_rank_checkpoint(out_dir, model_cfg, state, {"tokenizer.json": os.path.join(
            tmp, "tokenizer.json")}, source=os.path.abspath(gguf_path), texts=texts, overwrite=overwrite,
            conversion=conversion_record("import --gguf", gguf_path))
    summary = {"source": gguf_path, "out": step_dir, "tensors": len(state),
               "parameters": sum(t.numel() for k, t in hf_state.items() if k != "lm_head.weight" or
                                 not model_cfg.tie_embeddings),
               "layers": model_cfg.num_layers, "vocab_size": model_cfg.vocab_size, "eos_token_ids": eos_ids,
               "chat_template": "chat_template" in config, "seconds": round(time.time() - start, 1)}
    return summary
