"""The runs, through gmim's own pre-training, fine-tuning, prediction and evaluation: each arm's
pre-training, the linear probe of its frozen encoder, and its fine-tuning runs, each run once and
reused when its folder holds its result."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .presets import TEST_SETS, Preset
from .results import write_json

#: Labelled voxels per subject the linear probe is fitted on (a random subsample), and voxels
#: classified at a time when it predicts.
PROBE_VOXELS, PROBE_CHUNK = 20_000, 100_000


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

        from ..linear_probe import LinearProbe, all_voxels, hidden_states, sample_features

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
