"""Point-to-point exchange of activations and their gradients between neighbouring pipeline stages.

Plain torch.distributed isend/irecv batched per exchange, so it runs on gloo (CPU) and NCCL alike.
Stages form a ring (the last stage's "next" is stage 0) so interleaved schedules can pass a virtual
chunk's output from the last physical stage back to the first.
"""
import torch
import torch.distributed as dist

from megasnow.parallel import state

# Activations travel "forward" (to the next stage) and gradients "backward" (to the previous one).
# Distinct tags keep the two streams apart on gloo when both neighbours are the same rank (pp=2);
# the op order below (all forward-direction ops first) keeps them apart on NCCL, which ignores tags.
_FORWARD_TAG = 1
_BACKWARD_TAG = 2


def _neighbours():
    ranks = state.get_pipeline_parallel_ranks()
    i = state.get_pipeline_parallel_rank()
    return ranks[(i - 1) % len(ranks)], ranks[(i + 1) % len(ranks)]


def communicate(send_next=None, send_prev=None, recv_prev=False, recv_next=False, shape=None, dtype=None,
                device=None):
    """Send `send_next` forward and `send_prev` backward; receive from either side as asked.

    Returns (from_prev, from_next): received tensors (requires_grad so their grads can be taken) or None.
    All four transfers are posted together and awaited together, so matching calls on the neighbours
    never deadlock whatever the order in which the stages reach them.
    """
    prev_rank, next_rank = _neighbours()
    from_prev = from_next = None
    ops = []
    # Forward-direction traffic first (act -> next, act <- prev), then backward-direction traffic.
    if send_next is not None:
        ops.append(dist.P2POp(dist.isend, send_next.detach().contiguous(), next_rank, tag=_FORWARD_TAG))
    if recv_prev:
        from_prev = torch.empty(shape, dtype=dtype, device=device)
        ops.append(dist.P2POp(dist.irecv, from_prev, prev_rank, tag=_FORWARD_TAG))
    if send_prev is not None:
        ops.append(dist.P2POp(dist.isend, send_prev.detach().contiguous(), prev_rank, tag=_BACKWARD_TAG))
    if recv_next:
        from_next = torch.empty(shape, dtype=dtype, device=device)
        ops.append(dist.P2POp(dist.irecv, from_next, next_rank, tag=_BACKWARD_TAG))
    if ops:
        for work in dist.batch_isend_irecv(ops):
            work.wait()
    if from_prev is not None:
        from_prev.requires_grad_(True)
    return from_prev, from_next
