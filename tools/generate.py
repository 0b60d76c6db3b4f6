#!/usr/bin/env python
"""Sample code from a megasnow checkpoint or a HuggingFace Llama folder with megasnow's local generation engine.

  python tools/generate.py --checkpoint runs/x/ckpt --prompt 'def fibonacci(n):' --max-new-tokens 64
  python tools/generate.py --hf hf/x --prompts-file prompts.jsonl --output out.jsonl --temperature 0.8 --top-p 0.95
  python tools/generate.py --checkpoint runs/x/ckpt --prompt 'def area(w, h):' --suffix $'\nprint(area(2, 3))\n'

--suffix (or a 'suffix' field in --prompts-file) asks for fill-in-the-middle: the output is the middle between the
prompt and the suffix, laid out in the format the checkpoint was trained with (--fim-format to override).

A bad --prompt (empty, or too long for the model's context with --max-new-tokens) is an error (exit 2); a bad line
of --prompts-file is reported as a warning naming file:line and skipped, and the other prompts are still answered.
"""
import json
import os
import sys
import time

from megasnow.utils.cli import ArgumentParser, fail, run_tool, warn  # light: torch is imported after parsing


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="run checkpoint folder (uses `latest`) or a step folder")
    src.add_argument("--hf", help="HuggingFace LlamaForCausalLM folder")
    p.add_argument("--tokenizer", help="tokenizer file (default: the one stored with the checkpoint / HF folder)")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--suffix", action="append", default=[],
                   help="fill-in-the-middle: the text after the gap, for the --prompt of the same position "
                        "(repeatable, one per --prompt; the model writes the middle)")
    p.add_argument("--prompts-file", help="JSONL (.gz/.zst too) with a 'prompt' string field per line "
                                          "(and an optional 'suffix' string: fill-in-the-middle)")
    p.add_argument("--fim-format", choices=["psm", "spm"], default=None,
                   help="layout of fill-in-the-middle prompts (default: the format the checkpoint was trained with)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt at most (>= 0)")
    p.add_argument("--min-new-tokens", type=int, default=0,
                   help="no EOS before this many new tokens (HF's min_new_tokens), so no completion is empty")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature, 0 = greedy (>= 0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1]")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0 or -1: all)")
    p.add_argument("--min-p", type=float, default=0.0,
                   help="drop tokens less likely than min-p x the most likely one's probability, in [0, 1]")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable), cut from the output")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (greedy ignores it)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts generated together")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (cuda when available)")
    p.add_argument("--output", help="write JSONL {prompt, completion, tokens} here instead of printing")
    return p


def check_sampling_args(args):
    """Flag values the generator would reject, as one-line errors naming the flag (before any model loads)."""
    if args.max_new_tokens < 0:
        fail(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if not 0 <= args.min_new_tokens <= max(args.max_new_tokens, 1):
        fail(f"--min-new-tokens must be in [0, --max-new-tokens {args.max_new_tokens}], got {args.min_new_tokens}")
    if args.temperature < 0:
        fail(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if not 0.0 < args.top_p <= 1.0:
        fail(f"--top-p must be in (0, 1] (1 = no nucleus cut), got {args.top_p}")
    if args.top_k < -1:
        fail(f"--top-k must be >= 1, or 0 or -1 for all tokens (vLLM's convention), got {args.top_k}")
    if not 0.0 <= args.min_p <= 1.0:
        fail(f"--min-p must be in [0, 1] (0 = off), got {args.min_p}")
    if args.batch_size < 1:
        fail(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.suffix and len(args.suffix) != len(args.prompt):
        from megasnow.utils.progress import unit_for

        times = f"{len(args.suffix)} {unit_for(len(args.suffix), 'times')}"
        fail(f"--suffix given {times} for {len(args.prompt)} --prompt: each --suffix belongs to the "
             f"--prompt of the same position, so give one per --prompt (--suffix '' fills in at the end), or put "
             f"the prompts in --prompts-file with a 'suffix' field where one is wanted")
    for flag, path in (("--checkpoint", args.checkpoint), ("--hf", args.hf), ("--tokenizer", args.tokenizer),
                       ("--prompts-file", args.prompts_file)):
        if path and not os.path.exists(path):
            fail(f"{flag} {path}: no such file or folder")


def read_prompts(args):
    """[(where, prompt text, suffix or None)]: --prompt values first ("--prompt", or "--prompt N" when several are
    given, with the --suffix of the same position), then the file's lines ("FILE:LINE").

    Malformed file lines (not JSON, no 'prompt' string, empty, a 'suffix' that is not a string) are warned about
    and skipped; the skipped count is returned too. An empty --prompt is an error: the user typed it.
    """
    from megasnow.utils.records import ReadReport, read_shards

    prompts = []
    for i, text in enumerate(args.prompt, 1):
        suffix = args.suffix[i - 1] if i <= len(args.suffix) else None
        where = f"--prompt {i}" if len(args.prompt) > 1 else "--prompt"  # a number only tells several apart
        if not text and suffix is None:  # an infilling prefix may be empty (the cursor at the top of a file)
            fail(f"{where} is empty: give at least one character of prompt")
        prompts.append((where, text, suffix))
    skipped = 0
    if args.prompts_file:
        report = ReadReport()
        for path, line, rec in read_shards([args.prompts_file], report, on_damaged=lambda d: warn(d.describe())):
            text, suffix = rec.get("prompt"), rec.get("suffix")
            if not isinstance(text, str) or (not text and suffix is None) or not isinstance(suffix, (str, type(None))):
                what = "an empty 'prompt'" if text == "" else "no 'prompt' string field" \
                    if not isinstance(text, str) else f"a 'suffix' that is not a string ({type(suffix).__name__})"
                warn(f"{path}:{line}: {what}; skipped")
                skipped += 1
                continue
            prompts.append((f"{path}:{line}", text, suffix))
        for example in report.skips.examples:
            warn(f"{example}; skipped")
        skipped += report.skips.total
    return prompts, skipped


def load_engine(args, device):
    """The LocalEngine (megasnow.generation.local: the one generation implementation the server, synthesis and
    evaluation share) for --checkpoint / --hf, with the folder's tokenizer, EOS ids and BOS rule."""
    from megasnow.generation.local import LocalEngine

    return LocalEngine.from_path(args.checkpoint or args.hf, device=device, tokenizer=args.tokenizer,
                                 max_num_seqs=args.batch_size, fim_format=args.fim_format)


def prepare_prompts(prompts, engine, args):
    """[(where, text, suffix, PreparedRequest)] of the prompts the model can run; a --prompt that it cannot is an
    error, a file line that it cannot is warned about and skipped. Returns (kept, skipped)."""
    from megasnow.generation.local import BadRequestError
    from megasnow.generation.protocol import GenerationRequest, SamplingParams

    params = SamplingParams(max_tokens=max(args.max_new_tokens, 1), temperature=args.temperature, top_p=args.top_p,
                            stop=tuple(args.stop), seed=args.seed, top_k=args.top_k, min_p=args.min_p,
                            min_tokens=args.min_new_tokens)  # (check_sampling_args: <= max(max_new_tokens, 1))
    kept, skipped = [], 0
    for where, text, suffix in prompts:
        problem, prepared = None, None
        try:
            ids = engine.encode(text) if suffix is None else engine.fim_prompt_ids(text, suffix)
            if len(ids) + args.max_new_tokens > engine.max_model_len:
                size, shorten = f"is {len(ids)} tokens", "shorten it"
                if suffix is not None:  # the suffix counts too: name both parts (and the sentinels) of the FIM prompt
                    p, s = len(engine.tokenizer.encode(text)) if text else 0, \
                        len(engine.tokenizer.encode(suffix)) if suffix else 0
                    extra = len(ids) - p - s - 3
                    bos = f" + {extra} BOS" if extra else ""
                    size = f"with its {'--suffix' if where.startswith('--prompt') else 'suffix'} is {len(ids)} " \
                           f"tokens (prompt {p} + suffix {s} + 3 FIM sentinels{bos})"
                    shorten = "shorten them"
                problem = (f"{size}; with --max-new-tokens {args.max_new_tokens} that exceeds the model's context "
                           f"of {engine.max_model_len} tokens ({shorten} or lower --max-new-tokens)")
            else:
                prepared = engine.prepare(GenerationRequest(id=where, prompt=text, suffix=suffix, params=params),
                                          prompt_ids=ids)
        except BadRequestError as e:
            problem = f"cannot run: {e}"
        if prepared is not None:
            kept.append((where, text, suffix, prepared))
        elif where.startswith("--prompt"):
            fail(f"{where} {problem}")
        else:
            warn(f"{where}: the prompt {problem}; skipped")
            skipped += 1
    return kept, skipped


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.prompt and not args.prompts_file:
        parser.error("give --prompt TEXT or --prompts-file FILE")
    check_sampling_args(args)
    prompts, skipped = read_prompts(args)
    if not prompts:
        fail(f"no usable prompt in {args.prompts_file} (every line was skipped)")

    from megasnow.utils.device import resolve_device
    from megasnow.utils.progress import Progress, format_rate

    device = resolve_device(args.device, "--device")
    engine = load_engine(args, device)
    infill = next((where for where, _, suffix in prompts if suffix is not None), None)
    fim_source = "--suffix" if infill is not None and infill.startswith("--prompt") else "a 'suffix' field"
    if infill is not None and engine.fim_trained is not None and engine.fim_trained.trained is False:
        from megasnow.generation.model_files import not_trained_message

        fail(f"{infill}: {fim_source} asks for fill-in-the-middle, but "
             + not_trained_message(args.checkpoint or args.hf, engine.fim_trained,
                                  "--suffix" if fim_source == "--suffix" else "the 'suffix' fields",
                                   "use a checkpoint trained with data.fim.rate > 0"))
    if infill is not None and engine.tokenizer.fim_tokens() is None:
        fail(f"{infill}: a suffix asks for fill-in-the-middle, which needs a tokenizer with FIM tokens (<fim_prefix>, "
             f"<fim_suffix>, <fim_middle> or another family's); the tokenizer of {args.checkpoint or args.hf} has "
             f"none: leave the suffix out")
    kept, unusable = prepare_prompts(prompts, engine, args)
    skipped += unusable
    if not kept:
        fail(f"no prompt of {args.prompts_file} fits the model's context of {engine.max_model_len} tokens")
    specs = [prepared.specs[0] for *_, prepared in kept]
    outputs, new_tokens, start = [None] * len(kept), 0, time.perf_counter()
    with Progress(total=len(kept), desc="generate", unit="prompts", mode="auto") as progress:
        for batch in engine.plan_batches(specs):
            sequences = []
            if args.max_new_tokens > 0:
                for sequences in engine.run_batch([specs[i] for i in batch]):
                    pass
            for k, i in enumerate(batch):
                tokens = list(sequences[k].tokens) if sequences else []
                text = sequences[k].text if sequences else ""
                outputs[i] = {"prompt": kept[i][1], "completion": text, "tokens": tokens,
                              "finish_reason": sequences[k].finish_reason if sequences else "length"}
                if kept[i][2] is not None:
                    outputs[i]["suffix"] = kept[i][2]
                new_tokens += len(tokens)
            progress.update(len(batch))
    seconds = time.perf_counter() - start
    if args.output:
        from megasnow.utils.atomic import atomic_write_text

        atomic_write_text(args.output, "".join(json.dumps(r) + "\n" for r in outputs))
    else:
        for r in outputs:  # a fill-in-the-middle answer is shown in place, between its prompt and suffix
            print(r["prompt"] + r["completion"] + r.get("suffix", ""))
            print("-" * 40)
    where = f" to {args.output}" if args.output else ""
    print(f"wrote {len(outputs)} completions{where} ({new_tokens:,} new tokens, "
          f"{format_rate(new_tokens, seconds, 'tokens')}); {skipped} prompts skipped",
          file=sys.stderr if not args.output else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, prog="generate.py"))
