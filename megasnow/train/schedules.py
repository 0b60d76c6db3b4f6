"""Learning-rate schedules as pure functions of the 0-based optimizer step inside a phase.

Step s uses lr(s). Warmup is linear from warmup_init_lr, reaching max_lr at step warmup_steps - 1, so no update
is wasted at lr 0; decay then runs over `decay_steps` (default: the rest of the phase) and holds its end value.
"""
import math


def lr_at(step, schedule, total_steps):
    """Learning rate of optimizer step `step` (0-based) for a phase of `total_steps` steps."""
    s = schedule
    warmup = s.warmup_steps
    if step < warmup:
        return s.warmup_init_lr + (s.max_lr - s.warmup_init_lr) * (step + 1) / warmup
    if s.style == "constant":
        return s.max_lr
    decay_steps = s.decay_steps if s.decay_steps is not None else total_steps - warmup
    decay_steps = max(1, decay_steps)
    if s.style == "wsd":
        # warmup -> stable at max_lr -> decay over the last fraction of the post-warmup steps.
        n_decay = max(1, round(decay_steps * s.wsd_decay_fraction))
        decay_start = warmup + decay_steps - n_decay
        if step < decay_start:
            return s.max_lr
        progress = min(1.0, (step - decay_start) / n_decay)
        if s.wsd_decay_style == "cosine":
            frac = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif s.wsd_decay_style == "sqrt":
            frac = 1.0 - math.sqrt(progress)
        else:
            frac = 1.0 - progress
        return s.min_lr + (s.max_lr - s.min_lr) * frac
    progress = min(1.0, (step - warmup) / decay_steps)
    if s.style == "cosine":
        return s.min_lr + 0.5 * (s.max_lr - s.min_lr) * (1.0 + math.cos(math.pi * progress))
    if s.style == "linear":
        return s.min_lr + (s.max_lr - s.min_lr) * (1.0 - progress)
    raise ValueError(f"schedule.style: unknown schedule {s.style!r}")


def warmup_warning(where, name, schedule, total_steps, key):
    """A one-line warning when a phase of `total_steps` steps is shorter than its warmup, so that its LR never
    reaches max_lr (it peaks at lr_at(total_steps - 1)); None when the warmup fits. `where`/`name` name the phase
    (e.g. "phases[1]", "arm") and `key` the warmup's config key (e.g. "phases[1].schedule.warmup_steps")."""
    warmup = schedule.warmup_steps
    if total_steps is None or warmup <= total_steps:
        return None
    peak = lr_at(total_steps - 1, schedule, total_steps)
    return (f"warning: {where} ({name}) warms up for {warmup} steps ({key}) but runs {total_steps}: the LR never "
            f"reaches max_lr {schedule.max_lr:g} (peaks at {peak:.3g}); lower {key} or lengthen the phase")
