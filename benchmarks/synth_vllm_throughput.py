"""GPU benchmark: synthesis output tokens/s through megasnow's vLLM backend (driver, cache and all) vs vLLM's own
offline throughput (`LLM.chat` on the same conversations), one engine, same model, same lengths, in one run.
Target: ours within 10% of vLLM's own.

python benchmarks/synth_vllm_throughput.py --model /models/Llama-3.1-8B-Instruct [--requests 2048]
    [--max-tokens 512] [--tensor-parallel-size 1] [--seeds phase2/selected]
Needs vLLM and an NVIDIA GPU (not available on the CPU machines this project is developed on: see
benchmarks/results/synthesis.md for its status). Both runs force exactly --max-tokens new tokens per request
(`ignore_eos`), so they do the same work whatever the model answers.
"""
import argparse
import json
import sys
import tempfile
import time


def seeds_for(args):
    from megasnow.synth.seeds import Seed

    if args.seeds:
        from megasnow.config import from_dict
        from megasnow.synth.config import SeedsConfig
        from megasnow.synth.seeds import plan_seeds

        return plan_seeds(from_dict(SeedsConfig, {"documents": args.seeds, "num_seeds": args.requests})).seeds
    return [Seed(f"d{i}#0", f"d{i}", "python", f"def step_{i}(state):\n    return state * {i} + 1\n", "bench:0")
            for i in range(args.requests)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--requests", type=int, default=2048)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--seeds", nargs="*", help="seed documents (default: synthetic one-function seeds)")
    args = p.parse_args()

    import vllm

    from megasnow.generation.vllm_backend import VLLMBackend
    from megasnow.synth.cache import ChunkWriter
    from megasnow.synth.config import SamplingConfig
    from megasnow.synth.driver import run_requests
    from megasnow.synth.plan import plan_requests
    from megasnow.synth.templates import DEFAULT_TEMPLATE, PromptTemplate

    llm = vllm.LLM(model=args.model, tensor_parallel_size=args.tensor_parallel_size, seed=0)
    planned = plan_requests(seeds_for(args), PromptTemplate("default", DEFAULT_TEMPLATE),
                            SamplingConfig(max_tokens=args.max_tokens), args.model)
    conversations = [list(q.body["messages"]) for q in planned]
    fixed = vllm.SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    llm.chat(conversations[:32], fixed, use_tqdm=False)  # warm-up (CUDA graphs, allocator)

    t = time.perf_counter()
    outs = llm.chat(conversations, fixed, use_tqdm=False)
    own_s = time.perf_counter() - t
    own_tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)

    backend = VLLMBackend(args.model, batch_size=len(planned), engine=llm,
                          sampling_overrides={"ignore_eos": True})
    with tempfile.TemporaryDirectory() as tmp:
        stats = run_requests(planned, backend, ChunkWriter(tmp, "bench", flush_every=256), progress=False)
    result = {"model": args.model, "requests": len(planned), "max_tokens": args.max_tokens,
              "vllm_offline_tokens_per_s": round(own_tokens / own_s, 1),
              "megasnow_vllm_backend_tokens_per_s": stats["output_tokens_per_s"],
              "ratio": round(stats["output_tokens_per_s"] / (own_tokens / own_s), 4)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
