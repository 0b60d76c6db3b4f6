"""The benchmark-solution loss: the packed trainer-path value equals the one-sequence-per-row value, a HuggingFace
export's value, a direct computation, and the same value under tensor, pipeline and data parallelism."""
import math

import pytest
import torch

from megasnow.eval.solution_loss import (megasnow_logits_fn, packed_micro_batches, solution_loss_parallel,
                                         solution_loss_per_task, tokenize_solutions)
from megasnow.eval.tasks import load_benchmark
from megasnow.model.config import get_preset
from megasnow.parallel.spawn import run_processes
from tests.eval.helpers import ByteTokenizer

SEQ_LEN, SEED, TASKS = 384, 11, 6


def model_config():
    # large init so logits vary a lot: a wrong mask or offset changes the loss visibly
    return get_preset("tiny", vocab_size=256, max_seq_len=512, init_std=0.3)


def solution_tokens():
    tasks = load_benchmark("humaneval").tasks[:TASKS]
    return tokenize_solutions(tasks, ByteTokenizer(), SEQ_LEN + 1)


def _losses_in_every_layout(rank, world):
    from megasnow.parallel import state
    from megasnow.parallel.parallelize import ParallelConfig, build_model

    out = {}
    for name, tensor, pipeline in (("tensor2", 2, 1), ("pipeline2", 1, 2), ("data2", 1, 1)):
        chunks = build_model(model_config(), ParallelConfig(tensor=tensor, pipeline=pipeline, micro_batch_size=2),
                             SEED)
        batches = packed_micro_batches(solution_tokens(), SEQ_LEN, micro_batch_size=2)
        out[name] = solution_loss_parallel(chunks, batches, num_micro_batches=2)
        state.destroy_model_parallel()
    return out


@pytest.fixture(scope="module")
def reference():
    from megasnow.model.llama import LlamaModel

    torch.manual_seed(0)
    model = LlamaModel(model_config(), init_seed=SEED).eval()
    st = solution_tokens()
    return model, st, solution_loss_per_task(megasnow_logits_fn(model), st, batch_size=4)


def test_tokens_split_at_the_prompt():
    tasks = load_benchmark("humaneval").tasks[:TASKS]
    st = tokenize_solutions(tasks, ByteTokenizer(), 10_000)
    t = tasks[0]
    assert st.truncated == 0 and bytes(st.ids[0][st.starts[0]:]).decode() == t.canonical_solution
    short = tokenize_solutions(tasks, ByteTokenizer(), SEQ_LEN + 1)
    assert short.truncated > 0 and all(len(x) <= SEQ_LEN + 1 for x in short.ids)
    assert [len(x) - s for x, s in zip(short.ids, short.starts)] == \
        [min(len(t.canonical_solution.encode()), SEQ_LEN) for t in tasks]  # solutions kept whole where they fit


def test_direct_computation(reference):
    model, st, ref = reference
    ids, start = st.ids[0], st.starts[0]
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    nll = [-float(logp[j, ids[j + 1]]) for j in range(start - 1, len(ids) - 1)]
    assert ref["per_task"]["HumanEval/0"] == pytest.approx(sum(nll) / len(nll), abs=1e-5)
    assert ref["tokens"] == st.solution_tokens and ref["tasks"] == TASKS
    # token losses spread widely, so the 1e-4 agreements below would catch a wrong mask or an off-by-one
    assert torch.tensor(nll).std() > 1.0
    one_more = [-float(logp[j, ids[j + 1]]) for j in range(start - 2, len(ids) - 1)]
    assert abs(sum(one_more) / len(one_more) - sum(nll) / len(nll)) > 1e-3
    assert 0.5 < ref["loss"] < 20 and math.isfinite(ref["loss_per_task_mean"])


def test_packed_trainer_path_equals_per_sequence(reference):
    from megasnow.parallel import state
    from megasnow.parallel.parallelize import ParallelConfig, build_model

    _, st, ref = reference
    batches = packed_micro_batches(st, SEQ_LEN, micro_batch_size=2)
    assert len(batches) < len(st.ids)  # several solutions share a row
    try:
        chunks = build_model(model_config(), ParallelConfig(micro_batch_size=2), SEED)
        out = solution_loss_parallel(chunks, batches, num_micro_batches=3)  # 3: the last step gets filler
    finally:
        state.destroy_model_parallel()
    assert out["tokens"] == ref["tokens"]
    assert out["loss"] == pytest.approx(ref["loss"], abs=2e-5)


def test_hf_export_gives_the_same_loss(reference, tmp_path):
    transformers = pytest.importorskip("transformers")
    from megasnow.convert.hf_llama import export_to_hf, write_single_rank_checkpoint
    from megasnow.eval.solution_loss import hf_logits_fn

    model, st, ref = reference
    write_single_rank_checkpoint(str(tmp_path / "ckpt"), model.cfg, model.state_dict())
    export_to_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), torch_dtype=torch.float32).eval()
    out = solution_loss_per_task(hf_logits_fn(hf), st, batch_size=3)
    assert out["loss"] == pytest.approx(ref["loss"], abs=1e-4)
    assert out["per_task"] == pytest.approx(ref["per_task"], abs=1e-4)


def test_every_layout_gives_the_same_loss(reference):
    _, _, ref = reference
    for per_rank in run_processes(_losses_in_every_layout, 2, timeout_s=150):
        for layout, out in per_rank.items():
            assert out["tokens"] == ref["tokens"], layout
            assert out["loss"] == pytest.approx(ref["loss"], abs=5e-5), layout
