"""A tiny random megasnow checkpoint with a real byte-level BPE tokenizer and a ChatML chat template.

A complete model folder in about a second, for tests, benchmarks and demos of the generation stack (server,
synthesis, evaluation) where a trained model would be too slow: its text is gibberish, but every code path
(tokenizer, chat template, EOS ids, checkpoint loading, batching) is the real one.
"""
import glob
import json
import os

from megasnow.data import special_tokens

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# ChatML, the format of SmolLM2-Instruct and many other instruct models.
CHATML_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
                   "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                   "{% endif %}")


def training_texts(limit=40):
    """Source files of the Python standard library (present wherever Python is): real code to train on."""
    files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:limit]
    texts = []
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    return texts


def train_byte_level_bpe(texts, vocab_size=512):
    """A `tokenizers.Tokenizer` (byte-level BPE, GPT-2 style) with megasnow's special tokens plus ChatML's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens.SPECIAL_TOKENS
                                  + [IM_START, IM_END], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def write_tiny_checkpoint(out_dir, seed=0, vocab_size=512, hidden_size=64, num_layers=2, max_seq_len=1024,
                          init_std=0.5, **shape):
    """Write a megasnow checkpoint (step 0) of a random tiny GQA model plus tokenizer.json,
    tokenizer_config.json (ChatML template, EOS `<|im_end|>`) and generation_config.json; returns the step
    folder. init_std 0.5 makes the random model's greedy choices decisive, so outputs are not one repeated token.
    `shape` overrides other ModelConfig fields (num_heads, num_kv_heads, ffn_hidden_size) for benchmark sizes.
    """
    import tempfile

    from megasnow.convert.hf_llama import write_single_rank_checkpoint
    from megasnow.model.config import get_preset
    from megasnow.model.llama import LlamaModel
    from megasnow.utils.atomic import atomic_write_text

    tok = train_byte_level_bpe(training_texts(), vocab_size)
    cfg = get_preset("tiny-gqa", vocab_size=tok.get_vocab_size(), hidden_size=hidden_size, num_layers=num_layers,
                     max_seq_len=max_seq_len, init_std=init_std, kernels="reference", **shape)
    model = LlamaModel(cfg, init_seed=seed)
    eod, im_end = tok.token_to_id(special_tokens.EOD), tok.token_to_id(IM_END)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save(os.path.join(tmp, "tokenizer.json"))
        atomic_write_text(os.path.join(tmp, "tokenizer_config.json"), json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": IM_START, "eos_token": IM_END,
            "pad_token": special_tokens.PAD, "add_bos_token": False, "add_eos_token": False,
            "clean_up_tokenization_spaces": False, "model_max_length": max_seq_len,
            "chat_template": CHATML_TEMPLATE}, indent=2))
        atomic_write_text(os.path.join(tmp, "generation_config.json"),
                          json.dumps({"eos_token_id": [eod, im_end]}, indent=2))
        extra = {name: os.path.join(tmp, name)
                 for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json")}
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return write_single_rank_checkpoint(out_dir, cfg, state, extra, source=f"tiny random model, seed {seed}")
