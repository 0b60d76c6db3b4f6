"""Model-parallel RNG tracker: named RNG states to fork into, so per-shard randomness differs across TP ranks.

The default generator stays identical on every TP rank (same dropout on replicated activations); inside
`get_rng_tracker().fork()` the "model-parallel-rng" state, seeded by (seed, TP rank), is used instead and the
default state is restored afterwards. Device-agnostic: it saves/restores the CPU generator and, when CUDA is
available, the current CUDA device's generator.
"""
import contextlib

import torch

from megasnow.parallel import state

MODEL_PARALLEL_RNG = "model-parallel-rng"
_TP_SEED_OFFSET = 2718  # Megatron's offset, so the model-parallel stream never equals the default one


def _get_states():
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return cpu, cuda


def _set_states(states):
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)


def _seed_all(seed):
    torch.manual_seed(seed)  # seeds CPU and every CUDA device


class RNGStatesTracker:
    """Named (CPU, CUDA) RNG states; `fork(name)` swaps one in for the duration of a block."""

    def __init__(self):
        self.states = {}

    def reset(self):
        self.states = {}

    def add(self, name, seed):
        if name in self.states:
            raise ValueError(f"RNG state {name!r} already exists")
        saved = _get_states()
        _seed_all(seed)
        self.states[name] = _get_states()
        _set_states(saved)

    def get_states(self):
        return dict(self.states)

    def set_states(self, states):
        self.states = dict(states)

    @contextlib.contextmanager
    def fork(self, name=MODEL_PARALLEL_RNG):
        if name not in self.states:
            raise KeyError(f"RNG state {name!r} was never added; call model_parallel_seed(seed) first")
        saved = _get_states()
        _set_states(self.states[name])
        try:
            yield
        finally:
            self.states[name] = _get_states()
            _set_states(saved)


_TRACKER = RNGStatesTracker()


def get_rng_tracker():
    return _TRACKER


def model_parallel_seed(seed):
    """Seed the default generator with `seed` (same on all TP ranks) and the tracker's model-parallel
    stream with seed + 2718 + TP rank (different per shard). Pipeline stages should pass seed + 100 * pp_rank
    if they want different default streams, as Megatron does."""
    tp_rank = state.get_tensor_parallel_rank()
    _TRACKER.reset()
    _seed_all(seed)
    _TRACKER.add(MODEL_PARALLEL_RNG, seed + _TP_SEED_OFFSET + tp_rank)
