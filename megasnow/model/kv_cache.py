"""Pre-allocated key/value cache for batched incremental decoding, plus the padding-aware attention it needs.

Prompts are left-padded; `valid` marks real tokens so no query ever attends to padding.
"""
import torch
import torch.nn.functional as F


def inference_attention_mask(valid_keys, query_start, num_queries):
    """Boolean [B, 1, T, K] "may attend" mask for queries at cache positions query_start .. +T over keys 0..K-1.

    A query sees real keys at or before its own position; it always sees itself, so rows of padding
    queries are never empty (their outputs are ignored).
    """
    batch, num_keys = valid_keys.shape
    key_pos = torch.arange(num_keys, device=valid_keys.device)
    query_pos = query_start + torch.arange(num_queries, device=valid_keys.device)
    causal = key_pos[None, :] <= query_pos[:, None]  # [T, K]
    itself = key_pos[None, :] == query_pos[:, None]
    mask = (causal[None] & valid_keys[:, None, :]) | itself[None]
    return mask[:, None]


def masked_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(D) + mask) v for q [B, T, Hq, D], k/v [B, K, Hk, D] (GQA), mask [B, 1, T, K]."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                                         enable_gqa=k.shape[2] != q.shape[2])
    return out.transpose(1, 2)


class KVCache:
    """Keys and values of every layer of one model chunk: [B, max_len, Hk_local, D] each, filled left to right.

    Per step: `begin(valid_new)` registers T new positions (valid_new [B, T] marks real tokens),
    each layer calls `update(layer_id, k, v)` and attends with `mask`, then `end()` advances.
    """

    def __init__(self, batch_size, max_len, num_kv_heads, head_dim, layer_ids, device, dtype):
        shape = (batch_size, max_len, num_kv_heads, head_dim)
        self.keys = {str(i): torch.zeros(shape, device=device, dtype=dtype) for i in layer_ids}
        self.values = {str(i): torch.zeros(shape, device=device, dtype=dtype) for i in layer_ids}
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.max_len = max_len
        self.length = 0
        self.mask = None
        self._step = 0

    def begin(self, valid_new):
        step = valid_new.shape[1]
        if self.length + step > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; cannot add {step} after {self.length}")
        self.valid[:, self.length:self.length + step] = valid_new
        self.mask = inference_attention_mask(self.valid[:, :self.length + step], self.length, step)
        self._step = step

    def update(self, layer_id, k, v):
        """Store this step's k, v [B, T, Hk, D] for layer `layer_id`; return all keys/values so far."""
        end = self.length + self._step
        keys, values = self.keys[str(layer_id)], self.values[str(layer_id)]
        keys[:, self.length:end] = k
        values[:, self.length:end] = v
        return keys[:, :end], values[:, :end]

    def end(self):
        self.length += self._step
        self.mask, self._step = None, 0

    def keep_rows(self, index):
        """Keep only the batch rows in `index` (a LongTensor), e.g. to drop finished sequences between steps."""
        for store in (self.keys, self.values):
            for name in store:
                store[name] = store[name].index_select(0, index)
        self.valid = self.valid.index_select(0, index)
