"""`python -m megasnow.model`: every preset's shape, parameter count and training FLOPs per token."""
from megasnow.model.config import PRESETS
from megasnow.model.flops import flops_per_token, num_parameters


def main():
    print(f"{'preset':<16} {'layers':>6} {'hidden':>6} {'ffn':>6} {'heads':>7} {'vocab':>6} {'tied':>5} "
          f"{'parameters':>15} {'non-embedding':>15} {'GFLOP/token @ctx':>17}")
    for name, cfg in PRESETS.items():
        print(f"{name:<16} {cfg.num_layers:>6} {cfg.hidden_size:>6} {cfg.ffn_hidden_size:>6} "
              f"{cfg.num_heads:>3}/{cfg.num_kv_heads:<3} {cfg.vocab_size:>6} {str(cfg.tie_embeddings):>5} "
              f"{num_parameters(cfg):>15,} {num_parameters(cfg, include_embedding=False):>15,} "
              f"{flops_per_token(cfg, cfg.max_seq_len) / 1e9:>17.3f}")


if __name__ == "__main__":
    main()
