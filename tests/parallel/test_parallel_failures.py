"""Failure behaviour: bad layouts refused at start-up with what to change; a failing or hung rank never hangs the run."""
import time

import pytest

from megasnow.model.config import ModelConfigError
from megasnow.parallel import state
from megasnow.parallel.parallelize import ParallelConfig
from megasnow.parallel.spawn import SpawnError, run_processes
from megasnow.parallel.state import ParallelConfigError
from tests.parallel.test_parallel_equivalence_support import (
    StandInConfig,
    make_microbatches,
    stand_in_factory,
    tiny_llama_config,
)


@pytest.mark.parametrize("kwargs, world, message", [
    ({"tensor": 2, "pipeline": 2}, 6, "world size 6 is not divisible by tensor x pipeline = 2 x 2"),
    ({"pipeline": 8}, 8, "exceed model.num_layers (4); lower parallel.pipeline"),
    ({"pipeline": 2, "virtual_pipeline": 4}, 2, "exceed model.num_layers (4)"),
    ({"pipeline": 3}, 3, "give parallel.pipeline_layers"),
    ({"pipeline": 2, "pipeline_layers": [1, 2]}, 2, "adding up to model.num_layers (4)"),
    ({"virtual_pipeline": 2}, 1, "needs parallel.pipeline >= 2"),
    ({"sequence_parallel": True}, 1, "needs parallel.tensor >= 2"),
])
def test_bad_layouts_are_refused_with_what_to_change(kwargs, world, message):
    with pytest.raises(ParallelConfigError) as e:
        ParallelConfig(**kwargs).validate(tiny_llama_config(), world)
    assert message in str(e.value)


def test_tensor_size_must_divide_heads():
    with pytest.raises(ModelConfigError, match=r"tensor-parallel size 3 does not divide model.num_heads \(4\)"):
        ParallelConfig(tensor=3).validate(tiny_llama_config(), 3)


def test_bad_dtype_and_sizes_are_refused():
    with pytest.raises(ParallelConfigError, match="params_dtype must be one of"):
        ParallelConfig(params_dtype="fp16")
    with pytest.raises(ParallelConfigError, match="micro_batch_size must be at least 1"):
        ParallelConfig(micro_batch_size=0)


def test_uneven_split_is_accepted():
    pcfg = ParallelConfig(pipeline=2, pipeline_layers=[1, 3])
    assert pcfg.validate(tiny_llama_config(), 4) == 2
    assert pcfg.layer_ids_per_stage(4) == [[0], [1, 2, 3]]


def _raise_mid_pipeline(rank, world):
    """Rank 1 (last stage) raises after its first micro-batch; rank 0 is waiting on it."""
    from megasnow.parallel.parallelize import build_model
    from megasnow.parallel.pipeline.schedules import forward_backward

    state.initialize_model_parallel(1, 2)
    chunks = build_model(StandInConfig(), ParallelConfig(pipeline=2), 0, model_factory=stand_in_factory)
    if rank == 1:
        original = chunks[0].module.forward
        calls = []

        def failing_forward(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("injected failure on the last stage")
            return original(*args, **kwargs)

        chunks[0].module.forward = failing_forward
    forward_backward(chunks, make_microbatches(4, 2, 8, 64))


def _hang(rank, world):
    """Rank 1 never sends; rank 0's receive must time out on its own (collective timeout)."""
    from megasnow.parallel.pipeline.p2p import communicate
    import torch

    state.initialize_model_parallel(1, 2)
    if rank == 1:
        time.sleep(60)
    communicate(recv_prev=True, shape=(2, 3), dtype=torch.float32)


def test_a_failing_rank_fails_the_run_with_its_error():
    # Rank 0 is blocked receiving from rank 1; the run still ends with rank 1's error, not at the deadline.
    with pytest.raises(SpawnError) as e:
        run_processes(_raise_mid_pipeline, 2, timeout_s=90)
    assert "rank 1 failed" in str(e.value) and "injected failure on the last stage" in str(e.value)


def test_a_hung_peer_times_out_the_waiting_rank():
    with pytest.raises(SpawnError) as e:
        run_processes(_hang, 2, timeout_s=90, collective_timeout_s=3)
    text = str(e.value)
    assert "rank 0 failed" in text, text
    assert "communicate" in text  # the traceback shows where rank 0 was waiting
