"""Parameter counts and model FLOPs per token (for MFU), attention included.

Training FLOPs per token = 3 x forward (backward = 2 x forward):
    forward = 2 * N_matmul + 4 * L * (Hq * D) * S
where N_matmul counts the weights used in matrix multiplies (per layer: QKV, output projection, gate+up,
down; plus the output head, tied or not), 2 FLOPs per multiply-add, and 4 * L * d_attn * S is the
Q K^T and attention-times-V products over a full (non-causal) S x S score matrix, as Megatron counts it
(12 * L * d_attn * S for training). Norms, RoPE, SwiGLU and softmax are ignored (< 1%).
"""


def layer_matmul_parameters(cfg):
    """Weights of one decoder layer's matrix multiplies."""
    q = cfg.num_heads * cfg.head_dim
    kv = cfg.num_kv_heads * cfg.head_dim
    attn = cfg.hidden_size * (q + 2 * kv) + q * cfg.hidden_size
    mlp = 3 * cfg.hidden_size * cfg.ffn_hidden_size
    return attn + mlp


def num_parameters(cfg, include_embedding=True, padded=False):
    """Trainable parameters of the whole model (tied embedding counted once).

    padded=True counts the padded vocabulary rows that the embedding tensors actually hold.
    """
    vocab = cfg.padded_vocab_size if padded else cfg.vocab_size
    per_layer = layer_matmul_parameters(cfg) + 2 * cfg.hidden_size  # + two RMSNorm weights
    total = cfg.num_layers * per_layer + cfg.hidden_size  # + final norm
    if include_embedding:
        total += vocab * cfg.hidden_size * (1 if cfg.tie_embeddings else 2)
    elif not cfg.tie_embeddings:
        total += vocab * cfg.hidden_size  # an untied head is a real layer, not an embedding
    return total


def forward_flops_per_token(cfg, seq_len):
    matmul_params = cfg.num_layers * layer_matmul_parameters(cfg) + cfg.vocab_size * cfg.hidden_size
    attention = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len
    return 2 * matmul_params + attention


def flops_per_token(cfg, seq_len, training=True):
    """Model FLOPs per token at sequence length seq_len (training: forward + backward = 3 x forward)."""
    return (3 if training else 1) * forward_flops_per_token(cfg, seq_len)
