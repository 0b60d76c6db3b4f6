"""The training loop: phases of blended data, micro-batch accumulation to the global batch through the pipeline
schedule, AdamW with clipping, held-out evaluation, NaN/Inf skipping, checkpoints, SIGTERM/Ctrl-C and exact resume."""
import math
import os
import signal
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from megasnow.config import ConfigError, dump_config, save_config
from megasnow.errors import UserError
from megasnow.train import checkpoint as ckpt
from megasnow.train import resume, run_dir
from megasnow.train.config import (alike_on_every_rank, build_parallel_config, check_layout, phase_steps,
                                   resolve_log_dir, resolve_phases, sequence_parallel_note)
from megasnow.train.data import (MicroBatches, build_fim_transforms, build_phase_datasets, check_blend_paths,
                                 check_data_tokenizer, check_init_from, check_init_from_model,
                                 check_model_vocab, document_end_mix,
                                 load_run_tokenizer)
from megasnow.train.metrics import MetricsLogger, format_eta
from megasnow.train.schedules import lr_at
from megasnow.utils.device import resolve_device


class TrainingStopped(RuntimeError):
    """The run stopped on purpose before its end (too many non-finite steps); a checkpoint was written."""


class LostContact(RuntimeError):
    """A collective failed because another rank went away (killed, crashed, its node lost): the message is the one
    line to print (exit 1; not a user error)."""


# Phrases of gloo's and NCCL's transport errors when a peer is gone (a peer's death surfaces as these, or as
# torch.distributed.DistError subclasses in newer torch).
_TRANSPORT_PHRASES = ("connection reset by peer", "connection closed by peer", "broken pipe", "socket timeout",
                      "gloo", "nccl", "connection refused", "timed out")


def lost_contact(error):
    """Whether `error` is a collective's transport failure (a peer rank is gone), not a bug of this rank."""
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(error, dist_error):
        return True
    return isinstance(error, RuntimeError) and any(p in str(error).lower() for p in _TRANSPORT_PHRASES)


@dataclass
class TrainerState:
    """Everything besides tensors that resume needs; stored in each checkpoint's meta.json."""
    step: int = 0  # optimizer steps done in the whole run
    phase: int = 0  # index of the current phase
    step_in_phase: int = 0
    # Successful updates in the current phase: the LR schedule's position. As in Megatron, a step skipped for a
    # non-finite loss or gradient norm does not advance the schedule (it still consumes its data).
    scheduler_steps: int = 0
    consumed_samples: int = 0  # of the current phase's training dataset
    tokens: int = 0
    nan_skips: int = 0
    consecutive_nan: int = 0
    finished_phases: list = field(default_factory=list)


class Trainer:
    def __init__(self, cfg):
        self.cfg = cfg
        self.state = TrainerState()
        self.stop_signal = None  # the first of SIGTERM or SIGINT received
        self._repeat_noted = False
        self._activity = "start-up"  # what the run is doing, named when a collective fails
        self.finished_at = None  # the step of a checkpoint that already ends this run (setup found nothing to do)
        self._started = time.perf_counter()
        self._first_step = True

    # ------------------------------------------------------------------ setup
    def setup(self):
        """Build everything and validate inputs; any bad setting fails here, before the first step. A checkpoint
        that already finished the run is recognised before data or model are built (`finished_at`). Rank 0 locks
        checkpoint.dir and log.dir (megasnow.train.run_dir) until `close()` or the end of `run()`."""
        self._lock = None
        try:
            return self._setup()
        except BaseException:
            self.close(failed=True)
            raise

    def close(self, failed=False):
        """Release the run's folder locks (a failed start also removes the folders it created empty)."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.release(remove_created=failed)

    def _setup(self):
        from megasnow.parallel import state as ps

        cfg = resolve_log_dir(self.cfg)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = self._pick_device()
        self.data_workers = cfg.data.num_workers if cfg.data.num_workers is not None else \
            (2 if self.device.type == "cuda" else 0)
        self.dtype = self._pick_dtype()
        pc = cfg.parallel
        if not ps.model_parallel_is_initialized():
            ps.initialize_model_parallel(pc.tensor, pc.pipeline, pc.virtual_pipeline)
        self.dp_rank, self.dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
        self.rank, self.world = ps.get_rank(), ps.get_world_size()
        self.is_logger = self.rank == self._logging_rank()
        self.phases = resolve_phases(cfg)
        self._notes = []  # start-up remarks, written as events once the metrics logger exists
        self._warnings_early = []  # start-up warnings found before the schedule's
        sp_note = sequence_parallel_note(cfg)
        if sp_note:
            self._warnings_early.append(sp_note)
        self.tokenizer, self.tokenizer_file = load_run_tokenizer(cfg.data.tokenizer)
        # Every layout check (world size, batch, heads, layers per stage, ...) before any folder, data or model.
        with alike_on_every_rank():
            self.model_cfg, _, self.num_micro_batches = check_layout(
                cfg, self.world, self.tokenizer.vocab_size if self.tokenizer else None)
        self._lock = run_dir.acquire(cfg, self.rank)  # before anything is read from or written to the folders
        with alike_on_every_rank():  # the config against the checkpoint's: the same on every rank
            self.resume_from = self._check_resume()
        if self.finished_at is not None:
            return self
        if self.resume_from is None and cfg.checkpoint.init_from:
            with alike_on_every_rank(files=True):
                self._init_from = check_init_from(cfg.checkpoint.init_from)
                check_init_from_model(self._init_from, self.model_cfg)
        resuming = self.resume_from is not None
        self._log_mode = run_dir.on_rank0(self.rank, lambda: run_dir.check_log_dir(cfg, resuming))
        if self._log_mode == "restart":
            self._notes.append(f"log.dir {cfg.log.dir}: this run starts again at step 0 (no checkpoint "
                               f"in {cfg.checkpoint.dir} to resume, or checkpoint.resume=false): its earlier "
                               f"metrics there are replaced")
        blends = [(f"{f'phases[{i}]' if cfg.phases else 'data'}.{key}", getattr(p, key))
                  for i, p in enumerate(self.phases) for key in ("blend", "valid_blend")]
        with alike_on_every_rank(files=True):
            for where, items in blends:
                check_blend_paths(items, where)
        data_vocab = check_data_tokenizer(blends, self.tokenizer, cfg.data.tokenizer)

        check_model_vocab(self.model_cfg.vocab_size, cfg.model.vocab_size is not None, self.tokenizer, data_vocab)
        self.eod_id = self._document_mask_eod()
        self.fim = self._fim_transforms()
        self._build_datasets()
        self._warnings = self._warnings_early + self._schedule_warnings()
        self.model_chunks = self._build_model()
        self.optimizer = self._build_optimizer()

        from megasnow.model.flops import flops_per_token

        self.flops_per_token = flops_per_token(self.model_cfg, cfg.data.seq_len)
        self._restore()
        if self.rank == 0:
            save_config(cfg, os.path.join(cfg.log.dir, "config.yaml"))
            run_dir.write_identity(cfg)
        resume_step = self.state.step if self.resume_from else 0 if self._log_mode in ("restart", "replace") else None
        self.metrics = MetricsLogger(cfg.log.dir, self.flops_per_token, self.device, self.world,
                                     tensorboard=cfg.log.tensorboard, interval=cfg.log.interval,
                                     quiet=cfg.log.quiet, write=self.is_logger, resume_step=resume_step)
        if self.resume_from:
            self.metrics.event({"kind": "resume", "step": self.state.step,
                                "message": f"resumed from {self.resume_from} at step {self.state.step}"})
        for note in self._notes:
            self.metrics.event({"kind": "note", "step": self.state.step, "message": note})
        for line in self._warnings:
            self.metrics.event({"kind": "warning", "step": self.state.step, "message": line})
        # Work done every N steps, after the step and before its checkpoint: (interval, function). Benchmark
        # evaluation during training plugs in here as one more pair; each runs every `interval` steps and at
        # the end of each phase (an interval of 0 switches it off).
        self.hooks = [(cfg.train.eval_interval, self.evaluate)] + self._benchmark_hooks()
        return self

    def _benchmark_hooks(self):
        """megasnow.eval's benchmark evaluation (eval.* keys) as hooks; benchmarks are read and tokenized here."""
        ev, cfg, hooks = self.cfg.eval, self.cfg, []
        try:
            if ev.benchmark_loss_interval:
                from megasnow.eval.training import BenchmarkLoss

                self.benchmark_loss = BenchmarkLoss(ev.benchmark_files, self.tokenizer, cfg.data.seq_len,
                                                    cfg.train.micro_batch_size, self.device)
                self.metrics.event({"kind": "note", "step": self.state.step,
                                    "message": f"benchmark loss every {ev.benchmark_loss_interval} steps: "
                                               f"{self.benchmark_loss.describe()}"})
                hooks.append((ev.benchmark_loss_interval, self.evaluate_benchmark_loss))
            if ev.pass_at_1_interval:
                from megasnow.eval.training import GreedyPassAt1

                self.pass_at_1 = None
                if self.rank == 0:
                    self.pass_at_1 = GreedyPassAt1(ev.benchmark_files[0], ev.pass_at_1_tasks, self.tokenizer_file,
                                                   ev.pass_at_1_max_tokens)
                hooks.append((ev.pass_at_1_interval, self.evaluate_pass_at_1))
        except UserError as e:
            raise ConfigError(f"eval.benchmark_files: {e}") from None
        return hooks

    def _schedule_warnings(self):
        """Start-up warnings about the LR schedules: a phase shorter than its warmup never reaches max_lr."""
        from megasnow.train.schedules import warmup_warning

        out = []
        for i, (phase, steps) in enumerate(zip(self.phases, self.phase_lengths)):
            where = f"phases[{i}]" if self.cfg.phases else "train"
            own = self.cfg.phases and self.cfg.phases[i].schedule is not None
            key = f"phases[{i}].schedule.warmup_steps" if own else "schedule.warmup_steps"
            line = warmup_warning(where, phase.name, phase.schedule, steps, key)
            if line:
                out.append(line)
        return out

    def _say(self, message):
        """A start-up progress line (before the metrics logger exists), from the logging rank."""
        if self.is_logger and not self.cfg.log.quiet:
            print(message, flush=True)

    def _check_resume(self):
        """The checkpoint to resume from (None: a new run), after comparing its config with this one: changed keys
        are named, changes that break exact resume refused. Sets `finished_at` when it already ends the run."""
        c = self.cfg.checkpoint
        latest = ckpt.resolve_latest(c.dir) if c.dir and c.resume else None
        self._resume_changes = self._saved_cfg = None
        if latest is None:
            return None
        meta = ckpt.read_meta(latest)
        self._saved_cfg = resume.saved_config(latest)
        if self._saved_cfg is None:
            self._notes.append(f"{latest}/config.yaml cannot be read as this version's config; config changes "
                               f"since that checkpoint are not checked")
        else:
            self._resume_changes, line = resume.check_resume_config(
                self._saved_cfg, self.cfg, latest, meta["trainer"]["phase"], c.allow_config_change)
            if line and self.is_logger:
                from megasnow.utils.cli import warn

                warn(line)
        if resume.run_finished(meta["trainer"], self.cfg, self._resume_changes):
            self.finished_at = meta["step"]
            self.state = _trainer_state(meta["trainer"])
        return latest

    def _document_tokens(self):
        """The blends' end-of-document (and BOS) ids: megasnow.data.dataset_meta.resolve_document_tokens."""
        from megasnow.data.dataset_meta import resolve_document_tokens

        paths = [b.path for phase in self.phases for b in (*phase.blend, *phase.valid_blend)]
        return resolve_document_tokens(paths, eod_id=self.cfg.data.eod_id, tokenizer=self.tokenizer)

    def _fim_transforms(self):
        """data.fim's transform factory (None when off), checked against the tokenizer before anything is read."""
        f = self.cfg.data.fim
        if f.rate == 0:
            return None
        doc = self._document_tokens()
        fim = build_fim_transforms(self.cfg, self.tokenizer, doc.eod_id, doc.bos_id)
        t = self.tokenizer.fim_tokens()
        ids = ", ".join(f"{n}={i}" for n, i in zip(t.names, (t.prefix, t.middle, t.suffix, t.pad)))
        self._say(f"data: fill-in-the-middle ON (data.fim): rate {f.rate} of {f.level}-level units rearranged, "
                  f"spm_rate {f.spm_rate} of those in SPM order (the rest PSM), level {f.level}; tokens {ids}"
                  f"{'; <fim_pad> labels left out of the loss' if f.mask_pad else ''}; units end at ids "
                  f"{fim('train').separators}")
        return fim

    def _document_mask_eod(self):
        """The end-of-document id that splits packed samples into documents when model.document_mask is on."""
        if not self.model_cfg.document_mask:
            return None
        doc = self._document_tokens()
        if doc.eod_id is None:
            raise ConfigError("model.document_mask needs the end-of-document token id: binarize with --append-eod, "
                              "or set data.tokenizer (its eod is used) or data.eod_id")
        self._say(f"data: document_mask splits samples at id {doc.eod_id} ({doc.source})")
        mix = document_end_mix([b.path for phase in self.phases for b in (*phase.blend, *phase.valid_blend)])
        if mix:
            self._warnings_early.append(mix)
        return doc.eod_id

    def _build_datasets(self):
        """Every phase's datasets up front, so a bad blend fails before the first step, not at a phase change."""
        cfg, gbs = self.cfg, self.cfg.train.global_batch_size
        n_valid = cfg.train.eval_iters * gbs if cfg.train.eval_interval > 0 else 0
        self.datasets, self.phase_lengths = [], []
        self._say(f"data: building the sample indices of {len(self.phases)} phase(s) (cached beside the data, or "
                  f"in data.cache_dir, for the next run); read by "
                  + (f"{self.data_workers} DataLoader worker(s) per rank (data.num_workers)" if self.data_workers
                     else "the training process (data.num_workers=0)"))
        for i, phase in enumerate(self.phases):
            where = f"phases[{i}] ({phase.name})"
            steps = asked = phase_steps(phase, cfg)
            t0 = time.perf_counter()
            try:
                train, valid = build_phase_datasets(phase, cfg, None if steps is None else steps * gbs, n_valid,
                                                    fim=self.fim)
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
            held_out = f", {len(valid):,} held-out" if valid is not None else ""
            self._say(f"data: {where}: {len(train):,} samples of {cfg.data.seq_len} tokens from "
                      f"{len(phase.blend)} dataset(s){held_out} ({time.perf_counter() - t0:.1f}s)")
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
            distinct = _distinct_samples(valid) if n_valid else None
            if distinct is not None and distinct < n_valid:
                self._notes.append(f"train.eval_iters is {cfg.train.eval_iters} global batches ({n_valid} samples) "
                                   f"but {where}'s held-out data holds about {distinct} distinct samples: each "
                                   f"evaluation reuses held-out batches (train.eval_iters={max(1, distinct // gbs)} "
                                   f"or fewer reads each sample once)")
            self.datasets.append((train, valid))
            self.phase_lengths.append(steps)
        if self.resume_from is not None:
            self._check_resumed_phase()

    def _check_resumed_phase(self):
        """A new length of the phase being resumed must keep the order of the samples it already trained on."""
        changes = self._resume_changes
        if changes is None or not changes.current_phase_length or self.cfg.checkpoint.allow_config_change:
            return
        st = _trainer_state(ckpt.read_meta(self.resume_from)["trainer"])
        resume.check_phase_length(self._saved_cfg, self.cfg, st, self.datasets[st.phase][0],
                                  self.phase_lengths[st.phase], self.resume_from)

    def _pick_device(self):
        device = resolve_device(self.cfg.train.device, "train.device")
        return torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else device

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
        from megasnow.parallel.parallelize import build_model

        self.parallel_cfg = build_parallel_config(self.cfg, "bf16" if self.dtype == torch.bfloat16 else "fp32")
        from megasnow.model.flops import num_parameters

        p = self.cfg.parallel
        self._say(f"model: building {self.cfg.model.preset} ({num_parameters(self.model_cfg, padded=True):,} "
                  f"parameters, {self.model_cfg.num_layers} layers x {self.model_cfg.hidden_size}) in "
                  f"{str(self.dtype).replace('torch.', '')} on {self.device.type}, tensor x pipeline x data = "
                  f"{p.tensor} x {p.pipeline} x {self.dp_size}")
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
        """Resume from the checkpoint _check_resume found, or take initial weights from checkpoint.init_from."""
        c = self.cfg.checkpoint
        if self.resume_from is not None:
            self._say(f"checkpoint: loading {self.resume_from}")
            meta = ckpt.load_checkpoint(self.resume_from, self.model_chunks, self.optimizer)
            self.state = _trainer_state(meta["trainer"])
            saved_dp = meta["layout"]["dp_size"]
            if saved_dp != self.dp_size:
                self._notes.append(f"resumed on {self.dp_size} data-parallel rank(s), saved on {saved_dp}: the same "
                                   f"global batch of {self.cfg.train.global_batch_size}, so the data continues at "
                                   f"sample {self.state.consumed_samples} of the phase")
            # A run stopped by K non-finite steps in a row is resumed on purpose (new data position, a fix):
            # give it a fresh budget of K rather than stopping at its first NaN. nan_skips keeps the total.
            self.state.consecutive_nan = 0
        elif c.init_from:
            step_dir = self._init_from
            ckpt.load_model_weights(step_dir, self.model_chunks)
            self._say(f"initial weights from {step_dir}")

    # ------------------------------------------------------------------ run
    def run(self):
        """Train through every phase; returns the final TrainerState. SIGTERM and Ctrl-C (SIGINT) finish the step,
        save and return early (`stop_signal` says which came first); the handlers stay until the checkpoint is
        saved, so further signals change nothing."""
        if self.finished_at is not None:
            self.close()
            return self.state
        handlers = {sig: signal.signal(sig, self._on_stop_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        start_step, t0 = self.state.step, time.perf_counter()
        try:
            for index in range(self.state.phase, len(self.phases)):
                if self._run_phase(index):
                    break
            self._summary(start_step, time.perf_counter() - t0)
            return self.state
        except Exception as e:
            if self.world > 1 and lost_contact(e):
                raise LostContact(self._lost_contact_line(e)) from e
            raise
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.metrics.close()
            self.close()

    def _lost_contact_line(self, error):
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        c = self.cfg.checkpoint
        latest = ckpt.resolve_latest(c.dir) if c.dir else None
        resume_at = (f"resume from the last checkpoint (step {ckpt.read_meta(latest)['step']}, {latest})" if latest
                     else "no checkpoint saved yet to resume from" if c.dir else "no checkpoint.dir to resume from")
        return (f"rank {self.rank}: lost contact with another rank during {self._activity} (it may have died; see "
                f"torchrun's report): {first}; {resume_at}")

    def _on_stop_signal(self, signum, frame):
        """Keep the FIRST stop signal as the reason; later ones are no-ops (noted once). Under torchrun a Ctrl-C
        reaches each worker from the terminal (SIGINT to the process group) and again from torchrun (SIGINT, then
        SIGTERM): none of them may change the reason or interrupt the step or the checkpoint being saved."""
        if self.stop_signal is None:
            self.stop_signal = signum
            return
        if not self._repeat_noted and getattr(self, "is_logger", True):
            self._repeat_noted = True
            name = signal.Signals(signum).name
            os.write(2, f"megasnow.train: {name} received while stopping; finishing the step and the checkpoint "
                        f"first (SIGKILL stops at once, losing them)\n".encode())

    def _run_phase(self, index):
        """Run phase `index` from the current state; True when the run must stop (signal)."""
        cfg, st = self.cfg, self.state
        phase, total = self.phases[index], self.phase_lengths[index]
        if st.phase != index:  # entering a new phase
            st.phase, st.step_in_phase, st.scheduler_steps, st.consumed_samples = index, 0, 0, 0
        del st.finished_phases[index:]  # a finished phase made longer at resume is not finished any more
        if st.step_in_phase == 0 and index > 0 and phase.optimizer_state == "reset":
            # Forget the Adam moments but keep the fp32 masters: rebuilding the optimizer would re-derive the
            # masters from the (bf16-rounded) model weights and lose precision at every phase boundary.
            self.optimizer.reset_state()
        gbs = cfg.train.global_batch_size
        train_ds, self.valid_ds = self.datasets[index]
        batches = self._micro_batches(train_ds, st.consumed_samples)
        if st.step_in_phase == 0:
            self.metrics.event({"kind": "phase", "step": st.step, "phase": phase.name, "steps": total,
                                "message": f"phase {index + 1}/{len(self.phases)} '{phase.name}': {total} steps "
                                           f"of {gbs} x {cfg.data.seq_len} tokens, schedule {phase.schedule.style}"})
        while st.step_in_phase < total:
            self._train_step(batches, phase, total)
            last = st.step_in_phase == total
            if last:
                st.finished_phases.append(phase.name)
            for interval, hook in self.hooks:
                if interval and (st.step % interval == 0 or last):
                    hook()
            if self._signal_received():
                self._stop_on_signal()
                return True
            if cfg.checkpoint.interval and st.step % cfg.checkpoint.interval == 0:
                self.save("interval")
            elif last and index == len(self.phases) - 1 and cfg.checkpoint.save_at_end:
                self.save("end")
        return False

    def _micro_batches(self, dataset, consumed_samples):
        c = self.cfg
        ignore = ()
        if self.fim is not None and c.data.fim.mask_pad:
            ignore = (self.tokenizer.fim_tokens().pad,)
        return MicroBatches(dataset, consumed_samples, c.train.micro_batch_size, self.num_micro_batches, self.dp_rank,
                            self.dp_size, self.device, eod_id=self.eod_id,
                            per_token_loss=c.train.calculate_per_token_loss, ignore_label_ids=ignore,
                            num_workers=self.data_workers)

    def _stop_on_signal(self):
        st, sigint = self.state, self.stop_signal == signal.SIGINT
        where = self.save("sigint" if sigint else "sigterm")
        saved = f"saved a checkpoint at step {st.step} in {where}" if where else \
            f"no checkpoint.dir, nothing saved (stopped at step {st.step})"
        message = (f"interrupted (Ctrl-C): {saved}; rerun the same command to resume" if sigint
                   else f"SIGTERM: {saved}; exiting")
        self._stop_message = message  # the summary line starts with it (one line for a stop)
        self.metrics.event({"kind": "stop", "step": st.step, "reason": "sigint" if sigint else "sigterm",
                            "message": message}, echo=False)

    def _summary(self, start_step, seconds):
        """The closing line: steps and tokens of this run, throughput, time, where checkpoints and metrics are."""
        st, c = self.state, self.cfg
        steps = st.step - start_step
        tokens = steps * c.train.global_batch_size * c.data.seq_len
        rate = tokens / seconds if seconds > 0 else 0.0
        where = [f"checkpoints in {c.checkpoint.dir}" if c.checkpoint.dir else "no checkpoints (checkpoint.dir)",
                 f"metrics in {os.path.join(c.log.dir, 'metrics.jsonl')}"]
        if self.metrics.tensorboard_dir:
            where.append(f"TensorBoard in {os.path.join(c.log.dir, 'tensorboard')}")
        stop = getattr(self, "_stop_message", None)
        head = f"{stop};" if stop else "done:"
        message = (f"{head} {steps} steps this run (step {st.step} of {sum(self.phase_lengths)}, "
                   f"{len(st.finished_phases)}/{len(self.phases)} phases done), {tokens:,} tokens in "
                   f"{_duration(seconds)} ({rate:,.0f} tokens/s; {_duration(time.perf_counter() - self._started)} "
                   f"with set-up); " + ", ".join(where))
        self.metrics.event({"kind": "end", "step": st.step, "steps": steps, "tokens": tokens, "time_s": seconds,
                            "tokens_per_s": rate, "message": message})

    def _train_step(self, batches, phase, total):
        from megasnow.parallel.pipeline.schedules import forward_backward

        cfg, st = self.cfg, self.state
        self._activity = f"step {st.step + 1}"
        t0 = time.perf_counter()
        micro = batches.next_step()
        if self._first_step:
            self._first_step = False
            self._say(f"step {st.step + 1}: first batch read ({time.perf_counter() - t0:.1f}s); running the first "
                      f"step ({self.num_micro_batches} micro-batch(es) of {cfg.train.micro_batch_size} x "
                      f"{cfg.data.seq_len} tokens per data-parallel rank)")
        lr = lr_at(st.scheduler_steps, phase.schedule, total)
        self.optimizer.set_lr(lr)
        self.optimizer.zero_grad()
        for m in self.model_chunks:
            m.train()
        per_token = cfg.train.calculate_per_token_loss
        losses = forward_backward(self.model_chunks, micro, per_token_loss=per_token)
        loss = self._loss_total(losses, micro).mean
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
            st.scheduler_steps += 1
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

    def _loss_total(self, losses, micro):
        """The step's (sum, count) over every data-parallel rank, known on every rank (so every rank takes the
        same skip decision): micro-batch losses and their number, or with train.calculate_per_token_loss token
        losses and tokens (each micro-batch's mean times its token count). Only last-stage ranks hold losses;
        tensor-parallel peers hold the same ones, which the ratio cancels."""
        from megasnow.parallel.pipeline.schedules import token_counts

        if losses and self.cfg.train.calculate_per_token_loss:
            counts = token_counts(micro).tolist()
            total = [sum(x * n for x, n in zip(losses, counts)), float(sum(counts))]
        else:
            total = [float(sum(losses)), float(len(losses))]
        if dist.is_available() and dist.is_initialized() and self.world > 1:
            t = torch.tensor(total, dtype=torch.float64)
            if dist.get_backend() == "nccl":
                t = t.to(self.device)
            dist.all_reduce(t)
            total = t.tolist()
        return LossTotal(*total)

    def _signal_received(self):
        """Whether any rank got SIGTERM or SIGINT; every rank then holds the same `stop_signal` (SIGINT wins: a rank
        that saw Ctrl-C first was interrupted by a person, and the run exits 130)."""
        code = {None: 0, signal.SIGTERM: 1, signal.SIGINT: 2}[self.stop_signal]
        if dist.is_available() and dist.is_initialized() and self.world > 1:
            t = torch.tensor([float(code)])
            if dist.get_backend() == "nccl":
                t = t.to(self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            code = int(t[0])
        if code:
            self.stop_signal = signal.SIGINT if code == 2 else signal.SIGTERM
        return code > 0

    @torch.no_grad()
    def evaluate(self):
        """Mean loss over the same held-out samples every time (eval_iters global batches)."""
        from megasnow.parallel.pipeline.schedules import forward_backward

        if self.valid_ds is None:
            return None
        cfg = self.cfg
        self._activity = f"the held-out evaluation at step {self.state.step}"
        for m in self.model_chunks:
            m.eval()
        n = min(cfg.train.eval_iters, len(self.valid_ds) // cfg.train.global_batch_size)
        if n == 0:
            return None
        batches = self._micro_batches(self.valid_ds, 0)
        total = LossTotal(0.0, 0.0)
        for _ in range(n):
            micro = batches.next_step()
            total = total + self._loss_total(forward_backward(self.model_chunks, micro, forward_only=True), micro)
        batches.close()
        loss = total.mean
        phase = self.phases[self.state.phase].name
        self.metrics.event({"kind": "eval", "step": self.state.step, "phase": phase, "loss": loss,
                            "message": f"eval  step {self.state.step:>6d} [{phase}] held-out loss {loss:.4f}"})
        return loss

    def evaluate_benchmark_loss(self):
        """The loss on the benchmarks' canonical solutions (a collective), logged as one 'benchmark' record."""
        out = self.benchmark_loss.measure(self.model_chunks, self.num_micro_batches)
        phase = self.phases[self.state.phase].name
        record = {"kind": "benchmark", "step": self.state.step, "phase": phase,
                  "tokens": {name: r["tokens"] for name, r in out.items()}}
        record.update({f"{name}_loss": r["loss"] for name, r in out.items()})
        losses = ", ".join(f"{name} {r['loss']:.4f}" for name, r in out.items())
        record["message"] = f"bench step {self.state.step:>6d} [{phase}] solution loss: {losses}"
        self.metrics.event(record)
        return out

    def evaluate_pass_at_1(self):
        """Greedy pass@1 on a benchmark subset, generated and scored on rank 0 while the others wait."""
        if self.pass_at_1 is not None:
            out = self.pass_at_1.measure(ckpt.unwrap(self.model_chunks[0]))
            name, phase = self.pass_at_1.bench.name, self.phases[self.state.phase].name
            self.metrics.event({"kind": "benchmark", "step": self.state.step, "phase": phase,
                                f"{name}_pass@1": out["pass@1"], f"{name}_tasks": out["tasks"],
                                "message": f"bench step {self.state.step:>6d} [{phase}] {name} greedy pass@1 "
                                           f"{100 * out['pass@1']:.1f}% ({out['passed']}/{out['tasks']})"})
        if dist.is_available() and dist.is_initialized() and self.world > 1:
            dist.barrier()

    def save(self, reason):
        """Collective checkpoint of the current state; returns its folder (None without checkpoint.dir)."""
        c = self.cfg.checkpoint
        if not c.dir:
            return None
        import dataclasses

        self._activity = f"the checkpoint save at step {self.state.step}"
        trainer = dataclasses.asdict(self.state)
        extra = {}
        if self.tokenizer_file:  # checkpoints carry their tokenizer, so exports and generation need nothing else
            name = "tokenizer.json" if self.tokenizer_file.endswith(".json") else "tokenizer.model"
            extra[name] = self.tokenizer_file
            config = os.path.join(os.path.dirname(self.tokenizer_file), "tokenizer_config.json")
            if os.path.isdir(self.cfg.data.tokenizer) and os.path.isfile(config):  # an HF folder's chat template, EOS
                extra["tokenizer_config.json"] = config
        return ckpt.save_checkpoint(c.dir, self.state.step, self.model_chunks, self.optimizer,
                                    {"trainer": trainer, "reason": reason,
                                     "phase_name": self.phases[self.state.phase].name,
                                     "model_config": dataclasses.asdict(self.model_cfg)},
                                    dump_config(self.cfg), c.keep_last, extra_files=extra)


@dataclass
class LossTotal:
    """A sum of losses and what it counts (micro-batches, or tokens with the per-token loss)."""
    sum: float
    count: float

    def __add__(self, other):
        return LossTotal(self.sum + other.sum, self.count + other.count)

    @property
    def mean(self):
        return self.sum / self.count if self.count else 0.0  # no token counted: nothing to learn from


def _distinct_samples(dataset):
    """Samples in one pass over a (blended, FIM-wrapped) GPT dataset's documents: more are read again (epochs)."""
    if hasattr(dataset, "dataset"):  # FIMDataset
        return _distinct_samples(dataset.dataset)
    if hasattr(dataset, "datasets"):  # BlendedDataset
        parts = [_distinct_samples(d) for d in dataset.datasets]
        return None if None in parts else sum(parts)
    tokens, seq_len = getattr(dataset, "tokens_per_epoch", None), getattr(dataset, "seq_len", None)
    return None if tokens is None or not seq_len else max(1, (tokens - 1) // seq_len)


def _duration(seconds):
    return f"{seconds:.1f}s" if seconds < 60 else format_eta(seconds)


def _trainer_state(saved):
    """TrainerState from a checkpoint's meta.json "trainer" (unknown keys dropped). Checkpoints from before
    scheduler_steps existed advanced the schedule on every step: their position is step_in_phase."""
    state = TrainerState(**{k: v for k, v in saved.items() if k in TrainerState.__dataclass_fields__})
    if "scheduler_steps" not in saved:
        state.scheduler_steps = state.step_in_phase
    return state


def repeat_coverage_note(where, phase, asked, steps, samples, gbs):
    """How much of a repeat-count blend a phase really trains on: explicit steps/tokens cap (or the data
    shortens) the exact `repeat` passes the blend promises."""
    used = steps * gbs
    frac = used / samples  # of all the samples the repeat counts give: each dataset is read frac x repeat times
    passes = ", ".join(f"{frac * b.repeat:.2f} passes (epochs) over {os.path.basename(b.path)}, whose repeat asks "
                       f"for {b.repeat}" for b in phase.blend)
    if asked is None:
        why = "as the repeat counts give"
    elif asked > steps:
        why = f"shortened from the {asked} steps asked: the repeated data holds only {samples} samples"
    elif used < samples:
        why = f"capped by its steps/tokens: the repeat counts give {samples} samples"
    else:
        why = "as the repeat counts give"
    return f"{where}: {steps} steps x {gbs} = {used} samples ({why}): the phase reads {frac:.0%} of its repeated " \
           f"data = {passes}"


def run_training(cfg):
    """Set up and run; returns the final TrainerState (raises TrainingStopped after a NaN stop)."""
    trainer = Trainer(cfg).setup()
    return trainer.run()
