"""The evaluation side of the trainer hook: BenchmarkLoss equals the per-task solution loss of the same weights;
GreedyPassAt1 gives the statuses of the explicit generate-then-score pipeline."""
import os

import pytest

from megasnow.eval.training import BenchmarkLoss, GreedyPassAt1

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_benchmark_loss_equals_per_task_loss(tiny):
    from megasnow.convert.hf_llama import build_megasnow_model
    from megasnow.data.tokenizer import load_tokenizer
    from megasnow.eval.solution_loss import megasnow_logits_fn, solution_loss_per_task, tokenize_solutions
    from megasnow.eval.tasks import load_benchmark
    from megasnow.parallel import state
    from megasnow.parallel.parallelize import ParallelConfig, build_model
    from megasnow.train.checkpoint import load_model_state

    ckpt, _ = tiny
    model, step_dir = build_megasnow_model(ckpt)
    tok = load_tokenizer(os.path.join(step_dir, "tokenizer.json"))
    specs = [os.path.join(FIXTURES, "humaneval_plus_mini.jsonl"), os.path.join(FIXTURES, "mbpp_mini.jsonl")]
    hook = BenchmarkLoss(specs, tok, seq_len=128, micro_batch_size=2)
    assert "humaneval_plus_mini: 4 solutions" in hook.describe() and "truncated" in hook.describe()
    try:
        chunks = build_model(model.cfg, ParallelConfig(micro_batch_size=2), seed=0)
        load_model_state(chunks[0].module, model.state_dict())
        got = hook.measure(chunks, num_micro_batches=2)
    finally:
        state.destroy_model_parallel()
    assert set(got) == {"humaneval_plus_mini", "mbpp_mini"}
    for spec, name in zip(specs, ("humaneval_plus_mini", "mbpp_mini")):
        st = tokenize_solutions(load_benchmark(spec).tasks, tok, 129)
        ref = solution_loss_per_task(megasnow_logits_fn(model), st, batch_size=8)
        assert got[name]["tokens"] == ref["tokens"]
        assert got[name]["loss"] == pytest.approx(ref["loss"], abs=1e-4)


def test_greedy_pass_at_1_matches_generate_then_score(tiny, tmp_path):
    from megasnow.convert.hf_llama import build_megasnow_model
    from megasnow.eval.codegen import GenerationSettings, generate_samples
    from megasnow.eval.correctness import ExecutionConfig, check_samples, ground_truth
    from megasnow.eval.samples import read_samples
    from megasnow.eval.tasks import load_benchmark
    from megasnow.generation.local import LocalBackend

    ckpt, _ = tiny
    model, step_dir = build_megasnow_model(ckpt)
    model.train()
    hook = GreedyPassAt1("humaneval", 3, os.path.join(step_dir, "tokenizer.json"), max_tokens=16, workers=2)
    hook.cfg.cache_dir = ""
    got = hook.measure(model)
    assert model.training and got["tasks"] == 3
    bench = load_benchmark("humaneval").subset(["HumanEval/0", "HumanEval/1", "HumanEval/2"])
    with LocalBackend(ckpt) as backend:
        generate_samples(backend, bench, GenerationSettings(max_tokens=16), str(tmp_path / "s.jsonl"), progress=False)
    cfg = ExecutionConfig(workers=2)
    with cfg.pool() as pool:
        results = check_samples(bench, read_samples(str(tmp_path / "s.jsonl"), bench), pool, cfg,
                                ground_truth(bench, pool, cfg, progress=False), progress=False)
    assert got["statuses"] == [(r["base_status"], r.get("base_exception")) for r in results]
    assert got["passed"] == sum(r["base_status"] == "passed" for r in results)


def test_trainer_hook_and_evaluate_loss_agree_on_tokens_and_loss(tiny_short):
    """One length rule (solution_loss.sequence_limit): the trainer's hook at data.seq_len = the model's max_seq_len
    and `evaluate.py loss` (benchmark_solution_loss) count the same tokens and truncations and give the same loss
    (they once differed by one token per truncated task)."""
    from megasnow.convert.hf_llama import build_megasnow_model
    from megasnow.data.tokenizer import load_tokenizer
    from megasnow.eval.loss_model import benchmark_solution_loss
    from megasnow.eval.tasks import load_benchmark
    from megasnow.parallel import state
    from megasnow.parallel.parallelize import ParallelConfig, build_model
    from megasnow.train.checkpoint import load_model_state

    model, step_dir = build_megasnow_model(tiny_short)
    tok = load_tokenizer(os.path.join(step_dir, "tokenizer.json"))
    spec = os.path.join(FIXTURES, "humaneval_plus_mini.jsonl")
    hook = BenchmarkLoss([spec], tok, seq_len=model.cfg.max_seq_len, micro_batch_size=2)
    try:
        chunks = build_model(model.cfg, ParallelConfig(micro_batch_size=2), seed=0)
        load_model_state(chunks[0].module, model.state_dict())
        got = hook.measure(chunks, num_micro_batches=2)["humaneval_plus_mini"]
    finally:
        state.destroy_model_parallel()
    ref = benchmark_solution_loss(load_benchmark(spec), tiny_short)
    assert hook.sets[0]["truncated"] == ref["truncated"] >= 1  # the short context truncates some
    assert hook.sets[0]["tokens"] == got["tokens"] == ref["tokens"]
    assert got["loss"] == pytest.approx(ref["loss"], abs=1e-4)
