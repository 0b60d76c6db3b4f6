"""Forward/backward schedules: no pipelining (gradient accumulation), 1F1B, and interleaved 1F1B.

`forward_backward` runs one optimizer step's worth of micro-batches on this rank's model chunks and
returns the last stage's micro-batch losses (each the mean over its tokens whose label is not -100).
The gradient is that of the mean of those losses (each scaled by 1/num_microbatches before its backward,
then averaged over data-parallel ranks), or with `per_token_loss` that of the per-token mean over the
whole global batch (Megatron's --calculate-per-token-loss). Schedules follow Megatron's, with the
stage-to-stage transfers done by `p2p.communicate` (no CUDA-only calls).
"""
import torch
import torch.distributed as dist

from megasnow.parallel import state

IGNORE_INDEX = -100
from megasnow.parallel.pipeline.p2p import communicate


class ScheduleError(ValueError):
    """A micro-batch count or chunk list the chosen schedule cannot run; says what to change."""


def forward_backward(model_chunks, microbatches, forward_only=False, per_token_loss=False):
    """Run all micro-batches through this rank's chunks (and backward unless `forward_only`).

    `microbatches`: list of dicts with "tokens" and "labels" [B, S] (optionally "document_ids"); every
    pipeline stage gets the same list. Returns the float losses on the last stage, [] elsewhere.
    After the backward pass the gradients are final: data-parallel reduced, tied embeddings summed.

    `per_token_loss`: the gradient is that of sum(token losses) / sum(tokens) over every micro-batch of
    every data-parallel rank (labels -100 excluded), rather than the mean of micro-batch means; the two
    differ whenever micro-batches count different numbers of tokens (loss masks). Costs one all-reduce
    of a scalar over the data-parallel group, on the device (no host sync).
    """
    if not microbatches:
        raise ScheduleError("forward_backward needs at least one micro-batch")
    scales = None if forward_only or not per_token_loss else per_token_loss_scales(microbatches)
    run = _Run(model_chunks, microbatches, forward_only, scales)
    pp = state.get_pipeline_parallel_world_size()
    if pp == 1:
        if len(model_chunks) != 1:
            raise ScheduleError(f"{len(model_chunks)} model chunks without pipeline parallelism; expected 1")
        _no_pipelining(run)
    elif len(model_chunks) == 1:
        _one_f_one_b(run)
    else:
        _interleaved_one_f_one_b(run)
    state.set_virtual_pipeline_parallel_rank(None)
    if not forward_only:
        finalize_model_grads(model_chunks)
    return [float(x) for x in torch.stack(run.losses).float().cpu()] if run.losses else []


def token_counts(microbatches):
    """Tokens that count in each micro-batch's loss (labels != -100), as one int64 tensor [num_microbatches]."""
    return torch.stack([(mb["labels"] != IGNORE_INDEX).sum() for mb in microbatches])


def per_token_loss_scales(microbatches):
    """Factor for each micro-batch's mean loss so the step's gradient is the global per-token mean.

    Micro-batch j of this rank has n_j tokens and mean loss L_j = S_j / n_j; the global batch has N tokens
    over all micro-batches and data-parallel ranks. The data-parallel reduction averages over dp ranks, so
    scaling L_j by n_j * dp / N makes the reduced gradient that of sum_j S_j / N: the token losses and the
    token counts are summed over micro-batches and ranks and divided once (Megatron's per-token loss).
    """
    counts = token_counts(microbatches).double()
    total = counts.sum()
    dp = state.get_data_parallel_world_size()
    if dp > 1:
        dist.all_reduce(total, group=state.get_data_parallel_group())
    return (counts * dp / total.clamp(min=1)).float()


def finalize_model_grads(model_chunks):
    """Make gradients final: sum tied embeddings across first/last stage, then finish the DP reduction."""
    from megasnow.parallel.data_parallel.ddp import allreduce_tied_embedding_grads

    allreduce_tied_embedding_grads(model_chunks)
    for chunk in model_chunks:
        if hasattr(chunk, "finish_grad_sync"):
            chunk.finish_grad_sync()


class _Run:
    """Per-call bookkeeping: micro-batches, losses, activation shape, backward counts per chunk."""

    def __init__(self, model_chunks, microbatches, forward_only, loss_scales=None):
        self.chunks = model_chunks
        self.microbatches = microbatches
        self.num_microbatches = len(microbatches)
        self.forward_only = forward_only
        self.loss_scales = loss_scales  # per micro-batch (per-token loss); None: 1 / num_microbatches
        self.losses = []
        self.backward_counts = [0] * len(model_chunks)
        self.forward_counts = [0] * len(model_chunks)
        first = model_chunks[0]
        param = next(first.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.shape = activation_shape(first, microbatches[0]["tokens"])

    def forward(self, chunk_id, input_tensor):
        """Forward the chunk's next micro-batch; returns the scaled loss (last stage) or hidden states."""
        chunk = self.chunks[chunk_id]
        index = self.forward_counts[chunk_id]
        mb = self.microbatches[index]
        self.forward_counts[chunk_id] += 1
        state.set_virtual_pipeline_parallel_rank(chunk_id if len(self.chunks) > 1 else None)
        last = state.is_pipeline_last_stage()
        _unwrap(chunk).set_input_tensor(input_tensor)
        kwargs = {"document_ids": mb["document_ids"]} if mb.get("document_ids") is not None else {}
        with torch.set_grad_enabled(not self.forward_only):
            out = chunk(mb["tokens"], labels=mb["labels"] if last else None, **kwargs)
        if last:
            self.losses.append(out.detach())  # converted to floats once, at the end (one host sync)
            if self.loss_scales is None:
                out = out / self.num_microbatches
            else:
                out = out * self.loss_scales[index].to(out.dtype)
        return out

    def backward(self, chunk_id, input_tensor, output_tensor, output_grad):
        """Backprop one micro-batch through a chunk; returns the gradient for the previous stage."""
        chunk = self.chunks[chunk_id]
        # Launch the data-parallel reduction only during the chunk's last micro-batch backward.
        if hasattr(chunk, "set_grad_sync"):
            chunk.set_grad_sync(self.backward_counts[chunk_id] == self.num_microbatches - 1)
        self.backward_counts[chunk_id] += 1
        torch.autograd.backward(output_tensor, grad_tensors=output_grad)
        return None if input_tensor is None else input_tensor.grad

    def comm(self, send_next=None, send_prev=None, recv_prev=False, recv_next=False):
        return communicate(send_next, send_prev, recv_prev, recv_next, self.shape, self.dtype, self.device)


def activation_shape(chunk, tokens):
    """Shape of the hidden states passed between stages: [B, S, H], S split over TP with sequence parallel."""
    batch, seq = tokens.shape
    hidden = _unwrap(chunk).cfg.hidden_size
    cfg = getattr(chunk, "parallel_cfg", None)
    if cfg is not None and cfg.sequence_parallel:
        seq //= state.get_tensor_parallel_world_size()
    return (batch, seq, hidden)


def _unwrap(chunk):
    return getattr(chunk, "module", chunk)


def _no_pipelining(run):
    """Gradient accumulation over micro-batches on a single stage."""
    for _ in range(run.num_microbatches):
        out = run.forward(0, None)
        if not run.forward_only:
            run.backward(0, None, out, None)


def _one_f_one_b(run):
    """1F1B: warm-up forwards, then one forward + one backward per step, then cool-down backwards."""
    pp, rank = state.get_pipeline_parallel_world_size(), state.get_pipeline_parallel_rank()
    first, last = state.is_pipeline_first_stage(), state.is_pipeline_last_stage()
    n = run.num_microbatches
    warmup = n if run.forward_only else min(pp - rank - 1, n)
    remaining = n - warmup
    inputs, outputs = [], []

    def recv_forward():
        return None if first else run.comm(recv_prev=True)[0]

    def send_forward(out):
        if not last:
            run.comm(send_next=out)

    for _ in range(warmup):
        inp = recv_forward()
        out = run.forward(0, inp)
        send_forward(out)
        if not run.forward_only:
            inputs.append(inp)
            outputs.append(out)

    inp = recv_forward() if remaining > 0 else None
    for i in range(remaining):
        last_iteration = i == remaining - 1
        out = run.forward(0, inp)
        if run.forward_only:
            send_forward(out)
            if not last_iteration:
                inp = recv_forward()
            continue
        out_grad = None if last else run.comm(send_next=out, recv_next=True)[1]
        inputs.append(inp)
        outputs.append(out)
        in_grad = run.backward(0, inputs.pop(0), outputs.pop(0), out_grad)
        send_prev = None if first else in_grad
        if last_iteration:
            run.comm(send_prev=send_prev)
        else:
            inp = run.comm(send_prev=send_prev, recv_prev=not first)[0]

    if not run.forward_only:
        for _ in range(warmup):
            out_grad = None if last else run.comm(recv_next=True)[1]
            in_grad = run.backward(0, inputs.pop(0), outputs.pop(0), out_grad)
            if not first:
                run.comm(send_prev=in_grad)


def _interleaved_one_f_one_b(run):
    """Interleaved 1F1B over virtual stages (Megatron's schedule): chunk c of stage r holds model part c*pp+r."""
    pp, rank = state.get_pipeline_parallel_world_size(), state.get_pipeline_parallel_rank()
    v = len(run.chunks)
    n = run.num_microbatches
    if n % pp:
        raise ScheduleError(f"the interleaved schedule needs the number of micro-batches ({n}) to be a multiple of "
                            f"the pipeline size ({pp}); change the global batch or micro_batch_size")
    first_stage = state.is_pipeline_first_stage(ignore_virtual=True)
    last_stage = state.is_pipeline_last_stage(ignore_virtual=True)
    total = n * v
    all_warmup = False
    if run.forward_only:
        warmup = total
    elif n == pp:
        warmup, all_warmup = total, True
    else:
        warmup = min((pp - rank - 1) * 2 + (v - 1) * pp, total)
    remaining = total - warmup

    inputs = [[] for _ in range(v)]
    outputs = [[] for _ in range(v)]
    out_grads = [[] for _ in range(v)]

    def chunk_of(k, forward):
        c = (k % (pp * v)) // pp
        return c if forward else v - c - 1

    def is_first(c):  # first stage of the whole model
        return first_stage and c == 0

    def is_last(c):
        return last_stage and c == v - 1

    def forward_step(k):
        c = chunk_of(k, True)
        if is_first(c) and len(inputs[c]) == len(outputs[c]):
            inputs[c].append(None)
        out = run.forward(c, inputs[c][-1])
        outputs[c].append(out)
        if run.forward_only:
            inputs[c].pop()
            outputs[c].pop()
        return out

    def backward_step(k):
        c = chunk_of(k, False)
        if is_last(c) and len(out_grads[c]) == 0:
            out_grads[c].append(None)
        return run.backward(c, inputs[c].pop(0), outputs[c].pop(0), out_grads[c].pop(0))

    if not first_stage:
        inputs[0].append(run.comm(recv_prev=True)[0])
    for k in range(warmup):
        out = forward_step(k)
        next_c = chunk_of(k + 1, True)
        recv_prev = not (first_stage and next_c == 0) and k != total - 1
        if is_last(chunk_of(k, True)):
            out = None
        if k == warmup - 1 and not run.forward_only and not all_warmup:
            recv_next = not last_stage
            inp, grad = run.comm(send_next=out, recv_prev=recv_prev, recv_next=recv_next)
            out_grads[v - 1].append(grad)
        else:
            inp = run.comm(send_next=out, recv_prev=recv_prev)[0]
        inputs[next_c].append(inp)

    for k in range(remaining):
        fk, bk = k + warmup, k
        out = forward_step(fk)
        in_grad = backward_step(bk)
        if is_last(chunk_of(fk, True)):
            out = None
        if is_first(chunk_of(bk, False)):
            in_grad = None
        recv_prev = True
        if first_stage:
            # The first stage runs pp-1 forwards ahead of the last stage, which feeds it.
            next_fc = chunk_of(fk - (pp - 1), True)
            if next_fc == v - 1:
                recv_prev = False
            next_fc += 1
        else:
            next_fc = chunk_of(fk + 1, True)
        recv_next = True
        if last_stage:
            next_bc = chunk_of(bk - (pp - 1), False)
            if next_bc == 0:
                recv_next = False
            next_bc -= 1
        else:
            next_bc = chunk_of(bk + 1, False)
        if k == remaining - 1:
            recv_prev = False
        inp, grad = run.comm(send_next=out, send_prev=in_grad, recv_prev=recv_prev, recv_next=recv_next)
        if recv_prev:
            inputs[next_fc].append(inp)
        if recv_next:
            out_grads[next_bc].append(grad)

    if run.forward_only:
        return
    if all_warmup:
        out_grads[v - 1].append(run.comm(recv_next=not last_stage)[1])
    for k in range(remaining, total):
        in_grad = backward_step(k)
        if is_first(chunk_of(k, False)):
            in_grad = None
        next_bc = chunk_of(k + 1, False)
        recv_next = not (last_stage and next_bc == v - 1) and k != total - 1
        grad = run.comm(send_prev=in_grad, recv_next=recv_next)[1]
        out_grads[next_bc].append(grad)
