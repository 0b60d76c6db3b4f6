"""Training: the config, the loop, LR schedules, checkpoints and metrics (`python -m megasnow.train CONFIG.yaml`)."""
