"""Data parallelism: bucketed, backward-overlapped gradient reduction and the ZeRO-1 distributed optimizer."""
