#!/usr/bin/env python
"""Sample code from a megasnow checkpoint or a HuggingFace Llama folder with megasnow's KV-cache generator.

  python tools/generate.py --checkpoint runs/x/ckpt --prompt 'def fibonacci(n):' --max-new-tokens 64
  python tools/generate.py --hf hf/x --prompts-file prompts.jsonl --output out.jsonl --temperature 0.8 --top-p 0.95
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_model_and_tokenizer(checkpoint=None, hf=None, tokenizer=None, device="cpu"):
    """(LlamaModel in eval mode, Tokenizer) from a megasnow checkpoint or a HF folder."""
    import torch

    from megasnow.convert import hf_llama
    from megasnow.data.tokenizer import load_tokenizer
    from megasnow.model.llama import LlamaModel
    from megasnow.train import checkpoint as ckpt

    if checkpoint:
        model, folder = hf_llama.build_megasnow_model(checkpoint, device=device)
    else:
        with open(os.path.join(hf, "config.json"), encoding="utf-8") as f:
            model_cfg = hf_llama.model_config_from_hf(json.load(f), hf)
        model = LlamaModel(model_cfg, init_seed=None)
        ckpt.load_model_state(model, hf_llama.hf_to_megasnow(hf_llama.read_hf_state(hf), model_cfg, hf), hf)
        model = model.to(device=device, dtype=torch.float32).eval()
        folder = hf
    if tokenizer is None:
        for name in ("tokenizer.model", "tokenizer.json"):
            if os.path.exists(os.path.join(folder, name)):
                tokenizer = os.path.join(folder, name)
                break
    if tokenizer is None:
        raise FileNotFoundError(f"{folder}: holds no tokenizer.model / tokenizer.json; pass --tokenizer")
    return model, load_tokenizer(tokenizer)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="run checkpoint folder (uses `latest`) or a step folder")
    src.add_argument("--hf", help="HuggingFace LlamaForCausalLM folder")
    p.add_argument("--tokenizer", help="default: the one stored with the checkpoint / HF folder")
    p.add_argument("--prompt", action="append", default=[], help="repeatable")
    p.add_argument("--prompts-file", help="JSONL with a 'prompt' field per line")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable), cut from the output")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole sequence each step (reference)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--output", help="write JSONL {prompt, completion, tokens} here instead of printing")
    args = p.parse_args(argv)

    prompts = list(args.prompt)
    if args.prompts_file:
        with open(args.prompts_file, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        prompts.append(json.loads(line)["prompt"])
                    except (ValueError, KeyError) as e:
                        p.error(f"{args.prompts_file}:{i}: needs a JSON object with a 'prompt' field ({e})")
    if not prompts:
        p.error("give --prompt or --prompts-file")

    from megasnow.data.special_tokens import EOD
    from megasnow.model.generate import generate, truncate_at_stop_strings

    model, tok = load_model_and_tokenizer(args.checkpoint, args.hf, args.tokenizer, args.device)
    stop_ids = [tok.eod_id] if tok.token_to_id(EOD) is not None else []
    results = []
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start:start + args.batch_size]
        outs = generate(model, [tok.encode(x) for x in batch], args.max_new_tokens, temperature=args.temperature,
                        top_p=args.top_p, stop_ids=stop_ids, stop_strings=args.stop or None, tokenizer=tok,
                        use_cache=not args.no_cache, seed=args.seed)
        for prompt, ids in zip(batch, outs):
            results.append({"prompt": prompt, "completion": truncate_at_stop_strings(tok.decode(ids), args.stop),
                            "tokens": ids})
    if args.output:
        from megasnow.utils.atomic import atomic_write_text

        atomic_write_text(args.output, "".join(json.dumps(r) + "\n" for r in results))
        print(f"wrote {len(results)} completions to {args.output}")
    else:
        for r in results:
            print(r["prompt"] + r["completion"])
            print("-" * 40)
    return 0


def _cuda():
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
