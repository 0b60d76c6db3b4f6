"""The training loop: phases of blended data, micro-batch accumulation to the global batch through the pipeline
schedule, AdamW with clipping, held-out evaluation, NaN/Inf skipping, checkpoints, SIGTERM and exact resume."""
import math
import os
import signal
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from megasnow.config import ConfigError, dump_config, save_config
from megasnow.train import checkpoint as ckpt
from megasnow.train.config import build_model_config, check_parallel_layout, phase_steps, resolve_phases
from megasnow.train.data import MicroBatches, build_phase_datasets, check_blend_paths
from megasnow.train.metrics import MetricsLogger
from megasnow.train.schedules import lr_at


class TrainingStopped(RuntimeError):
    """The run stopped on purpose before its end (too many non-finite steps); a checkpoint was written."""


@dataclass
class TrainerState:
    """Everything besides tensors that resume needs; stored in each checkpoint's meta.json."""
    step: int = 0  # optimizer steps done in the whole run
    phase: int = 0  # index of the current phase
    step_in_phase: int = 0
    consumed_samples: int = 0  # of the current phase's training dataset
    tokens: int = 0
    nan_skips: int = 0
    consecutive_nan: int = 0
    finished_phases: list = field(default_factory=list)


class Trainer:
    def __init__(self, cfg):
        self.cfg = cfg
        self.state = TrainerState()
        self._stop_signal = None

    # ------------------------------------------------------------------ setup
    def setup(self):
        """Build everything and validate inputs; any bad setting fails here, before the first step."""
        from megasnow.parallel import state as ps

        cfg = self.cfg
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = self._pick_device()
        self.dtype = self._pick_dtype()
        pc = cfg.parallel
        if not ps.model_parallel_is_initialized():
            ps.initialize_model_parallel(pc.tensor, pc.pipeline, pc.virtual_pipeline)
        self.dp_rank, self.dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
        self.rank, self.world = ps.get_rank(), ps.get_world_size()
        self.is_logger = self.rank == self._logging_rank()
        per_step = cfg.train.micro_batch_size * self.dp_size
        if cfg.train.global_batch_size % per_step:
            raise ConfigError(f"train.global_batch_size ({cfg.train.global_batch_size}) must be a multiple of "
                              f"train.micro_batch_size x data-parallel size = {cfg.train.micro_batch_size} x "
                              f"{self.dp_size} = {per_step}")
        self.num_micro_batches = cfg.train.global_batch_size // per_step
        check_parallel_layout(cfg, self.num_micro_batches)

        self.phases = resolve_phases(cfg)
        for i, p in enumerate(self.phases):
            where = f"phases[{i}]" if cfg.phases else "data"
            check_blend_paths(p.blend, f"{where}.blend")
            check_blend_paths(p.valid_blend, f"{where}.valid_blend")

        self.tokenizer = None
        vocab = None
        if cfg.data.tokenizer:
            if not os.path.exists(cfg.data.tokenizer):
                raise ConfigError(f"data.tokenizer: {cfg.data.tokenizer} does not exist")
            from megasnow.data.tokenizer import load_tokenizer

            self.tokenizer = load_tokenizer(cfg.data.tokenizer)
            vocab = self.tokenizer.vocab_size
        self.model_cfg = build_model_config(cfg, vocab)
        self.eod_id = self._document_mask_eod()
        self._notes = []  # start-up remarks, written as events once the metrics logger exists
        self._build_datasets()
        self.model_chunks = self._build_model()
        self.optimizer = self._build_optimizer()

        from megasnow.model.flops import flops_per_token

        self.flops_per_token = flops_per_token(self.model_cfg, cfg.data.seq_len)
        resumed_from = self._restore()
        if self.rank == 0:
            save_config(cfg, os.path.join(cfg.log.dir, "config.yaml"))
        self.metrics = MetricsLogger(cfg.log.dir, self.flops_per_token, self.device, self.world,
                                     tensorboard=cfg.log.tensorboard, interval=cfg.log.interval,
                                     quiet=cfg.log.quiet, write=self.is_logger,
                                     resume_step=self.state.step if resumed_from else None)
        if resumed_from:
            self.metrics.event({"kind": "resume", "step": self.state.step,
                                "message": f"resumed from {resumed_from} at step {self.state.step}"})
        for note in self._notes:
            self.metrics.event({"kind": "note", "step": self.state.step, "message": note})
        return self

    def _document_mask_eod(self):
        """The end-of-document id that splits packed samples into documents when model.document_mask is on."""
        if not self.model_cfg.document_mask:
            return None
        if self.cfg.data.eod_id is not None:
            return self.cfg.data.eod_id
        if self.tokenizer is None:
            raise ConfigError("model.document_mask needs the end-of-document token id: set data.tokenizer "
                              "(its EOD token is used) or data.eod_id")
        return self.tokenizer.eod_id

    def _build_datasets(self):
        """Every phase's datasets up front, so a bad blend fails before the first step, not at a phase change."""
        cfg, gbs = self.cfg, self.cfg.train.global_batch_size
        n_valid = cfg.train.eval_iters * gbs if cfg.train.eval_interval > 0 else 0
        self.datasets, self.phase_lengths = [], []
        for i, phase in enumerate(self.phases):
            where = f"phases[{i}] ({phase.name})"
            steps = asked = phase_steps(phase, cfg)
            try:
                train, valid = build_phase_datasets(phase, cfg, None if steps is None else steps * gbs, n_valid)
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
            if steps is None or len(train) < steps * gbs:
                # every dataset has an explicit repeat count: the data, not the budget, fixes the phase length
                steps = len(train) // gbs
            if steps == 0:
                raise ConfigError(f"{where}: its data gives {len(train)} samples of "
                                  f"{cfg.data.seq_len + 1} tokens, less than one global batch of {gbs}")
            if all(b.repeat for b in phase.blend):
                self._notes.append(repeat_coverage_note(where, phase, asked, steps, len(train), gbs))
            if n_valid and (valid is None or len(valid) < gbs):
                have = "no held-out data" if valid is None else f"{len(valid)} held-out samples"
                raise ConfigError(f"train.eval_interval is {cfg.train.eval_interval} but {where} has {have}, less "
                                  f"than one global batch ({gbs}); set data.valid_fraction > 0, data.valid_blend or "
                                  f"phases[{i}].valid_blend, or train.eval_interval=0")
            self.datasets.append((train, valid))
            self.phase_lengths.append(steps)

    def _pick_device(self):
        want = self.cfg.train.device
        if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
            if not torch.cuda.is_available():
                raise ConfigError("train.device is cuda but no CUDA device is available")
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _pick_dtype(self):
        want = self.cfg.train.dtype
        if want == "auto":
            return torch.bfloat16 if self.device.type == "cuda" else torch.float32
        return torch.bfloat16 if want == "bf16" else torch.float32

    def _logging_rank(self):
        """Global rank of (tensor 0, data 0, last pipeline stage): it holds the loss."""
        pc = self.cfg.parallel
        return (pc.pipeline - 1) * pc.tensor * self.dp_size

    def _build_model(self):
        import dataclasses

        from megasnow.parallel.parallelize import ParallelConfig, build_model

        known = {f.name for f in dataclasses.fields(ParallelConfig)}
        pc = {k: v for k, v in dataclasses.asdict(self.cfg.parallel).items() if k in known}
        extra = {"micro_batch_size": self.cfg.train.micro_batch_size,
                 "params_dtype": "bf16" if self.dtype == torch.bfloat16 else "fp32"}
        pc.update({k: v for k, v in extra.items() if k in known})
        self.parallel_cfg = ParallelConfig(**pc)
        chunks = build_model(self.model_cfg, self.parallel_cfg, self.cfg.train.seed)
        p = next(chunks[0].parameters())
        if p.device.type != self.device.type:
            raise ConfigError(f"the model was built on {p.device} but train.device resolves to {self.device}; "
                              f"on GPU launch with torchrun (NCCL) or set train.device=cpu")
        return chunks

    def _build_optimizer(self):
        from megasnow.parallel.optimizer import build_optimizer

        o = self.cfg.optim
        first = self.phases[min(self.state.phase, len(self.phases) - 1)].schedule
        return build_optimizer(self.model_chunks, lr=lr_at(0, first, 1), weight_decay=o.weight_decay,
                               betas=(o.beta1, o.beta2), eps=o.eps, clip_grad=o.clip_grad,
                               use_distributed_optimizer=self.cfg.parallel.use_distributed_optimizer)

    def _restore(self):
        """Resume from <checkpoint.dir>/latest, or take initial weights from checkpoint.init_from."""
        c = self.cfg.checkpoint
        if c.dir and c.resume:
            latest = ckpt.resolve_latest(c.dir)
            if latest is not None:
                meta = ckpt.load_checkpoint(latest, self.model_chunks, self.optimizer)
                known = TrainerState.__dataclass_fields__
                self.state = TrainerState(**{k: v for k, v in meta["trainer"].items() if k in known})
                # A run stopped by K non-finite steps in a row is resumed on purpose (new data position, a fix):
                # give it a fresh budget of K rather than stopping at its first NaN. nan_skips keeps the total.
                self.state.consecutive_nan = 0
                return latest
        if c.init_from:
            step_dir = ckpt.resolve_checkpoint(c.init_from)
            ckpt.load_model_weights(step_dir, self.model_chunks)
            if self.rank == 0 and not self.cfg.log.quiet:
                print(f"initial weights from {step_dir}", flush=True)
        return None

    # ------------------------------------------------------------------ run
    def run(self):
        """Train through every phase; returns the final TrainerState. SIGTERM saves and returns early."""
        old = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            for index in range(self.state.phase, len(self.phases)):
                if self._run_phase(index):
                    return self.state
            return self.state
        finally:
            signal.signal(signal.SIGTERM, old)
            self.metrics.close()

    def _on_sigterm(self, signum, frame):
        self._stop_signal = signum

    def _run_phase(self, index):
        """Run phase `index` from the current state; True when the run must stop (signal)."""
        cfg, st = self.cfg, self.state
        phase, total = self.phases[index], self.phase_lengths[index]
        if st.phase != index:  # entering a new phase
            st.phase, st.step_in_phase, st.consumed_samples = index, 0, 0
        if st.step_in_phase == 0 and index > 0 and phase.optimizer_state == "reset":
            # Forget the Adam moments but keep the fp32 masters: rebuilding the optimizer would re-derive the
            # masters from the (bf16-rounded) model weights and lose precision at every phase boundary.
            self.optimizer.reset_state()
        gbs = cfg.train.global_batch_size
        train_ds, self.valid_ds = self.datasets[index]
        batches = MicroBatches(train_ds, st.consumed_samples, cfg.train.micro_batch_size, self.num_micro_batches,
                               self.dp_rank, self.dp_size, self.device, eod_id=self.eod_id)
        if st.step_in_phase == 0:
            self.metrics.event({"kind": "phase", "step": st.step, "phase": phase.name, "steps": total,
                                "message": f"phase {index + 1}/{len(self.phases)} '{phase.name}': {total} steps "
                                           f"of {gbs} x {cfg.data.seq_len} tokens, schedule {phase.schedule.style}"})
        while st.step_in_phase < total:
            self._train_step(batches, phase, total)
            last = st.step_in_phase == total
            if cfg.train.eval_interval and (st.step % cfg.train.eval_interval == 0 or last):
                self.evaluate()
            if last:
                st.finished_phases.append(phase.name)
            if self._signal_received():
                where = self.save("sigterm")
                saved = f"saved a checkpoint at step {st.step} in {where}" if where else \
                    f"no checkpoint.dir, nothing saved (stopped at step {st.step})"
                self.metrics.event({"kind": "stop", "step": st.step, "reason": "sigterm",
                                    "message": f"SIGTERM: {saved}; exiting"})
                return True
            if cfg.checkpoint.interval and st.step % cfg.checkpoint.interval == 0:
                self.save("interval")
            elif last and index == len(self.phases) - 1 and cfg.checkpoint.save_at_end:
                self.save("end")
        return False

    def _train_step(self, batches, phase, total):
        from megasnow.parallel.pipeline.schedules import forward_backward

        cfg, st = self.cfg, self.state
        t0 = time.perf_counter()
        micro = batches.next_step()
        lr = lr_at(st.step_in_phase, phase.schedule, total)
        self.optimizer.set_lr(lr)
        self.optimizer.zero_grad()
        for m in self.model_chunks:
            m.train()
        losses = forward_backward(self.model_chunks, micro)
        loss = self._global_mean_loss(losses)
        if (st.step + 1) in cfg.train.debug_nan_steps:
            loss = float("nan")
            self._poison_grads()
        skipped, grad_norm = True, float("nan")
        if math.isfinite(loss):
            updated, grad_norm = self.optimizer.step()
            skipped = not updated
        self.optimizer.zero_grad()
        st.step += 1
        st.step_in_phase += 1
        st.consumed_samples += cfg.train.global_batch_size
        tokens = cfg.train.global_batch_size * cfg.data.seq_len
        st.tokens += tokens
        if skipped:
            st.nan_skips += 1
            st.consecutive_nan += 1
        else:
            st.consecutive_nan = 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        record = {"kind": "train", "step": st.step, "phase": phase.name, "loss": loss, "lr": lr,
                  "grad_norm": float(grad_norm), "skipped": skipped, "nan_skips": st.nan_skips,
                  "tokens": st.tokens}
        steps_left = sum(self.phase_lengths[st.phase:]) - st.step_in_phase
        self.metrics.step(record, time.perf_counter() - t0, tokens, steps_left)
        if st.consecutive_nan >= cfg.train.max_consecutive_nan:
            where = self.save("nan_abort") if cfg.checkpoint.dir else None
            msg = (f"stopping: {st.consecutive_nan} steps in a row had a non-finite loss or gradient norm "
                   f"(steps {st.step - st.consecutive_nan + 1}..{st.step}); "
                   + (f"the last good weights are saved in {where}" if where else "no checkpoint.dir to save to"))
            self.metrics.event({"kind": "stop", "step": st.step, "reason": "nan", "message": msg})
            raise TrainingStopped(msg)

    def _poison_grads(self):
        for m in self.model_chunks:
            for p in m.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
                main = getattr(p, "main_grad", None)
                if main is not None:
                    main.fill_(float("nan"))

    def _global_mean_loss(self, losses):
        """Mean loss of this step over all data-parallel ranks, known on every rank (so every rank takes the
        same skip decision). Only last-stage ranks hold losses."""
        local = sum(losses) / len(losses) if losses else 0.0
        if not (dist.is_available() and dist.is_initialized()) or self.world == 1:
            return float(local)
        t = torch.tensor([local * (1 if losses else 0), 1.0 if losses else 0.0], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.to(self.device)
        dist.all_reduce(t)
        # Tensor-parallel peers hold identical losses, so this is the mean over data-parallel replicas.
        return float(t[0] / t[1])

    def _signal_received(self):
        flag = 1.0 if self._stop_signal is not None else 0.0
        if dist.is_available() and dist.is_initialized() and self.world > 1:
            t = torch.tensor([flag])
            if dist.get_backend() == "nccl":
                t = t.to(self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = float(t[0])
        return flag > 0

    @torch.no_grad()
    def evaluate(self):
        """Mean loss over the same held-out samples every time (eval_iters global batches)."""
        from megasnow.parallel.pipeline.schedules import forward_backward

        if self.valid_ds is None:
            return None
        cfg = self.cfg
        for m in self.model_chunks:
            m.eval()
        n = min(cfg.train.eval_iters, len(self.valid_ds) // cfg.train.global_batch_size)
        if n == 0:
            return None
        batches = MicroBatches(self.valid_ds, 0, cfg.train.micro_batch_size, self.num_micro_batches,
                               self.dp_rank, self.dp_size, self.device, eod_id=self.eod_id)
        losses = []
        for _ in range(n):
            losses.append(self._global_mean_loss(forward_backward(self.model_chunks, batches.next_step(),
                                                                  forward_only=True)))
        loss = sum(losses) / len(losses)
        phase = self.phases[self.state.phase].name
        self.metrics.event({"kind": "eval", "step": self.state.step, "phase": phase, "loss": loss,
                            "message": f"eval  step {self.state.step:>6d} [{phase}] held-out loss {loss:.4f}"})
        return loss

    def save(self, reason):
        """Collective checkpoint of the current state; returns its folder (None without checkpoint.dir)."""
        c = self.cfg.checkpoint
        if not c.dir:
            return None
        import dataclasses

        trainer = dataclasses.asdict(self.state)
        extra = {}
        if self.cfg.data.tokenizer:  # checkpoints carry their tokenizer, so exports and generation need nothing else
            name = "tokenizer.json" if self.cfg.data.tokenizer.endswith(".json") else "tokenizer.model"
            extra[name] = self.cfg.data.tokenizer
        return ckpt.save_checkpoint(c.dir, self.state.step, self.model_chunks, self.optimizer,
                                    {"trainer": trainer, "reason": reason,
                                     "phase_name": self.phases[self.state.phase].name,
                                     "model_config": dataclasses.asdict(self.model_cfg)},
                                    dump_config(self.cfg), c.keep_last, extra_files=extra)


def repeat_coverage_note(where, phase, asked, steps, samples, gbs):
    """How much of a repeat-count blend a phase really trains on: explicit steps/tokens cap (or the data
    shortens) the exact `repeat` passes the blend promises."""
    used = steps * gbs
    frac = used / samples
    passes = ", ".join(f"{frac * b.repeat:.2f} of {b.repeat} passes over {os.path.basename(b.path)}"
                       for b in phase.blend)
    if asked is None:
        why = "as the repeat counts give"
    elif asked > steps:
        why = f"shortened from the {asked} steps asked: the repeated data holds only {samples} samples"
    elif used < samples:
        why = f"capped by its steps/tokens: the repeat counts give {samples} samples"
    else:
        why = "as the repeat counts give"
    return f"{where}: {steps} steps x {gbs} = {used} samples ({why}) = {passes}"


def run_training(cfg):
    """Set up and run; returns the final TrainerState (raises TrainingStopped after a NaN stop)."""
    trainer = Trainer(cfg).setup()
    return trainer.run()
