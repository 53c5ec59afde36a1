"""Label efficiency on real brain MRI: does GMIM pre-training beat training from scratch and plain
random masking, most of all when labels are few?

The task: grey / white matter segmentation of skull-stripped T1 brains (background, grey matter,
white matter), and with a preset's ``context_class`` deep CSF too. Grey and white matter differ by
intensity, which a convolution on the raw image tells apart alone. Deep CSF (the ventricles and the
deepest fissures, :func:`gmim.sample_data.brain_tissue`) has the intensity of the CSF in the sulci,
which is background: only context finds it, and context is what pre-training should teach the
encoder. Its Dice gets tables of its own. Brain extraction is not the task because the ICBM152
template ships skull-stripped (only 0.04 % of its non-zero voxels lie outside its brain mask):
there would be nothing to learn.

Subjects (``gmim.sample_data``): smooth random deformations, bias fields, contrast changes and noise
of two real brains, image and tissue labels alike, then skull-stripped with their own brain masks.

- unlabelled pool (pre-training only): deformed ICBM152 subjects;
- labelled pool: other ICBM152 seeds; a fine-tuning run draws 1, 2 or 4 of them (its seed decides which);
- test set ``icbm152``: more ICBM152 seeds, the brain the labels were learned on;
- test set ``itk``: the ITK example brain (another person, scanner and labelling: its k-means
  classes) and deformed copies of it.

Arms (:data:`ARMS`): no pre-training (``scratch``), GMIM as specified, random masking (half the
2×2×2-voxel tokens of the crop, uniformly: one cell, no adaptive ratios, no hierarchy; a SimMIM-like
baseline with the same Siamese losses, so that only the masking differs), and the specification's
options on top of GMIM, and the prototype as its code ran (``prototype``: the settings of
``gmim.pretraining.config.AS_RUN``, its encoder fine-tuned with the prototype's patch merging); all
pre-trained on the same volumes with the same step budget, from the same
initial weights as the ``scratch`` arm's seed 0. Every arm is fine-tuned with each label count and
seed (no validation: the final weights), predicts the test sets and is scored (Dice, HD95).

The probe (a preset's ``probe_labels``): every arm fine-tuned once more with its encoder frozen, so
that only Swin UNETR's convolutional decoder learns. When a frozen random encoder does as well as a
trained one, the task does not use what an encoder learns, and no pre-training can show in it.

The linear probe (:mod:`linear_probe`, every preset): each arm's frozen encoder alone, its hidden
states upsampled to the voxel grid and a logistic regression on them, fitted on the labelled pool
and scored per class on the test sets. No decoder and no full-resolution convolution can make up
for the encoder there, so it shows what pre-training put into the features; ``scratch`` is the
random initial encoder every arm starts from.

The run's time (:mod:`time_window`): before it starts the script prints its plan and an estimate
from the preset's per-part figures for the device kind it runs on (``seconds``), times every phase,
and with a budget (``budget_minutes``, ``--budget-minutes``) reports a phase that ran over its share
and shortens what remains: later fine-tuning seeds first, then fine-tuning steps, then the
pre-training steps of arms still to come. The ``gpu-window`` preset fits one H100 in 9 minutes.

    python benchmarks/label_efficiency.py --preset smoke --out runs/le_smoke      # minutes
    python benchmarks/label_efficiency.py --preset cpu                            # about 1 h, 2 cores
    python benchmarks/label_efficiency.py --preset cpu-long --out runs/cpu_long   # 4× pre-training
    python benchmarks/label_efficiency.py --preset cpu-context --out runs/cpu_context  # deep CSF too
    python benchmarks/label_efficiency.py --preset gpu-window --plan              # the plan, nothing run
    python benchmarks/label_efficiency.py --preset gpu-window --device cuda --out runs/gpu_window  # ≤ 9 min, H100
    python benchmarks/label_efficiency.py --preset gpu --device cuda --docs docs  # hours; and docs/results.md

Runs that finished are reused: rerunning after an interruption goes on where it stopped (an
interrupted pre-training resumes from its ``last.pt``). ``OUT`` holds ``results.json`` (every run's
numbers, the linear probe's, the plan as it ran and each phase's time), ``results.md`` (the tables),
``dice_vs_labels.png`` and ``examples.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import yaml

from gmim.atomic import atomic_path
from gmim.errors import InputError
from gmim.pretraining.config import AS_RUN
from gmim.sample_data import TISSUE_VALUES, brain_tissue, deformed_copies
from time_window import PARTS, Plan, Window, check_figures

PRESETS = Path(__file__).resolve().parent / "presets"

#: Each arm's pre-training settings on top of the preset's (``None``: no pre-training).
ARMS: dict[str, list[str] | None] = {
    "scratch": None,
    "gmim": [],
    "random": ["masking.grids=[1]", "masking.dynamic=false", "masking.decay=0"],
    "standardized": ["loss.standardize=true"],
    "aligned": ["loss.align_overlap=true"],
    "ema": ["model.target_momentum=0.99"],
    "mask_token": ["model.learned_mask_token=true"],
    # against collapse: VICReg's variance term on the final-stage tokens, alone and with standardisation
    "variance": ["loss.variance_weight=1.0"],
    "standardized_variance": ["loss.standardize=true", "loss.variance_weight=1.0"],
    # the prototype as its code ran (docs/method.md §9); fine-tuned with its patch merging too
    "prototype": [f"{key}={json.dumps(value)}" for key, value in AS_RUN.items()],
}

#: The fine-tuning task's classes; label files hold these values (``other`` brain tissue counts as
#: background, and so does deep CSF unless the preset asks for the context class).
TASK_LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2, "deep_csf": 3}
#: The class that needs context, reported on its own, and its name in tables.
CONTEXT_CLASS, CONTEXT_NAME = "deep_csf", "deep CSF"
TEST_SETS = {"icbm152": "ICBM152, other seeds (the brain the labels come from)", "itk": "ITK example brain and copies (another brain)"}
#: Labelled voxels per subject the linear probe is fitted on (a random subsample), and voxels
#: classified at a time when it predicts.
PROBE_VOXELS, PROBE_CHUNK = 20_000, 100_000
#: Seeds of the deformations: each pool its own, so no subject is in two pools.
POOL_SEEDS = {"unlabelled": 1000, "labelled": 2000, "icbm152": 3000, "itk": 4000}


@dataclasses.dataclass
class Preset:
    """A benchmark preset (``benchmarks/presets/<name>.yaml``): data sizes, arms, label counts, seeds,
    and the ``pretrain`` / ``finetune`` configs (the layout of ``gmim pretrain/finetune --config``)."""

    unlabelled: int
    labelled: int
    test_icbm152: int
    test_itk: int
    arms: list[str]
    labels: list[int]
    #: Fine-tuning seeds; none: pre-training, its health and the linear probe only.
    seeds: list[int]
    pretrain: dict[str, Any]
    finetune: dict[str, Any]
    #: ICBM152 voxels kept per axis when subjects are made: 1 (1 mm, slower to make) or 2 (2 mm).
    icbm152_stride: int = 2
    #: Arms of the preset's own: name → pre-training overrides on top of the preset's.
    extra_arms: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: Label counts at which each arm is also fine-tuned with its encoder frozen (the probe).
    probe_labels: list[int] = dataclasses.field(default_factory=list)
    #: Whether deep CSF, the class that needs context, is a class of the task.
    context_class: bool = False
    #: Device kind (``cpu``, ``h100``, …) → seconds of each part of a run
    #: (:data:`time_window.PARTS`) at this preset's sizes: the plan's estimate.
    seconds: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    #: The run's time window, start-up included; None: no budget (``--budget-minutes`` sets one).
    budget_minutes: float | None = None

    @property
    def task_labels(self) -> dict[str, int]:
        return {name: value for name, value in TASK_LABELS.items() if name != CONTEXT_CLASS or self.context_class}

    @classmethod
    def load(cls, name_or_path: str) -> tuple[Preset, Path]:
        path = Path(name_or_path)
        if not path.suffix:
            path = PRESETS / f"{name_or_path}.yaml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
            raise InputError(f"--preset {name_or_path}: neither a preset ({names}) nor a YAML file")
        data = yaml.safe_load(path.read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if unknown or missing:
            raise InputError(f"{path}: unknown keys {unknown}" if unknown else f"{path}: missing keys {missing}")
        preset = cls(**data)
        preset.check(path)
        return preset, path

    def check(self, where: Path) -> None:
        counts = {"unlabelled": self.unlabelled, "labelled": self.labelled, "test_icbm152": self.test_icbm152, "test_itk": self.test_itk}
        bad = [k for k, v in {**counts, "icbm152_stride": self.icbm152_stride}.items() if not isinstance(v, int) or v < 1]
        if bad:
            raise InputError(f"{where}: {bad[0]} must be a positive integer")
        if (self.seeds and not self.labels) or any(not 1 <= k <= self.labelled for k in self.labels):
            raise InputError(f"{where}: labels {self.labels} must lie between 1 and labelled ({self.labelled})")
        if not isinstance(self.context_class, bool):
            raise InputError(f"{where}: context_class must be true or false, got {self.context_class!r}")
        if any(not 1 <= k <= self.labelled for k in self.probe_labels):
            raise InputError(f"{where}: probe_labels {self.probe_labels} must lie between 1 and labelled ({self.labelled})")
        for section, train in (("pretrain", self.pretrain.get("train") or {}), ("finetune", self.finetune.get("train") or {})):
            steps = train.get("steps")
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise InputError(f"{where}: {section}.train.steps must be a positive integer (the plan counts them), got {steps!r}")
        check_figures(self.seconds, str(where))
        if self.budget_minutes is not None:
            check_budget(self.budget_minutes, f"{where}: budget_minutes")
            if not self.seconds:
                raise InputError(f"{where}: budget_minutes needs the timing figures (seconds) to plan with")
        clash = sorted(set(self.extra_arms) & set(ARMS))
        if clash:
            raise InputError(f"{where}: extra_arms {clash} are built-in arms")
        self.arms = check_arms(self.arms, self.all_arms, str(where))

    @property
    def all_arms(self) -> dict[str, list[str] | None]:
        return {**ARMS, **self.extra_arms}

    def patch_merging(self, arm: str) -> str:
        """The patch merging ``arm``'s encoder is pre-trained with, which its fine-tuning must share."""
        settings = dict(item.split("=", 1) for item in self.all_arms[arm] or [])
        return str(yaml.safe_load(settings.get("model.patch_merging", "monai")))


def check_budget(minutes: float, where: str) -> float:
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not minutes > 0:
        raise InputError(f"{where} {minutes}: must be a positive number of minutes")
    return float(minutes)


def check_arms(arms: Sequence[str], known: dict[str, Any], where: str) -> list[str]:
    unknown = [a for a in arms if a not in known]
    if unknown:
        raise InputError(f"{where}: unknown arm {unknown[0]!r} (arms: {', '.join(known)})")
    return list(dict.fromkeys(arms))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


# --- data ------------------------------------------------------------------------------------------


#: Voxels kept around the brain when subjects are cropped to it (as skull-stripped data come).
MARGIN = 4


def _save_subject(
    folder: Path, name: str, image: np.ndarray, tissue: np.ndarray, affine: np.ndarray, task_labels: dict[str, int] | None
) -> dict[str, str]:
    """Skull-strip with the subject's own brain, crop to it, write the image (and its labels of
    ``task_labels``, unless None); a datalist entry.

    The crop keeps sliding-window prediction from spending most of its windows on empty background."""
    brain = tissue != TISSUE_VALUES["outside"]
    occupied = np.argwhere(brain)
    low = np.maximum(occupied.min(0) - MARGIN, 0)
    high = np.minimum(occupied.max(0) + 1 + MARGIN, brain.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    affine = affine.copy()
    affine[:3, 3] += affine[:3, :3] @ low
    nib.save(nib.Nifti1Image((image * brain)[box].astype(np.float32), affine), folder / f"{name}.nii.gz")
    if task_labels is None:
        return {"image": f"{name}.nii.gz"}
    labels = np.zeros(tissue.shape, np.uint8)  # background
    for tissue_class, value in task_labels.items():
        if tissue_class != "background":
            labels[tissue == TISSUE_VALUES[tissue_class]] = value
    nib.save(nib.Nifti1Image(labels[box], affine), folder / f"{name}_tissue.nii.gz")
    return {"image": f"{name}.nii.gz", "label": f"{name}_tissue.nii.gz"}


def make_data(folder: Path, preset: Preset) -> dict[str, Path]:
    """The four pools as datalists in ``folder`` (written once; reused when they exist)."""
    counts = {"unlabelled": preset.unlabelled, "labelled": preset.labelled, "icbm152": preset.test_icbm152, "itk": preset.test_itk}
    datalists = {pool: folder / f"{pool}.json" for pool in counts}
    if all(p.is_file() for p in datalists.values()):
        return datalists
    folder.mkdir(parents=True, exist_ok=True)
    icbm = brain_tissue("icbm152", preset.icbm152_stride)
    itk = brain_tissue("itk")
    for pool, count in counts.items():
        image, tissue, affine = itk if pool == "itk" else icbm
        subjects = deformed_copies(image, count - (pool == "itk"), seed=POOL_SEEDS[pool], labels=tissue)
        if pool == "itk":  # the real brain itself first
            subjects.insert(0, (image, tissue))
        # pre-training never sees a label
        task_labels = None if pool == "unlabelled" else preset.task_labels
        entries = [_save_subject(folder, f"{pool}_{i:03d}", im, ti, affine, task_labels) for i, (im, ti) in enumerate(subjects)]
        write_json(datalists[pool], {"training": entries})
    return datalists


# --- runs ------------------------------------------------------------------------------------------


def _config(cls: type, section: dict[str, Any], path: Path, overrides: Sequence[str], presets: str) -> Any:
    """The preset's ``pretrain`` / ``finetune`` section as a config file in OUT, then ``overrides``."""
    from gmim.config import load_config

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(section, sort_keys=False))
    return load_config(cls, path, overrides, presets=presets)


def initial_encoder(config: Any) -> Any:
    """The encoder a pre-training with ``config`` starts from, built again from its seed: what every
    arm starts from, and the ``scratch`` arm's frozen encoder in the linear probe."""
    from gmim.engine.device import seed_everything
    from gmim.pretraining.method import build_model

    config.model.in_channels = 1  # the benchmark's subjects are single T1 images
    seed_everything(config.train.seed)  # as pre-training does right before it builds the model
    return build_model(config).encoder


def weight_change(config: Any, encoder: Path) -> float:
    """How far pre-training moved the encoder: ‖w − w₀‖ / ‖w₀‖ over its floating-point tensors, with
    w₀ its initial weights, built again from the run's seed. Near 0: it fine-tunes as from scratch."""
    import torch

    initial = initial_encoder(config).state_dict()
    trained = torch.load(encoder, map_location="cpu", weights_only=True)
    names = [name for name, value in initial.items() if value.is_floating_point()]
    moved = sum(float((trained[n].float() - initial[n].float()).pow(2).sum()) for n in names)
    return (moved / sum(float(initial[n].float().pow(2).sum()) for n in names)) ** 0.5


@dataclasses.dataclass
class Benchmark:
    """Where the runs go, what they learn from and on which device."""

    out: Path
    preset: Preset
    datalists: dict[str, Path]
    device: str

    def run_folder(self, arm: str, labels: int, seed: int, frozen: bool = False) -> Path:
        return self.out / "finetune" / arm / f"{'frozen_' * frozen}labels{labels}_seed{seed}"

    def pretrain_config(self, arm: str, steps: int | None = None) -> Any:
        """``arm``'s pre-training settings (``scratch``: GMIM's, whose initial weights every arm shares)."""
        from gmim.pretraining.config import PretrainConfig

        overrides = [*(self.preset.all_arms[arm] or []), f"train.device={self.device}"] + ([f"train.steps={steps}"] if steps else [])
        return _config(PretrainConfig, self.preset.pretrain, self.out / "configs" / "pretrain.yaml", overrides, "pretrain")

    def pretrain(self, arm: str, steps: int | None = None) -> Path | None:
        """Pre-train ``arm`` once, ``steps`` steps (default the preset's), resuming an interrupted
        run; the encoder, or None for ``scratch``."""
        if self.preset.all_arms[arm] is None:
            return None
        from gmim.pretraining.method import pretrain

        run = self.out / "pretrain" / arm
        config = self.pretrain_config(arm, steps)
        done = run / "done.json"
        if not done.is_file():
            print(f"pre-training {arm} ({config.train.steps} steps)", flush=True)
            resume = (run / "last.pt").is_file()
            start = time.perf_counter()
            pretrain(config, [self.datalists["unlabelled"]], run, resume=resume)
            write_json(done, {"steps": config.train.steps, "seconds": time.perf_counter() - start, "resumed": resume})
        record = json.loads(done.read_text())
        if "weight_change" not in record:
            write_json(done, {**record, "weight_change": weight_change(config, run / "encoder.pt")})
        return run / "encoder.pt"

    def linear_probe(self, arm: str, encoder: Path | None) -> dict[str, Any]:
        """The linear probe (:mod:`linear_probe`) of ``arm``'s frozen encoder (``scratch``: the initial
        weights every arm starts from), fitted on the whole labelled pool: a probe asks what the
        features hold, not how few labels find it. Dice per class and test subject, on the
        preprocessed grid (reused when saved)."""
        path = self.out / "linear_probe" / f"{arm}.json"
        if path.is_file():
            return json.loads(path.read_text())
        import torch

        from gmim.engine.device import resolve_device
        from gmim.engine.precision import MixedPrecision
        from gmim.segmentation.metrics import dice_scores
        from linear_probe import LinearProbe, all_voxels, hidden_states, sample_features

        print(f"linear probe of {arm}'s frozen encoder", flush=True)
        start = time.perf_counter()
        device = resolve_device(self.device)
        config, subjects = self._probe_subjects
        frozen = initial_encoder(self.pretrain_config(arm))
        if encoder is not None:
            frozen.load_state_dict(torch.load(encoder, map_location="cpu", weights_only=True))
        frozen.to(device).eval()
        precision = MixedPrecision(device, config.train.mixed_precision)
        values = torch.tensor(config.task.label_values, device=device)

        def states(image: torch.Tensor) -> list[torch.Tensor]:
            with precision.autocast():
                return hidden_states(
                    frozen, image[None].to(device), config.model.roi, config.inference.overlap, config.inference.sw_batch_size
                )

        features, targets = [], []
        generator = torch.Generator().manual_seed(0)
        for image, label in subjects["labelled"].values():
            maps, shape = states(image), label.shape[1:]
            voxels = all_voxels(shape)
            voxels = voxels[torch.randperm(len(voxels), generator=generator)[:PROBE_VOXELS]].to(device)
            features.append(sample_features(maps, [2 * n for n in maps[0].shape[2:]], voxels))
            targets.append(torch.searchsorted(values, label[0].to(device)[tuple(voxels.T)].long()))
        probe = LinearProbe.fit(torch.cat(features), torch.cat(targets), len(values))
        del features, targets
        test = {}
        for test_set in TEST_SETS:
            dice = {}
            for name, (image, label) in subjects[test_set].items():
                maps, shape = states(image), label.shape[1:]
                voxels = all_voxels(shape).to(device)
                grid = [2 * n for n in maps[0].shape[2:]]
                classes = torch.cat([probe.predict(sample_features(maps, grid, chunk)) for chunk in voxels.split(PROBE_CHUNK)])
                predicted = values[classes].view(shape).cpu()
                dice[name] = dice_scores(config.task.masks(predicted), config.task.masks(label[0].long())).tolist()
            per_class = np.mean(list(dice.values()), axis=0)
            names = list(config.task.scored)
            test[test_set] = {
                "names": names,
                "dice": dice,
                "class_dice": dict(zip(names, per_class.tolist(), strict=True)),
                "mean_dice": float(per_class.mean()),
            }
        result = {
            "arm": arm,
            "voxels": sum(min(PROBE_VOXELS, int(np.prod(label.shape[1:]))) for _, label in subjects["labelled"].values()),
            "features": int(probe.mean.numel()),
            "seconds": time.perf_counter() - start,
            "test": test,
        }
        write_json(path, result)
        return result

    @functools.cached_property
    def _probe_subjects(self) -> tuple[Any, dict[str, dict[str, tuple[Any, Any]]]]:
        """The fine-tuning settings, and the labelled and test subjects preprocessed as fine-tuning
        reads them: pool → subject → (image, label), each (1, D, H, W) on the CPU."""
        from monai.transforms import Compose

        from gmim.data.sources import discover_cases
        from gmim.data.transforms import load_transforms
        from gmim.segmentation.config import FinetuneConfig

        config = _config(
            FinetuneConfig,
            self.preset.finetune,
            self.out / "configs" / "finetune.yaml",
            ["task.name=tissue", f"task.labels={json.dumps(self.preset.task_labels)}", "data.fold=all"],
            "finetune",
        )
        transform = Compose(load_transforms(config.preprocessing, label=True))
        subjects = {}
        for pool in ("labelled", *TEST_SETS):
            subjects[pool] = {}
            for case in discover_cases([self.datalists[pool]]):
                data = transform(case.as_dict())
                subjects[pool][case.id] = (data["image"].as_tensor(), data["label"].as_tensor())
        return config, subjects

    def finetune(
        self, arm: str, labels: int, seed: int, encoder: Path | None, frozen: bool = False, steps: int | None = None
    ) -> dict[str, Any]:
        """Fine-tune ``arm`` on ``labels`` labelled subjects with ``seed`` (only the decoder when
        ``frozen``), ``steps`` steps (default the preset's), predict and score the test sets; the
        scores (reused when the run folder has them)."""
        run = self.run_folder(arm, labels, seed, frozen)
        scores_path = run / "scores.json"
        if scores_path.is_file():
            return json.loads(scores_path.read_text())
        from gmim.segmentation.config import FinetuneConfig
        from gmim.segmentation.method import finetune

        overrides = [
            "task.name=tissue",
            f"task.labels={json.dumps(self.preset.task_labels)}",
            "data.fold=all",
            f"model.init={json.dumps(str(encoder) if encoder is not None else None)}",
            f"data.labelled_cases={labels}",
            f"train.seed={seed}",
            f"train.device={self.device}",
            f"train.freeze_encoder={str(frozen).lower()}",
            f"model.patch_merging={self.preset.patch_merging(arm)}",
        ]
        overrides += [f"train.steps={steps}"] if steps else []
        config = _config(FinetuneConfig, self.preset.finetune, self.out / "configs" / "finetune.yaml", overrides, "finetune")
        trained = run / "trained.json"
        if not trained.is_file():
            print(f"fine-tuning {arm}{' (encoder frozen)' * frozen}: {labels} labelled subject(s), seed {seed}", flush=True)
            resume = (run / "last.pt").is_file()
            start = time.perf_counter()
            finetune(config, [self.datalists["labelled"]], run, resume=resume)
            write_json(trained, {"seconds": time.perf_counter() - start, "resumed": resume})
        start = time.perf_counter()
        test = self.score(run)
        scores = {
            "arm": arm,
            "labels": labels,
            "seed": seed,
            "frozen": frozen,
            "train_seconds": json.loads(trained.read_text())["seconds"],
            "score_seconds": time.perf_counter() - start,
            "steps": config.train.steps,
            "training": json.loads((run / "splits.json").read_text())["training"],
            "test": test,
        }
        write_json(scores_path, scores)
        return scores

    def score(self, run: Path) -> dict[str, Any]:
        """Predict every test set with the run's model; Dice and HD95 per subject and class."""
        from gmim.data.sources import discover_cases
        from gmim.engine.device import resolve_device
        from gmim.segmentation.evaluation import evaluate
        from gmim.segmentation.inference import Predictor

        predictor = Predictor(run, resolve_device(self.device))
        scores = {}
        for test_set in TEST_SETS:
            predictions = run / f"pred_{test_set}"
            start = time.perf_counter()
            cases = discover_cases([self.datalists[test_set]])
            for case in cases:
                predictor.predict(case, predictions)
            seconds = (time.perf_counter() - start) / len(cases)
            result, _ = evaluate(predictions, self.datalists[test_set], predictor.task)
            summary = result.summary()
            scores[test_set] = {
                "names": result.names,
                "dice": result.dice,
                "hd95": result.hd95,
                "mean_dice": summary["mean"]["dice"],
                "mean_hd95": summary["mean"]["hd95"],
                "class_dice": {n: summary[n]["dice"] for n in result.names},
                "predict_seconds_per_case": seconds,
            }
        return scores


# --- report ----------------------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> tuple[float, float]:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    return (float(finite.mean()), float(finite.std())) if len(finite) else (float("nan"), float("nan"))


#: The arm the others are compared with, seed by seed.
BASELINE = "scratch"


#: What the tables show of a run's scores on a test set: its mean Dice and HD95 over test subjects
#: and classes, and the Dice of the class that needs context.
METRICS = {
    "dice": lambda scores: scores["mean_dice"],
    "hd95": lambda scores: scores["mean_hd95"],
    CONTEXT_CLASS: lambda scores: scores.get("class_dice", {}).get(CONTEXT_CLASS, float("nan")),
}
#: The metrics shown with their gain over :data:`BASELINE`.
GAINS = ("dice", CONTEXT_CLASS)


def aggregate(runs: list[dict[str, Any]], arms: Sequence[str], labels: Sequence[int]) -> dict[str, Any]:
    """Per test set, arm and label count: mean and std over seeds of each of :data:`METRICS`, and of
    the gain over :data:`BASELINE` with the same seed (so the same labelled subjects)."""
    table: dict[str, Any] = {}
    for test_set in TEST_SETS:
        table[test_set] = {}
        for arm in arms:
            table[test_set][arm] = {}
            for k in labels:
                chosen = {r["seed"]: r["test"][test_set] for r in runs if r["arm"] == arm and r["labels"] == k}
                baseline = {r["seed"]: r["test"][test_set] for r in runs if r["arm"] == BASELINE and r["labels"] == k}
                cell: dict[str, float] = {"seeds": len(chosen)}
                for metric, value in METRICS.items():
                    cell[metric], cell[f"{metric}_std"] = _stats([value(c) for c in chosen.values()])
                    if metric in GAINS:
                        cell[f"{metric}_gain"], cell[f"{metric}_gain_std"] = _stats(
                            [value(c) - value(baseline[seed]) for seed, c in chosen.items() if seed in baseline]
                        )
                table[test_set][arm][k] = cell
    return table


def markdown(
    table: dict[str, Any] | None,
    preset: Preset,
    command: str,
    timing: dict[str, Any],
    cases: dict[str, int],
    probe: dict[str, Any] | None = None,
    linear: dict[str, Any] | None = None,
    window: list[dict[str, Any]] | None = None,
    health: dict[str, list[dict[str, Any]]] | None = None,
) -> str:
    """The results as markdown: per test set, tables of the mean Dice, the context class's Dice and
    HD95, the probe's Dice beside the fine-tuned one, the linear probe's Dice per class, how they
    were made, timings and the phases of the time window."""
    labels = preset.labels
    classes = [name for name in preset.task_labels if name != "background"]
    lines = [
        "## Label efficiency on real brain MRI",
        "",
        f"Produced by `{command}`.",
        "",
        (
            f"Task: tissue segmentation of skull-stripped T1 brains ({', '.join(c.replace('_', ' ') for c in classes)}). "
            f"Pre-training: {preset.unlabelled} unlabelled ICBM152 subjects; fine-tuning: {', '.join(map(str, labels))} of "
            f"{preset.labelled} labelled ICBM152 subjects, seeds {', '.join(map(str, preset.seeds))} (the seed draws the subjects "
            f"and the initialisation). Each cell: mean ± std over seeds of the run's mean over test subjects and the "
            f"{len(classes)} classes"
            + (f" (in the tables of {CONTEXT_NAME} alone, the class that needs context, only that class)" if preset.context_class else "")
            + "; best mean in bold. In brackets, for Dice: the gain "
            f"over `{BASELINE}` with the same seed (the same labelled subjects), mean ± std over seeds."
        ),
        "",
    ]
    shown = (
        ("dice", max, "Dice"),
        *([(CONTEXT_CLASS, max, f"Dice of {CONTEXT_NAME} alone")] if preset.context_class else []),
        ("hd95", min, "HD95 (mm)"),
    )
    for test_set, description in TEST_SETS.items():
        for metric, better, unit in shown if table else ():
            lines += [
                f"### {unit}, test set `{test_set}`: {description} ({cases[test_set]} subjects)",
                "",
                "| arm | " + " | ".join(f"{k} label{'s' * (k > 1)}" for k in labels) + " |",
                "| --- |" + " --- |" * len(labels),
            ]
            best = {
                k: better((row[k][metric] for row in table[test_set].values() if not np.isnan(row[k][metric])), default=None)
                for k in labels
            }
            for arm, row in table[test_set].items():
                cells = []
                for k in labels:
                    digits = 1 if metric == "hd95" else 3
                    text = f"{row[k][metric]:.{digits}f} ± {row[k][metric + '_std']:.{digits}f}"
                    text = f"**{text}**" if row[k][metric] == best[k] and len(table[test_set]) > 1 else text
                    if metric in GAINS and arm != BASELINE and not np.isnan(row[k][f"{metric}_gain"]):
                        text += f" ({row[k][f'{metric}_gain']:+.3f} ± {row[k][f'{metric}_gain_std']:.3f})"
                    cells.append(text)
                lines.append(f"| {arm} | " + " | ".join(cells) + " |")
            lines.append("")
    if probe:
        lines += probe_markdown(probe, table, preset.probe_labels, cases, preset.context_class)
    if linear:
        lines += linear_probe_markdown(linear, cases, preset.labelled)
    if health:
        lines += health_markdown(health)
    if table:
        lines += [
            "![Dice against the number of labelled subjects](dice_vs_labels.png)",
            "",
            "![A slice of a test subject: reference and predictions](examples.png)",
            "",
        ]
    lines += [
        "### Pre-training's reach and time (this run's machine)",
        "",
        "How far pre-training moved the encoder from its initial weights: ‖w − w₀‖ / ‖w₀‖; its representation "
        "health at the end (`gmim.pretraining.health`): the final stage's token variation as a share of the "
        "initial encoder's (under 10 %: collapsed), and L_cc on the health views beside its trivial value.",
        "",
        "| arm | pre-training steps | encoder moved | final-stage variation | L_cc (trivial) | pre-training s/step "
        "| fine-tuning s/step | prediction s/subject |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, t in timing.items():
        pre = f"{t['pretrain_s_per_step']:.2f}" if t["pretrain_s_per_step"] is not None else "–"
        moved = f"{t['weight_change']:.1%}" if t.get("weight_change") is not None else "–"
        steps = t.get("pretrain_steps") or "–"
        health = t.get("health")
        variation = (
            (
                f"{health['final']['variation'][-1]:.3f} ({health['final_stage_relative']:.0%})"
                + (" collapsed" if health["collapsed"] else "")
            )
            if health
            else "–"
        )
        cc = f"{health['final']['cross_correlation']:.1f} ({health['final']['trivial']:.1f})" if health else "–"
        tuned = [f"{t[k]:.2f}" if t[k] is not None else "–" for k in ("finetune_s_per_step", "predict_s_per_case")]
        lines.append(f"| {arm} | {steps} | {moved} | {variation} | {cc} | {pre} | {' | '.join(tuned)} |")
    total = sum(t["minutes"] for t in timing.values())
    lines += ["", f"All runs together: {total:.1f} min of pre-training, fine-tuning, prediction and scoring."]
    if window:
        lines += [
            "",
            "### The run's phases (this run's machine)",
            "",
            "Each phase's estimate from the preset's figures (corrected by the phases before it), its share of "
            "the time window when it started (its estimate, without a budget) and its time.",
            "",
            "| phase | estimate (s) | share (s) | took (s) |",
            "| --- | --- | --- | --- |",
        ]
        for phase in window:
            took = f"{phase['seconds']:.0f}" + (" (reused)" if phase["reused"] else " (over)" if phase["seconds"] > phase["share"] else "")
            lines.append(f"| {phase['name']} | {phase['estimate']:.0f} | {phase['share']:.0f} | {took} |")
    return "\n".join(lines) + "\n"


def health_history(out: Path, arms: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per pre-trained arm, its health measurements as its run recorded them (``metrics.jsonl``):
    step, each stage's token variation, the final stage's effective rank, C's rank and L_cc."""
    from gmim.engine.metrics import read_metrics

    history = {}
    for arm in arms:
        path = out / "pretrain" / arm / "metrics.jsonl"
        if path.is_file():
            history[arm] = [
                {
                    "step": r["step"],
                    "variation": [r[f"val/health/variation{i}"] for i in range(5)],
                    "effective_rank": r["val/health/effective_rank4"],
                    "correlation_rank": r["val/health/correlation_rank"],
                    "cc_above_trivial": r["val/health/cc_above_trivial"],
                }
                for r in read_metrics(path)
                if "val/health/variation4" in r
            ]
    return history


def health_markdown(history: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A table of each arm's final-stage token variation over its steps, as a share of the initial
    encoder's, and one of each stage's at the end."""
    steps = sorted({h["step"] for records in history.values() for h in records})
    lines = [
        "### Representation health over pre-training",
        "",
        "The final stage's token variation as a share of the initial encoder's (`gmim.pretraining.health`: "
        "under 10 % the run has collapsed), at each step it was measured; then L_cc above its trivial value "
        "and the final stage's effective rank at the end.",
        "",
        "| arm | " + " | ".join(f"step {s}" for s in steps) + " | L_cc − trivial | effective rank |",
        "| --- |" + " --- |" * (len(steps) + 2),
    ]
    for arm, records in history.items():
        if not records:
            continue
        initial = max(records[0]["variation"][-1], 1e-12)
        by_step = {h["step"]: h for h in records}
        cells = [f"{by_step[s]['variation'][-1] / initial:.0%}" if s in by_step else "–" for s in steps]
        lines.append(
            f"| {arm} | " + " | ".join(cells) + f" | {records[-1]['cc_above_trivial']:+.1f} | {records[-1]['effective_rank']:.1f} |"
        )
    lines += [
        "",
        "Each stage's token variation at the end (as a share of the initial):",
        "",
        "| arm | " + " | ".join(f"stage {i}" for i in range(5)) + " |",
        "| --- |" + " --- |" * 5,
    ]
    for arm, records in history.items():
        if records:
            first, last = records[0]["variation"], records[-1]["variation"]
            lines.append(f"| {arm} | " + " | ".join(f"{b:.3f} ({b / max(a, 1e-12):.0%})" for a, b in zip(first, last)) + " |")
    return lines + [""]


def linear_probe_markdown(linear: dict[str, Any], cases: dict[str, int], labelled: int) -> list[str]:
    """Per test set: each arm's linear-probe Dice per class and their mean, with the mean's gain
    over :data:`BASELINE`."""
    lines = [
        "### Linear probe of frozen encoder features",
        "",
        f"Each arm's frozen Swin encoder (no decoder, no full-resolution convolution): its five hidden states "
        f"upsampled to the voxel grid, standardised, and a multinomial logistic regression fitted on "
        f"{PROBE_VOXELS:,} voxels of each of the {labelled} labelled subjects; Dice on the preprocessed grid, "
        f"mean over test subjects. `{BASELINE}`: the initial weights every arm starts from.",
        "",
    ]
    for test_set in TEST_SETS:
        names = next(iter(linear.values()))["test"][test_set]["names"]
        baseline = linear[BASELINE]["test"][test_set]["mean_dice"] if BASELINE in linear else None
        lines += [
            f"#### Linear probe, test set `{test_set}` ({cases[test_set]} subjects)",
            "",
            "| arm | " + " | ".join(n.replace("_", " ").replace("deep csf", CONTEXT_NAME) for n in names) + " | mean |",
            "| --- |" + " --- |" * (len(names) + 1),
        ]
        for arm, result in linear.items():
            scores = result["test"][test_set]
            mean = f"{scores['mean_dice']:.3f}"
            if baseline is not None and arm != BASELINE:
                mean += f" ({scores['mean_dice'] - baseline:+.3f})"
            lines.append(f"| {arm} | " + " | ".join(f"{scores['class_dice'][n]:.3f}" for n in names) + f" | {mean} |")
        lines.append("")
    return lines


def probe_markdown(
    probe: dict[str, Any], table: dict[str, Any], labels: Sequence[int], cases: dict[str, int], context: bool = False
) -> list[str]:
    """Per test set: each arm's mean Dice (and with ``context`` its context class's) with its encoder
    frozen beside the same fine-tuned (where run)."""
    metrics = {"dice": "mean", **({CONTEXT_CLASS: CONTEXT_NAME} if context else {})}
    lines = []
    for test_set in TEST_SETS:
        lines += [
            f"### Probe: Dice with the encoder frozen, test set `{test_set}` ({cases[test_set]} subjects)",
            "",
            "| arm | "
            + " | ".join(
                f"{k} label{'s' * (k > 1)}: {what}, {how}" for k in labels for what in metrics.values() for how in ("frozen", "fine-tuned")
            )
            + " |",
            "| --- |" + " --- |" * 2 * len(metrics) * len(labels),
        ]
        for arm, row in probe[test_set].items():
            cells = []
            for k in labels:
                tuned = table[test_set][arm].get(k)
                for metric in metrics:
                    cells += [
                        f"{row[k][metric]:.3f} ± {row[k][f'{metric}_std']:.3f}",
                        f"{tuned[metric]:.3f} ± {tuned[f'{metric}_std']:.3f}" if tuned else "–",
                    ]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def timings(out: Path, runs: list[dict[str, Any]], probes: list[dict[str, Any]], arms: Sequence[str]) -> dict[str, Any]:
    """Per arm: minutes of everything it ran, and the time of a pre-training step, a fine-tuning step
    (not counting the probe's cheaper frozen ones) and a prediction."""
    result = {}
    for arm in arms:
        done, summary = out / "pretrain" / arm / "done.json", out / "pretrain" / arm / "summary.json"
        pre = json.loads(done.read_text()) if done.is_file() else None
        health = json.loads(summary.read_text()).get("health") if pre and summary.is_file() else None
        mine = [r for r in runs if r["arm"] == arm]
        spent = sum(r["train_seconds"] + r["score_seconds"] for r in mine + [r for r in probes if r["arm"] == arm])
        result[arm] = {
            "minutes": ((pre["seconds"] if pre else 0.0) + spent) / 60,
            "pretrain_steps": pre["steps"] if pre else None,
            "pretrain_s_per_step": pre["seconds"] / pre["steps"] if pre else None,
            "weight_change": pre.get("weight_change") if pre else None,
            "health": health,
            "finetune_s_per_step": float(np.mean([r["train_seconds"] / r["steps"] for r in mine])) if mine else None,
            "predict_s_per_case": float(np.mean([t["predict_seconds_per_case"] for r in mine for t in r["test"].values()]))
            if mine
            else None,
        }
    return result


def plot_dice(path: Path, table: dict[str, Any], labels: Sequence[int], context: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {"dice": "mean Dice (all classes)", **({CONTEXT_CLASS: f"Dice of {CONTEXT_NAME}"} if context else {})}
    figure, axes = plt.subplots(len(rows), len(TEST_SETS), figsize=(6 * len(TEST_SETS), 4 * len(rows)), squeeze=False)
    for axes_row, (metric, ylabel) in zip(axes, rows.items(), strict=True):
        for ax, test_set in zip(axes_row, TEST_SETS, strict=True):
            for index, (arm, row) in enumerate(table[test_set].items()):
                shift = 1 + 0.015 * (index - len(table[test_set]) / 2)  # arms side by side, error bars apart
                ax.errorbar(
                    [k * shift for k in labels],
                    [row[k][metric] for k in labels],
                    yerr=[row[k][f"{metric}_std"] for k in labels],
                    marker="o",
                    capsize=3,
                    label=arm,
                    linestyle="--" if arm == BASELINE else "-",
                )
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(labels), [str(k) for k in labels])
            ax.set_xlabel("labelled subjects")
            ax.set_ylabel(ylabel)
            ax.set_title(f"test set {test_set}")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)


def _axial(path: Path, index: int | None = None) -> tuple[np.ndarray, float, int]:
    """An axial slice of a volume in RAS orientation (for a label map, when ``index`` is None, the
    slice with the most of the context class, or the middle of the labels' extent), with its aspect
    ratio (voxels need not be square) and the slice index."""
    image = nib.as_closest_canonical(nib.load(path))
    volume = np.asarray(image.dataobj)
    if index is None:
        context = (volume == TASK_LABELS[CONTEXT_CLASS]).sum(axis=(0, 1))
        occupied = np.nonzero(volume.any(axis=(0, 1)))[0]
        index = int(np.argmax(context)) if context.any() else int(occupied.mean()) if len(occupied) else volume.shape[2] // 2
    zooms = image.header.get_zooms()
    return np.rot90(volume[:, :, index]), float(zooms[1] / zooms[0]), index


def plot_examples(path: Path, benchmark: Benchmark, arms: Sequence[str], labels: int, seed: int) -> None:
    """Per test set, its first subject: image, reference and each arm's prediction (fewest labels, first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    tissue = ListedColormap(["tab:blue", "gold", "tab:red"])  # grey matter, white matter, deep CSF
    columns = ["image", "reference", *arms]
    figure, axes = plt.subplots(len(TEST_SETS), len(columns), figsize=(2.2 * len(columns), 2.4 * len(TEST_SETS)), squeeze=False)
    for row, test_set in zip(axes, TEST_SETS, strict=True):
        datalist = benchmark.datalists[test_set]
        entry = json.loads(datalist.read_text())["training"][0]
        _, _, index = _axial(datalist.parent / entry["label"])
        image, aspect, _ = _axial(datalist.parent / entry["image"], index)
        name = entry["image"].removesuffix(".nii.gz")
        for ax, column in zip(row, columns, strict=True):
            ax.imshow(image, cmap="gray", aspect=aspect)
            if column != "image":
                source = (
                    datalist.parent / entry["label"]
                    if column == "reference"
                    else benchmark.run_folder(column, labels, seed) / f"pred_{test_set}" / f"{name}.nii.gz"
                )
                if source.is_file():
                    ax.imshow(
                        np.ma.masked_equal(_axial(source, index)[0], 0),
                        cmap=tissue,
                        vmin=1,
                        vmax=3,
                        alpha=0.6,
                        interpolation="nearest",
                        aspect=aspect,
                    )
            ax.set_title(column if test_set == next(iter(TEST_SETS)) else "", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(test_set)
    figure.suptitle(
        f"{labels} labelled subject(s), seed {seed}: grey matter (blue), white matter (gold)"
        + (", deep CSF (red)" if benchmark.preset.context_class else ""),
        fontsize=10,
    )
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)


#: Where ``--docs`` puts the tables in ``results.md``, so that other sections of that file stay.
DOCS_BEGIN, DOCS_END = "<!-- label_efficiency:begin -->", "<!-- label_efficiency:end -->"


def write_docs(docs: Path, out: Path, text: str) -> None:
    """``docs/results.md`` with this section (replacing the one between the markers) and the plots."""
    docs.mkdir(parents=True, exist_ok=True)
    for name in ("dice_vs_labels.png", "examples.png"):
        shutil.copyfile(out / name, docs / name)
    target = docs / "results.md"
    section = f"{DOCS_BEGIN}\n{text}{DOCS_END}\n"
    existing = target.read_text() if target.is_file() else "# Results\n\n"
    if DOCS_BEGIN in existing and DOCS_END in existing:
        head, rest = existing.split(DOCS_BEGIN, 1)
        updated = head + section + rest.split(DOCS_END, 1)[1].lstrip("\n")
    else:
        updated = existing.rstrip("\n") + "\n\n" + section
    with atomic_path(target) as tmp:
        tmp.write_text(updated)


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
    parser.add_argument("--preset", default="cpu", help=f"{names} (benchmarks/presets/) or a YAML file (default cpu)")
    parser.add_argument("--out", type=Path, default=Path("runs/label_efficiency"), help="run folder (default runs/label_efficiency)")
    parser.add_argument("--arms", nargs="+", metavar="ARM", help=f"a subset of the preset's arms ({', '.join(ARMS)})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--docs", type=Path, metavar="DIR", help="also write DIR/results.md (its label-efficiency section) and the plots")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        metavar="MIN",
        help="time window, start-up included: phases that run long shorten the rest (default the preset's budget_minutes, else none)",
    )
    parser.add_argument("--plan", action="store_true", help="print the plan and its time estimate, run nothing")
    return parser.parse_args(argv)


def device_kind(device: str, kinds: Sequence[str]) -> str:
    """The kind of device a run's figures are for: ``cpu``, or the first of ``kinds`` that a GPU's
    name holds (``h100`` in "NVIDIA H100 80GB HBM3"), else that name."""
    import torch

    from gmim.engine.device import resolve_device

    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return resolved.type
    name = torch.cuda.get_device_name(resolved)
    return next((kind for kind in kinds if kind.lower() in name.lower()), name)


def window_for(preset: Preset, kind: str, budget_minutes: float | None) -> tuple[Window, str]:
    """The run's time window with the preset's figures for ``kind`` (else its first kind's, said so)."""
    budget = check_budget(budget_minutes, "--budget-minutes") if budget_minutes is not None else preset.budget_minutes
    if not preset.seconds:
        if budget is not None:
            raise InputError(f"--budget-minutes {budget}: the preset has no timing figures (seconds) to plan with")
        return Window(dict.fromkeys(PARTS, 0.0), None), "no device kind: the preset has no timing figures"
    used = kind if kind in preset.seconds else next(iter(preset.seconds))
    note = used if used == kind else f"{used} (this is a {kind}, which the preset has no figures for)"
    return Window(preset.seconds[used], budget * 60 if budget is not None else None), note


def plan_for(preset: Preset, arms: Sequence[str]) -> Plan:
    """The work of a run of ``arms`` of ``preset``, as the preset gives it (a time window may shorten it)."""
    tests = preset.test_icbm152 + preset.test_itk
    return Plan(
        subjects=preset.unlabelled + preset.labelled + tests,
        test_subjects=tests,
        probe_subjects=preset.labelled + tests,
        arms=list(arms),
        pretrained=[a for a in arms if preset.all_arms[a] is not None],
        labels=list(preset.labels),
        probe_labels=list(preset.probe_labels),
        seeds=list(preset.seeds),
        pretrain_steps=preset.pretrain["train"]["steps"],
        finetune_steps=preset.finetune["train"]["steps"],
    )


def run(args: argparse.Namespace, command: str) -> int:
    preset, preset_path = Preset.load(args.preset)
    arms = check_arms(args.arms, {a: None for a in preset.arms}, "--arms") if args.arms else preset.arms
    window, kind = window_for(preset, device_kind(args.device, list(preset.seconds)), args.budget_minutes)
    plan = plan_for(preset, arms)
    print(window.describe(plan, kind), flush=True)
    if args.plan:
        return 0
    out: Path = args.out
    # Runs are reused by arm, label count and seed: the data and training settings must not change.
    varying = ("arms", "labels", "seeds", "probe_labels", "seconds", "budget_minutes")
    record, fixed = out / "preset.yaml", {k: v for k, v in dataclasses.asdict(preset).items() if k not in varying}
    if record.is_file() and yaml.safe_load(record.read_text()) != fixed:
        raise InputError(
            f"--out {out}: holds runs with other data or training settings than {preset_path} (see {record}); choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(yaml.safe_dump(fixed, sort_keys=False))
    if window.budget is not None:
        window.fit(plan)

    with window.phase("subjects", plan) as phase:
        phase.reused = (out / "data" / "itk.json").is_file()
        datalists = make_data(out / "data", preset)
    benchmark = Benchmark(out, preset, datalists, args.device)
    encoders: dict[str, Path | None] = dict.fromkeys(arms)
    for arm in plan.pretrained:
        with window.phase(f"pre-training {arm}", plan) as phase:
            phase.reused = (out / "pretrain" / arm / "done.json").is_file()
            encoders[arm] = benchmark.pretrain(arm, plan.pretrain_steps)
    with window.phase("linear probe", plan) as phase:
        phase.reused = all((out / "linear_probe" / f"{arm}.json").is_file() for arm in arms)
        linear = {arm: benchmark.linear_probe(arm, encoders[arm]) for arm in arms}
    runs, probes = [], []
    done = 0
    while done < len(plan.seeds):  # a round that runs long can drop the rounds after it
        seed = plan.seeds[done]
        with window.phase(f"fine-tuning seed {seed}", plan) as phase:
            phase.reused = any((benchmark.run_folder(arm, k, seed) / "scores.json").is_file() for arm in arms for k in plan.labels)
            for arm in arms:
                runs += [benchmark.finetune(arm, k, seed, encoders[arm], steps=plan.finetune_steps) for k in plan.labels]
                probes += [
                    benchmark.finetune(arm, k, seed, encoders[arm], frozen=True, steps=plan.finetune_steps) for k in plan.probe_labels
                ]
        done += 1

    with window.phase("report", plan):
        table = aggregate(runs, arms, preset.labels) if runs else None
        probe = aggregate(probes, arms, preset.probe_labels) if probes else None
        timing = timings(out, runs, probes, arms)
        cases = {t: len(json.loads(datalists[t].read_text())["training"]) for t in TEST_SETS}
        health = health_history(out, arms)
        text = markdown(table, preset, command, timing, cases, probe, linear, window.record(), health)
        write_json(
            out / "results.json",
            {
                "command": command,
                "preset": dataclasses.asdict(preset),
                "arms": arms,
                "plan": dataclasses.asdict(plan),
                "table": table,
                "probe": probe,
                "linear_probe": linear,
                "health": health,
                "timing": timing,
                "window": window.record(),
                "runs": runs,
                "probe_runs": probes,
            },
        )
        with atomic_path(out / "results.md") as tmp:
            tmp.write_text(text)
        if table:
            plot_dice(out / "dice_vs_labels.png", table, preset.labels, preset.context_class)
            plot_examples(out / "examples.png", benchmark, arms, min(preset.labels), plan.seeds[0])
        if args.docs is not None:
            write_docs(args.docs, out, text)
    print(text)
    print(
        f"wrote {out / 'results.md'}, results.json"
        + (", dice_vs_labels.png, examples.png" if table else "")
        + (f" and {args.docs / 'results.md'}" if args.docs else "")
        + f"; {window.elapsed() / 60:.1f} min, start-up included"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "benchmarks/label_efficiency.py", *argv])
    try:
        return run(parse_args(argv), command)
    except (ValueError, OSError) as error:  # InputError is a ValueError
        print(f"label_efficiency: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("label_efficiency: interrupted; the same command goes on from the finished runs", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
