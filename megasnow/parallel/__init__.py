"""Tensor, sequence, pipeline and data parallelism on torch.distributed (NCCL on GPU, gloo on CPU)."""
