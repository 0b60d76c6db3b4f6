"""Evaluation during training: the benchmark-solution loss every N steps (any rank layout) and, optionally, greedy
pass@1 on the first tasks of a benchmark (models held whole by one rank). Used by megasnow.train.trainer."""
import os

from megasnow.errors import UserError


class BenchmarkLoss:
    """The solution loss of each benchmark in `specs` ('humaneval' or benchmark files), measured with the trainer's
    forward path. Tokenized and packed once, at construction, with the trainer's tokenizer into micro-batches of
    [micro_batch_size, seq_len]; `measure` is a collective: every rank calls it at the same step."""

    def __init__(self, specs, tokenizer, seq_len, micro_batch_size, device="cpu", pad_id=0):
        from megasnow.eval.solution_loss import packed_micro_batches, sequence_limit, tokenize_solutions
        from megasnow.eval.tasks import load_benchmark

        if not specs:
            raise UserError("eval.benchmark_files is empty: name at least one benchmark ('humaneval' or a file)")
        self.sets = []
        names = set()
        for spec in specs:
            bench = load_benchmark(spec)
            name = bench.name if bench.name not in names else f"{bench.name}_{len(names)}"
            names.add(name)
            st = tokenize_solutions(bench.tasks, tokenizer, sequence_limit(seq_len))
            batches = packed_micro_batches(st, seq_len, micro_batch_size, pad_id, device)
            self.sets.append({"name": name, "batches": batches, "tasks": len(st.ids), "tokens": st.solution_tokens,
                              "truncated": st.truncated})

    def describe(self):
        return "; ".join(f"{s['name']}: {s['tasks']} solutions, {s['tokens']} tokens ({s['truncated']} truncated), "
                         f"{len(s['batches'])} micro-batches" for s in self.sets)

    def measure(self, model_chunks, num_micro_batches):
        """{benchmark name: {"loss", "tokens"}} for the current weights."""
        from megasnow.eval.solution_loss import solution_loss_parallel

        return {s["name"]: solution_loss_parallel(model_chunks, s["batches"], num_micro_batches) for s in self.sets}


class GreedyPassAt1:
    """Greedy pass@1 (base tests) on the first `num_tasks` tasks of benchmark `spec`, generated with the model being
    trained (completion prompts) and scored in the sandbox. Needs the whole model on this rank (tensor = pipeline =
    1); call it on one rank only."""

    def __init__(self, spec, num_tasks, tokenizer_path, max_tokens=256, workers=0, batch_size=16):
        from megasnow.eval.correctness import ExecutionConfig, default_cache_dir
        from megasnow.eval.tasks import load_benchmark
        from megasnow.generation.model_files import read_tokenizer_files

        bench = load_benchmark(spec)
        self.bench = bench.subset([t.task_id for t in bench.tasks[:num_tasks]]) if num_tasks else bench
        self.files = read_tokenizer_files(os.path.dirname(os.path.abspath(tokenizer_path)), tokenizer_path)
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.cfg = ExecutionConfig(workers=workers, cache_dir=default_cache_dir())
        self.truth = None

    def measure(self, model):
        """{"pass@1", "tasks", "passed", "statuses": [(status, exception type) per task]} for `model` (a LlamaModel;
        its training mode is restored)."""
        from megasnow.eval.codegen import GenerationSettings
        from megasnow.eval.correctness import check_samples, ground_truth
        from megasnow.eval.prompts import build_request, sample_record
        from megasnow.eval.samples import Sample
        from megasnow.generation.local import LocalBackend, LocalEngine

        was_training = model.training
        model.eval()
        try:
            engine = LocalEngine(model, self.files, model_name="training", max_num_seqs=self.batch_size)
            settings = GenerationSettings(max_tokens=self.max_tokens)
            requests = [build_request(t, "completion", settings.params(i), str(i))
                        for i, t in enumerate(self.bench.tasks)]
            samples = [None] * len(requests)
            for result in LocalBackend(engine).generate(requests):
                i = int(result.request_id)
                text = result.choices[0].text if result.ok else ""
                rec = sample_record(self.bench.tasks[i], "completion", text, 0)
                samples[i] = Sample(rec["task_id"], 0, completion=rec["completion"])
        finally:
            model.train(was_training)
        with self.cfg.pool() as pool:
            if self.truth is None:
                self.truth = ground_truth(self.bench, pool, self.cfg, progress=False)
            results = check_samples(self.bench, samples, pool, self.cfg, self.truth, progress=False)
        passed = sum(r["base_status"] == "passed" for r in results)
        return {"pass@1": passed / len(results), "tasks": len(results), "passed": passed,
                "statuses": [(r["base_status"], r.get("base_exception")) for r in results]}
