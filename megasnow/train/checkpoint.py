"""Checkpoints: every rank writes its own files in parallel into a hidden temporary folder that is renamed into
place once all are done, then the `latest` pointer is updated; keep-last-K prunes older ones.

Layout of <dir>/step_00001000/:  meta.json (trainer state, parallel layout), config.yaml,
model_tp00_pp000.pt (one per tensor x pipeline shard, written by data-parallel rank 0: a list of state dicts,
one per model chunk), rank_00000.pt (every rank: optimizer shard and RNG states). Everything loads with
torch.load(weights_only=True).
"""
import json
import os
import random
import shutil

import numpy as np
import torch
import torch.distributed as dist

from megasnow.errors import UserError
from megasnow.utils.atomic import atomic_write, atomic_write_text

LATEST = "latest"
META = "meta.json"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used here; the message names the file and tensor."""


def step_dir_name(step):
    return f"step_{step:08d}"


def _ranks():
    from megasnow.parallel import state

    return dict(rank=state.get_rank(), world=state.get_world_size(),
                tp=state.get_tensor_parallel_rank(), tp_size=state.get_tensor_parallel_world_size(),
                pp=state.get_pipeline_parallel_rank(), pp_size=state.get_pipeline_parallel_world_size(),
                dp=state.get_data_parallel_rank(), dp_size=state.get_data_parallel_world_size())


def _barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def unwrap(module):
    """The bare model inside DDP-style wrappers (they keep it as `.module`)."""
    while hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
        module = module.module
    return module


def model_file(tp, pp):
    return f"model_tp{tp:02d}_pp{pp:03d}.pt"


def rank_file(rank):
    return f"rank_{rank:05d}.pt"


# ---------------------------------------------------------------- RNG states
def get_rng_states():
    """Python, numpy, torch (CPU and CUDA) and the tensor-parallel tracker states, as weights_only-safe values."""
    np_state = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    tracker = _rng_tracker()
    if tracker is not None and hasattr(tracker, "get_states"):
        states["tracker"] = tracker.get_states()
    return states


def set_rng_states(states):
    random.setstate(_to_tuple(states["python"]))
    name, key, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    tracker = _rng_tracker()
    if "tracker" in states and tracker is not None and hasattr(tracker, "set_states"):
        tracker.set_states(states["tracker"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _rng_tracker():
    try:
        from megasnow.parallel.tensor_parallel import get_rng_tracker
    except ImportError:
        return None
    return get_rng_tracker()


# ---------------------------------------------------------------- save
def save_checkpoint(ckpt_dir, step, model_chunks, optimizer, trainer_state, config_yaml, keep_last=0,
                    extra_files=None):
    """Write checkpoint `step` collectively (every rank calls this); returns its folder.

    `trainer_state` goes into meta.json; `extra_files` {name: source path} (the tokenizer) are copied in by rank 0.
    """
    r = _ranks()
    name = step_dir_name(step)
    final = os.path.join(ckpt_dir, name)
    tmp = os.path.join(ckpt_dir, f".tmp_{name}")
    if r["rank"] == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    _barrier()
    if r["dp"] == 0:
        states = [unwrap(m).state_dict() for m in model_chunks]
        with atomic_write(os.path.join(tmp, model_file(r["tp"], r["pp"]))) as f:
            torch.save(states, f)
    with atomic_write(os.path.join(tmp, rank_file(r["rank"]))) as f:
        torch.save({"optimizer": optimizer.state_dict() if optimizer is not None else None,
                    "rng": get_rng_states()}, f)
    _barrier()
    if r["rank"] == 0:
        meta = dict(trainer_state, step=step,
                    layout={k: r[k] for k in ("world", "tp_size", "pp_size", "dp_size")},
                    num_chunks=len(model_chunks), format=1)
        atomic_write_text(os.path.join(tmp, META), json.dumps(meta, indent=1, sort_keys=True))
        atomic_write_text(os.path.join(tmp, "config.yaml"), config_yaml)
        for fname, src in (extra_files or {}).items():
            shutil.copyfile(src, os.path.join(tmp, fname))
        _fsync_dir(tmp)
        if os.path.exists(final):  # re-saving the same step (e.g. after a resume): swap it out
            old = os.path.join(ckpt_dir, f".old_{name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(ckpt_dir)
        # The pointer is written last: until here `latest` names the previous, complete checkpoint.
        atomic_write_text(os.path.join(ckpt_dir, LATEST), name + "\n")
        prune_checkpoints(ckpt_dir, keep_last)
    _barrier()
    return final


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(ckpt_dir):
    """Complete checkpoint folders (step, path), oldest first."""
    out = []
    if not os.path.isdir(ckpt_dir):
        return out
    for name in os.listdir(ckpt_dir):
        if name.startswith("step_") and os.path.exists(os.path.join(ckpt_dir, name, META)):
            try:
                out.append((int(name[5:]), os.path.join(ckpt_dir, name)))
            except ValueError:
                continue
    return sorted(out)


def prune_checkpoints(ckpt_dir, keep_last):
    """Delete all but the newest `keep_last` checkpoints (never the one `latest` names) and stale temp folders."""
    for name in os.listdir(ckpt_dir):
        if name.startswith((".tmp_step_", ".old_step_")):
            shutil.rmtree(os.path.join(ckpt_dir, name), ignore_errors=True)
    if keep_last <= 0:
        return
    latest = resolve_latest(ckpt_dir)
    ckpts = list_checkpoints(ckpt_dir)
    for _, path in ckpts[:-keep_last]:
        if latest is None or os.path.abspath(path) != os.path.abspath(latest):
            shutil.rmtree(path, ignore_errors=True)


def resolve_latest(ckpt_dir):
    """The folder `<ckpt_dir>/latest` points to, or None when there is no usable checkpoint."""
    pointer = os.path.join(ckpt_dir, LATEST)
    if not os.path.exists(pointer):
        return None
    with open(pointer, encoding="utf-8") as f:
        name = f.read().strip()
    path = os.path.join(ckpt_dir, name)
    if not os.path.exists(os.path.join(path, META)):
        raise CheckpointError(f"{pointer} names {name!r}, which is not a complete checkpoint folder")
    return path


def resolve_checkpoint(path):
    """A step folder from either a step folder or a run's checkpoint folder (via its `latest` pointer)."""
    if os.path.exists(os.path.join(path, META)):
        return path
    found = resolve_latest(path) if os.path.isdir(path) else None
    if found is None:
        raise CheckpointError(f"{path}: neither a checkpoint step folder (with {META}) nor a folder with a "
                              f"'{LATEST}' pointer")
    return found


# ---------------------------------------------------------------- load
def read_meta(step_dir):
    with open(os.path.join(step_dir, META), encoding="utf-8") as f:
        return json.load(f)


def _torch_load(path):
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: missing (was the checkpoint written with another parallel layout?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report which file is unreadable
        raise CheckpointError(f"{path}: cannot be read safely ({type(e).__name__}: {e})") from None


def load_model_state(module, state, source=""):
    """Copy `state` into `module`, refusing missing, unexpected or differently shaped tensors by name."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise CheckpointError(f"{source}: tensor {missing[0]!r} is missing from the checkpoint "
                              f"({len(missing)} missing in all)")
    if unexpected:
        raise CheckpointError(f"{source}: checkpoint tensor {unexpected[0]!r} does not exist in the model "
                              f"({len(unexpected)} unexpected in all)")
    for k, t in own.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise CheckpointError(f"{source}: shape mismatch for tensor {k!r}: checkpoint "
                                  f"{tuple(state[k].shape)} vs model {tuple(t.shape)}; the model config "
                                  f"differs from the one the checkpoint was trained with")
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(state[k].to(t.dtype))


def load_model_weights(step_dir, model_chunks, same_layout=False):
    """Load this rank's model shard from a step folder (for resume and for checkpoint.init_from); returns meta.json.

    A checkpoint saved with this run's tensor x pipeline layout and number of model chunks loads its own shard
    file. Any other layout (e.g. an import, always 1 x 1) is read whole into full tensors
    (megasnow.convert.hf_llama.load_full_state, the export's reader) and this rank's slice of each is taken
    (copy_full_into_), as Megatron's checkpoint converter does offline; every rank then holds the full model in CPU
    memory for a moment. `same_layout` (resume: the optimizer state is per shard) refuses another layout instead.
    Raises CheckpointError for a layout refused, a missing or differently shaped tensor.
    """
    r = _ranks()
    meta = read_meta(step_dir)
    lay = meta["layout"]
    saved_chunks = meta.get("num_chunks", 1)
    if (lay["tp_size"], lay["pp_size"], saved_chunks) == (r["tp_size"], r["pp_size"], len(model_chunks)):
        path = os.path.join(step_dir, model_file(r["tp"], r["pp"]))
        states = _torch_load(path)
        if len(states) != len(model_chunks):
            raise CheckpointError(f"{path}: holds {len(states)} model chunks, this run has {len(model_chunks)}")
        for m, sd in zip(model_chunks, states):
            load_model_state(unwrap(m), sd, path)
        return meta
    saved = f"{lay['tp_size']} x {lay['pp_size']}" + (f" (x {saved_chunks} virtual)" if saved_chunks > 1 else "")
    ours = f"{r['tp_size']} x {r['pp_size']}" + (f" (x {len(model_chunks)} virtual)" if len(model_chunks) > 1 else "")
    if same_layout:
        raise CheckpointError(f"{step_dir}: saved with tensor x pipeline = {saved}, but this run uses {ours}; a "
                              f"resume needs the same layout (the optimizer state is per shard). To change the "
                              f"layout, start a new run (another checkpoint.dir) with checkpoint.init_from={step_dir} "
                              f"(weights only; the optimizer state and the data position restart)")
    from megasnow.convert.hf_llama import load_full_state  # the export's un-sharding reader (one implementation)

    _, full, _ = load_full_state(step_dir)
    for m in model_chunks:
        load_full_model_state(unwrap(m), full, step_dir)
    return meta


def load_full_model_state(module, full, source=""):
    """Copy this rank's slice of each full (unsharded) tensor in `full` into `module` (a model chunk: any tensor-
    parallel size, any subset of layers). Refuses a missing or differently shaped tensor by name (CheckpointError);
    tensors of other pipeline stages in `full` are ignored."""
    from megasnow.parallel.tensor_parallel.layers import copy_full_into_

    own = dict(module.named_parameters())
    own.update((k, b) for k, b in module.named_buffers() if k in module.state_dict())
    missing = [k for k in own if k not in full]
    if missing:
        raise CheckpointError(f"{source}: tensor {missing[0]!r} is missing from the checkpoint "
                              f"({len(missing)} missing in all)")
    with torch.no_grad():
        for k, t in own.items():
            want = tuple(getattr(t, "full_shape", t.shape))
            if tuple(full[k].shape) != want:
                raise CheckpointError(f"{source}: shape mismatch for tensor {k!r}: checkpoint {tuple(full[k].shape)} "
                                      f"vs model {want}; the model config differs from the one the checkpoint was "
                                      f"trained with")
            copy_full_into_(t, full[k].to(t.dtype))


def saved_rank_for(r, saved_dp_size):
    """The saved rank whose rank file this rank loads when the data-parallel size changed: the same tensor and
    pipeline coordinates (ranks are numbered tensor fastest, then data, then pipeline: megasnow.parallel.state).
    Weights and the (non-distributed) optimizer state are replicated over data-parallel ranks, so any replica
    serves; the sampler continues from consumed_samples, as Megatron's does, so the data order is unchanged when
    the global batch size is."""
    d = r["dp"] % saved_dp_size
    return r["tp"] + r["tp_size"] * (d + saved_dp_size * r["pp"])


def load_checkpoint(step_dir, model_chunks, optimizer):
    """Restore weights, optimizer shard and RNG states; returns the trainer state in meta.json. A checkpoint saved
    with another data-parallel size loads (saved_rank_for) unless the optimizer state is sharded over the
    data-parallel ranks (the distributed optimizer), which raises CheckpointError."""
    r = _ranks()
    meta = load_model_weights(step_dir, model_chunks, same_layout=True)
    lay = meta["layout"]
    source = r["rank"]
    if lay["dp_size"] != r["dp_size"]:
        from megasnow.parallel.data_parallel.distributed_optimizer import DistributedOptimizer

        if isinstance(optimizer, DistributedOptimizer):
            raise CheckpointError(
                f"{step_dir}: saved with {lay['dp_size']} data-parallel ranks, this run has {r['dp_size']}: the "
                f"distributed optimizer (parallel.use_distributed_optimizer) shards its state over the data-parallel "
                f"ranks and cannot be resharded; resume with {lay['dp_size']} data-parallel ranks (a changed "
                f"data-parallel size is supported without the distributed optimizer)")
        source = saved_rank_for(r, lay["dp_size"])
    blob = _torch_load(os.path.join(step_dir, rank_file(source)))
    if optimizer is not None and blob["optimizer"] is not None:
        optimizer.load_state_dict(blob["optimizer"])
    set_rng_states(blob["rng"])
    return meta
