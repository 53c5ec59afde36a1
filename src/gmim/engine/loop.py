"""The training loop of every method: ``gmim pretrain`` and ``gmim finetune`` both run through it.

A method (:class:`Method`) supplies its model, its training data, one training step and a
validation. The loop owns the rest, the same way for every method: seeding and determinism, the
run folder (``run.json``: how it was started) and its guard, the initial weights (``model.init``:
the architecture read off them, the tensors loaded into the module the method names, and
``weights_report.json``), the run's one data loader, AdamW with warm-up and cosine decay, mixed
precision and DDP, the intervals (all in steps), ``last.pt`` and ``best.pt``, Ctrl-C and SIGTERM,
``train.stop_after``, ``metrics.jsonl`` and TensorBoard, the progress bar and a closing summary.

Usage::

    with Trainer("mymethod", config, config.train, out, resume, may_change=..., init=InitialWeights(config.model)) as trainer:
        method = MyMethod(config, ..., trainer)   # builds its model after the trainer has seeded
        summary = trainer.fit(method)
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from gmim import __version__
from gmim.atomic import remove_stale_temporaries, write_json
from gmim.config import dump_config
from gmim.engine.checkpoint import restore_training_state, save_checkpoint, training_state
from gmim.engine.config import LoopConfig
from gmim.engine.device import seed_everything
from gmim.engine.distributed import (
    DistributedContext,
    all_reduce_mean,
    any_process,
    init_distributed,
    wrap_ddp,
)
from gmim.engine.metrics import MetricsLog
from gmim.engine.optim import adamw, warmup_cosine
from gmim.engine.precision import MixedPrecision
from gmim.engine.progress import Progress
from gmim.engine.run_folder import RunLock, check_run_folder
from gmim.engine.sampling import SeededDataset, StepSampler, end_workers, run_loader
from gmim.engine.signals import Interrupted, stop_requests
from gmim.errors import InputError
from gmim.methods import canonical_name
from gmim.weights_only import load_checkpoint

__all__ = ["RESUMABLE", "Method", "RunSummary", "Trainer", "Validation", "validation_interval"]

#: The loop's settings that a resumed run may change: how long and how it runs, not what it learns.
RESUMABLE = (
    "train.steps",
    "train.epochs",
    "train.device",
    "train.deterministic",
    "train.workers",
    "train.validate_every",
    "train.checkpoint_every",
    "train.log_every",
    "train.stop_after",
    "train.compile",
)
#: With ``train.validate_every: null``, validations take about this share of the training compute …
VALIDATION_SHARE = 0.05
#: … and there are at most this many in a run (besides the final one).
VALIDATIONS_PER_RUN = 20


@dataclass
class Validation:
    """What a method's validation found."""

    #: Logged under ``val/<name>`` in ``metrics.jsonl`` and TensorBoard.
    scalars: dict[str, float]
    #: One line for the console.
    summary: str
    #: Higher is better; the loop keeps the weights of the best in ``best.pt`` (None: no selection).
    score: float | None = None
    #: Stored with the best weights in ``best.pt`` and ``best.json``.
    record: dict[str, Any] = field(default_factory=dict)
    #: Stored in ``best.json`` only (per-case results).
    details: dict[str, Any] = field(default_factory=dict)


class Initialisation(Protocol):
    """What starts a run's model from weights made elsewhere: :class:`gmim.swin.init.InitialWeights`."""

    @property
    def inherited(self) -> tuple[str, ...]:
        """The settings a resume takes from the run where they are unset."""

    def resolve(self) -> None:
        """Read the weights and fill the settings they fix, before the run's config.yaml is written."""

    def load(self, module: torch.nn.Module) -> WeightsReport | None:
        """The weights into ``module``; what went where (None: nothing to load)."""


class WeightsReport(Protocol):
    """What :meth:`Initialisation.load` says: in words (``str``) and as ``weights_report.json``."""

    def as_dict(self) -> dict[str, Any]: ...


class Method(Protocol):
    """What a training method gives the loop. Methods are built inside ``with Trainer(...)``, after
    seeding, and hold the trainer for its device, precision and run folder."""

    #: The command's name: progress bar, messages and the checkpoint's ``method`` entry.
    name: str
    #: The training volumes, read by (epoch, index) keys, one per volume of a global batch.
    train_data: SeededDataset
    #: Whether ``best.pt`` keeps the weights of the best validation (or the final weights when
    #: there is nothing to validate on).
    keeps_best: bool
    #: Whether a new run validates its initial weights too (step 0), as the baseline of the later ones.
    validates_at_start: bool

    @property
    def model(self) -> torch.nn.Module:
        """The trained module, unwrapped; ``last.pt`` holds its whole state_dict. Read-only here, so
        that a method may hold a subclass (its own network type)."""

    @property
    def init_module(self) -> torch.nn.Module:
        """The module that ``model.init``'s weights start: a ``SwinUNETR`` or its encoder."""

    def after_init(self) -> None:
        """Work after ``model.init``'s weights are loaded into :attr:`init_module` (e.g. copying them
        into an EMA target)."""

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW's parameter groups (a group may carry its own ``lr``)."""

    def train_step(self, model: Callable[..., Any], batch: Any, step: int) -> dict[str, torch.Tensor]:
        """The loss terms of the batch of step ``step`` (1-based), ``"loss"`` the one to minimise;
        ``model`` is :attr:`model`, wrapped for DDP where there are several processes and compiled
        with ``train.compile``."""

    def after_optimizer_step(self) -> None:
        """Work after each optimizer step (e.g. an EMA update)."""

    def validation_cost(self) -> float:
        """About what one validation costs, in training steps of compute (0: nothing to validate)."""

    def validate(self, step: int) -> Validation:
        """Validate the current weights (called on every process)."""

    def export(self) -> None:
        """Write the method's own outputs of the current weights (rank 0, before each ``last.pt``)."""

    def finish(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Work at the end of a completed run, given the records of ``metrics.jsonl`` (rank 0); the
        method's own entries of ``summary.json``."""


@dataclass
class RunSummary:
    """What one invocation of :meth:`Trainer.fit` did."""

    method: str
    steps: int
    total_steps: int
    first_step: int
    completed: bool
    seconds: float
    volumes_per_s: float
    #: Shares of the loop's time spent waiting for the loader, validating and checkpointing.
    data_share: float
    validation_share: float
    checkpoint_share: float
    validations: int
    #: The scalars of the last validation (``val/…``), empty without one.
    validation: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        done = self.steps - self.first_step
        minutes, seconds = divmod(self.seconds, 60)
        return (
            f"{self.method}: {done} step(s) in {int(minutes)} min {seconds:.0f} s, {self.volumes_per_s:.2f} volumes/s; "
            f"waiting for data {self.data_share:.1%}, validation {self.validation_share:.1%} ({self.validations}×), "
            f"checkpoints {self.checkpoint_share:.1%}"
        )


def validation_interval(setting: int | None, cost: float, total: int) -> int:
    """Steps between validations (0: only at the end). ``None`` chooses: every twentieth of the run,
    or less often where a validation costs more than :data:`VALIDATION_SHARE` of the steps between."""
    if setting is not None:
        return setting
    return max(1, math.ceil(total / VALIDATIONS_PER_RUN), math.ceil(cost * (1 - VALIDATION_SHARE) / VALIDATION_SHARE))


def _check_batch(train: LoopConfig, world_size: int) -> None:
    """The global batch against the processes of this run (the settings' own rules hold already)."""
    if train.batch_size % world_size:
        raise InputError(
            f"train.batch_size {train.batch_size} must be a multiple of the number of processes ({world_size}): it is the global batch"
        )


class _Stopwatch:
    """Seconds spent in named parts of the loop. On a GPU the parts that are timed rarely
    (validation, checkpoints) synchronise first, so that the steps queued before them are not
    counted as theirs."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, part: str, synchronize: bool = False) -> Iterator[None]:
        if synchronize and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if synchronize and self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[part] += time.perf_counter() - start


class _Window:
    """The training scalars since the last record, summed on the device (no synchronisation per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.since = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.steps += 1

    def means(self, context: DistributedContext) -> dict[str, float]:
        """The means over the window's steps and all processes (one collective, one synchronisation)."""
        names = list(self.sums)
        values = all_reduce_mean(torch.stack([self.sums[n] for n in names]) / self.steps, context).tolist()
        return dict(zip(names, values))


class Trainer:
    """One run of a method in a run folder (see the module doc)."""

    def __init__(
        self,
        command: str,
        run_config: Any,
        train: LoopConfig,
        out: Path,
        resume: bool = False,
        may_change: Collection[str] = (),
        init: Initialisation | None = None,
    ) -> None:
        """``command``: the method's name (it labels the run folder's lock); ``may_change``: the
        method's settings that a resume may change, besides :data:`RESUMABLE`; ``init``: the weights
        the model starts from (``model.init``: :class:`gmim.swin.init.InitialWeights`), which fix
        settings before the run's config.yaml is written (a resume takes them from the run)."""
        self.command, self.run_config, self.train, self.out, self.resume = command, run_config, train, Path(out), resume
        self.may_change, self.init = (*RESUMABLE, *may_change), init
        self.inherit = init.inherited if init is not None else ()
        self.total = 0
        self._progress: Progress | None = None  # while fit runs

    # -- set-up ----------------------------------------------------------------------------------

    def __enter__(self) -> Trainer:
        self.context = init_distributed(self.train.device)
        self._deterministic = torch.are_deterministic_algorithms_enabled()
        self._lock = RunLock(self.out, self.command) if self.context.is_main else None
        try:
            _check_batch(self.train, self.context.world_size)
            if self.init is not None and not self.resume:
                self.init.resolve()
            if self._lock is not None:
                self._lock.acquire()  # before the guard: of two runs started together, one is refused
            check_run_folder(self.run_config, self.out, self.resume, self.may_change, self.inherit)
            if self.is_main:  # the lock is held: no writer of this run folder is alive
                remove_stale_temporaries(self.out)
            deterministic = self.train.deterministic
            torch.use_deterministic_algorithms(
                self.context.device.type == "cpu" if deterministic is None else deterministic, warn_only=True
            )
            self.precision = MixedPrecision(self.context.device, self.train.mixed_precision)
            if self.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                dump_config(self.run_config, self.out / "config.yaml")
                self._record_invocation()
            seed_everything(self.train.seed)  # right before the method builds its model
        except BaseException as error:
            self.__exit__(type(error))
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None = None, *exc: object) -> None:
        torch.use_deterministic_algorithms(self._deterministic)
        if self._lock is not None:
            self._lock.release()
        self.context.shutdown(clean=exc_type is None)

    def _record_invocation(self) -> None:
        """``run.json``: the command line that started the run, and that of each resume, with its
        method, the gmim version and the time, so that a run folder says how it was made."""
        path = self.out / "run.json"
        program = Path(sys.argv[0])
        command = (
            f"gmim {shlex.join(sys.argv[1:])}"
            if program.name == "gmim" or program.parent.name == "cli"  # gmim, python -m gmim.cli
            else shlex.join(sys.argv)
        )  # a script of the user's that calls pretrain() or finetune()
        invocation = {
            "command": command,
            "method": self.command,
            "gmim": __version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "processes": self.context.world_size,
        }
        try:
            previous = json.loads(path.read_text()) if self.resume and path.is_file() else None
        except (OSError, ValueError):  # written atomically: only a hand edit breaks it; start it again
            previous = None
        record = {**previous, "resumed": [*previous.get("resumed", []), invocation]} if isinstance(previous, dict) else invocation
        write_json(path, record)

    @property
    def device(self) -> torch.device:
        return self.context.device

    @property
    def is_main(self) -> bool:
        return self.context.is_main

    def due(self, step: int, period: int) -> bool:
        """Whether something done every ``period`` steps (and at the end; 0: only at the end) is due."""
        return step == self.total or (period > 0 and step % period == 0)

    def write(self, message: str) -> None:
        """A line for the console, from rank 0 (above the progress bar while there is one)."""
        if self.is_main:
            if self._progress is not None:
                self._progress.write(message)
            else:
                print(message, flush=True)

    # -- the loop --------------------------------------------------------------------------------

    def fit(self, method: Method) -> RunSummary:
        """Train ``method`` to the end of the run, or to ``train.stop_after``, or to a Ctrl-C/SIGTERM
        (then :class:`Interrupted` is raised after ``last.pt`` is saved)."""
        train, context = self.train, self.context
        volumes = len(method.train_data)
        if volumes < train.batch_size:
            raise InputError(f"train.batch_size {train.batch_size} is larger than the {volumes} training volume(s)")
        if train.steps is not None:
            self.total = train.steps
        else:
            assert train.epochs is not None, "LoopConfig sets exactly one of steps and epochs"
            self.total = train.epochs * math.ceil(volumes / train.batch_size)
        if self.init is not None:
            self._load_initial_weights(method, self.init)
        model = wrap_ddp(method.model, context)
        stepped = torch.compile(model) if train.compile else model  # shares its parameters with model
        groups = method.parameter_groups()
        parameters = [p for group in groups for p in group["params"]]
        optimizer = adamw(groups, train.lr, train.weight_decay, fused=self.device.type == "cuda")
        scheduler = warmup_cosine(optimizer, min(train.warmup_steps, self.total // 2), self.total)

        step, best = self._restore(method, model, optimizer, scheduler) if self.resume else (0, -math.inf)
        first, self.saved_step = step, step
        end = min(self.total, train.stop_after) if train.stop_after is not None and train.stop_after > step else self.total

        cost = method.validation_cost()
        every_validation = validation_interval(train.validate_every, cost, self.total) if cost > 0 else -1
        if cost > 0 and train.validate_every is None:
            self.write(
                f"validating every {every_validation} steps and at the end (one validation costs about {cost:.3g} "
                "training steps; train.validate_every sets the interval)"
            )
        sampler = StepSampler(volumes, train.batch_size, step, end, context.rank, context.world_size, train.seed)
        loader = run_loader(method.train_data, sampler, train.loader_workers(), pin_memory=self.device.type == "cuda")
        metrics = MetricsLog(self.out / "metrics.jsonl", step, self.is_main)
        stopwatch, window, validations = _Stopwatch(self.device), _Window(), 0
        self._progress = Progress(self.total, step, self.out / "tensorboard", self.is_main, desc=method.name)
        started = time.perf_counter()
        last_validation: dict[str, float] = {}
        with stop_requests() as request:
            batches = iter(loader)
            try:
                if step == 0 and every_validation >= 0 and method.validates_at_start:
                    with stopwatch("validation", synchronize=True):
                        best, last_validation = self._validate(method, step, best, metrics)
                    validations += 1
                while step < end:
                    with stopwatch("data"):
                        batch = next(batches)
                    terms = method.train_step(stepped, batch, step + 1)
                    self.precision.step(terms["loss"], optimizer, parameters, train.grad_clip)
                    scheduler.step()
                    method.after_optimizer_step()
                    step += 1
                    window.add(terms)
                    self._progress.update()
                    validate = every_validation >= 0 and self.due(step, every_validation)
                    save = step == end or self.due(step, train.checkpoint_every)
                    stopping = any_process(bool(request), context)
                    if validate or save or stopping or step % train.log_every == 0:
                        window = self._record(window, step, optimizer, metrics)
                    if validate:
                        with stopwatch("validation", synchronize=True):
                            best, last_validation = self._validate(method, step, best, metrics)
                        validations += 1
                    if save or stopping:
                        with stopwatch("checkpoint", synchronize=True):
                            self._checkpoint(method, model, optimizer, scheduler, step, best)
                    if stopping and step < end:
                        self.write(f"interrupted: step {step} saved in {self.out / 'last.pt'}; continue with --resume")
                        raise Interrupted(request.signum or signal.SIGINT)
            finally:
                end_workers(batches)
                self._progress.close()
                self._progress = None
        seconds = time.perf_counter() - started
        completed = step == self.total
        extras: dict[str, Any] = {}
        if completed and self.is_main:
            if method.keeps_best and every_validation < 0:
                save_checkpoint(self.out / "best.pt", {"model": method.model.state_dict(), "step": step})
                self.write("no validation cases: best.pt holds the final weights")
            extras = method.finish(metrics.records)
        if not completed:
            self.write(f"stopped after step {step} of {self.total} (train.stop_after); continue with --resume")
        summary = RunSummary(
            method=method.name,
            steps=step,
            total_steps=self.total,
            first_step=first,
            completed=completed,
            seconds=seconds,
            volumes_per_s=(step - first) * train.batch_size / max(seconds, 1e-9),
            data_share=stopwatch.seconds["data"] / max(seconds, 1e-9),
            validation_share=stopwatch.seconds["validation"] / max(seconds, 1e-9),
            checkpoint_share=stopwatch.seconds["checkpoint"] / max(seconds, 1e-9),
            validations=validations,
            validation=last_validation,
        )
        if self.is_main:
            self.write(summary.line())
            write_json(self.out / "summary.json", {**asdict(summary), **extras})
        context.barrier()
        return summary

    def _load_initial_weights(self, method: Method, init: Initialisation) -> None:
        """The initial weights into the method's :attr:`Method.init_module`, said on the console
        and in ``weights_report.json``."""
        report = init.load(method.init_module)
        if report is None:  # none to load (or a resume, which restores its own)
            return
        method.after_init()
        self.write(str(report))
        if self.is_main:
            write_json(self.out / "weights_report.json", report.as_dict())

    def _restore(
        self, method: Method, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
    ) -> tuple[int, float]:
        """The state of ``last.pt`` in the live objects; the step to go on from and the best score.
        Checkpoints of the loops before this one (no ``method``, ``best_dice``) load too."""
        path = self.out / "last.pt"
        checkpoint = load_checkpoint(path)
        saved = checkpoint.get("method", method.name)
        if canonical_name(saved) != canonical_name(method.name):
            raise InputError(f"--resume: {path} is a run of {saved}, not of {method.name}")
        step = restore_training_state(checkpoint, model, optimizer, scheduler, self.precision, self.context, str(path))
        return step, float(checkpoint.get("best_score", checkpoint.get("best_dice", -math.inf)))

    def _record(self, window: _Window, step: int, optimizer: torch.optim.Optimizer, metrics: MetricsLog) -> _Window:
        """Log the window's means; stop, keeping the last checkpoint, when a term is not finite."""
        means = window.means(self.context)
        bad = {name: value for name, value in means.items() if not math.isfinite(value)}
        if bad:
            name, value = next(iter(bad.items()))
            saved = f"last.pt holds step {self.saved_step}" if self.saved_step else "nothing was saved"
            raise InputError(
                f"training diverged: the {name} term is {value} by step {step}; stopped, {saved} (lower train.lr or set train.grad_clip)"
            )
        now = time.perf_counter()
        scalars = {f"train/{name}": value for name, value in means.items()}
        scalars["train/lr"] = optimizer.param_groups[0]["lr"]
        scalars["train/volumes_per_s"] = window.steps * self.train.batch_size / max(now - window.since, 1e-9)
        assert self._progress is not None, "records are made while fit runs"
        self._progress.scalars(step, scalars, show=True)
        metrics.add({"step": step, **scalars})
        return _Window()

    def _validate(self, method: Method, step: int, best: float, metrics: MetricsLog) -> tuple[float, dict[str, float]]:
        """Validate, log, and keep the weights of the best score in ``best.pt``; the best score and
        the validation's scalars as logged."""
        result = method.validate(step)
        scalars = {f"val/{name}": value for name, value in result.scalars.items()}
        if not self.is_main:
            return (max(best, result.score) if result.score is not None else best), scalars
        assert self._progress is not None, "validations are made while fit runs"
        self._progress.scalars(step, scalars)
        metrics.add({"step": step, **scalars})
        self.write(f"step {step}: {result.summary}")
        if result.score is not None and result.score > best:
            save_checkpoint(self.out / "best.pt", {"model": method.model.state_dict(), "step": step, **result.record})
            write_json(self.out / "best.json", {"step": step, **result.record, **result.details})
            return result.score, scalars
        return best, scalars

    def _checkpoint(
        self,
        method: Method,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        step: int,
        best: float,
    ) -> None:
        """The method's outputs, then ``last.pt``: after a kill between the two, a resume redoes the
        steps since the older ``last.pt`` and writes both again."""
        state = training_state(model, optimizer, scheduler, self.precision, step, self.context)  # collective
        if self.is_main:
            method.export()
            save_checkpoint(self.out / "last.pt", {**state, "best_score": best, "method": method.name})
        self.saved_step = step
