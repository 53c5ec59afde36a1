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

from gmim.errors import InputError

from .presets import DEFAULT_METHOD, TEST_SETS, Preset
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


def _gmim_encoder(config: Any) -> Any:
    from gmim.pretraining.method import build_model

    return build_model(config).encoder


def _swinssl_encoder(config: Any) -> Any:
    from gmim.swinssl.model import build_model

    return build_model(config.model).encoder


#: Per registered pre-training method, its network's encoder built from a resolved config, as its
#: run builds it. Both build MONAI's ``SwinUNETR(...).swinViT`` first thing, with the same
#: arguments, so at the same seed both give the same initial encoder (a test holds them to it).
INITIAL_ENCODERS = {"gmim": _gmim_encoder, "swin-ssl": _swinssl_encoder}


def initial_encoder(config: Any) -> Any:
    """The encoder a pre-training with ``config`` (of any method in :data:`INITIAL_ENCODERS`) starts
    from, built again from its seed: what every arm starts from, and the ``scratch`` arm's frozen
    encoder in the linear probe."""
    from gmim.engine.device import seed_everything

    if config.method not in INITIAL_ENCODERS:
        raise ValueError(f"no initial encoder for method {config.method!r} (known: {', '.join(INITIAL_ENCODERS)})")
    config.model.in_channels = 1  # the benchmark's subjects are single T1 images
    seed_everything(config.train.seed)  # as pre-training does right before it builds the model
    return INITIAL_ENCODERS[config.method](config)


def crops_per_step(config: Any) -> int:
    """Crops of ``model.roi`` voxels a pre-training step puts through the encoder: GMIM's two views
    x and y of each of ``train.batch_size`` volumes; swin-ssl's two views (turned, with regions
    dropped) of each of its ``data.crops_per_volume`` crops of each volume."""
    views = {"gmim": 2, "swin-ssl": 2 * getattr(config.data, "crops_per_volume", 1)}
    if config.method not in views:
        raise ValueError(f"no crop count for method {config.method!r} (known: {', '.join(views)})")
    return config.train.batch_size * views[config.method]


def voxels_per_step(config: Any) -> int:
    """Voxels a pre-training step puts through the encoder: :func:`crops_per_step` × the crop's."""
    return crops_per_step(config) * int(np.prod(config.model.roi))


def _equal_last_two(roi: Sequence[int]) -> list[int]:
    """``roi``'s sizes in an order whose last two are equal (the same voxels): the odd one out
    first, ``[64, 64, 32]`` → ``[32, 64, 64]``."""
    roi = [int(n) for n in roi]
    if roi[1] == roi[2]:
        return roi
    for odd in range(3):
        rest = roi[:odd] + roi[odd + 1 :]
        if rest[0] == rest[1]:
            return [roi[odd], *rest]
    raise InputError(f"model.roi {roi}: swin-ssl needs two equal sizes to turn the crop in their plane, and none are")


#: Per method, how the preset's crop becomes one its config takes with the same voxels.
ROI_RULES = {"swin-ssl": _equal_last_two}


def method_section(section: dict[str, Any], method: str) -> tuple[dict[str, Any], list[str]]:
    """The preset's ``pretrain`` section (written for GMIM, :data:`presets.DEFAULT_METHOD`) for an arm
    of ``method``, and what was changed, in words.

    The rule: every key both configurations have keeps the preset's value (preprocessing, model
    size, steps, batch, learning rate, warm-up, device settings: the same budget); a key only GMIM's
    configuration has (``data.margin``, ``train.picture_every``, ``masking.*``, …) is dropped, and
    named; any other key stays, so that a typo is refused as for GMIM. A method whose crops must
    have another shape gets the same sizes reordered (:data:`ROI_RULES`). GMIM's arms get the
    section as it is."""
    if method == DEFAULT_METHOD:
        return section, []
    from gmim.config import flatten, to_dict
    from gmim.methods import METHODS

    gmim_keys = set(flatten(to_dict(METHODS[DEFAULT_METHOD].config_class()())))
    own_keys = set(flatten(to_dict(METHODS[method].config_class()())))
    kept: dict[str, Any] = {}
    dropped = []
    for key, value in flatten(section).items():
        if key in gmim_keys and key not in own_keys:
            dropped.append(key)
            continue
        *parents, name = key.split(".")
        layer = kept
        for parent in parents:
            layer = layer.setdefault(parent, {})
        layer[name] = value
    notes = [f"GMIM's {', '.join(dropped)} dropped (no such setting)"] if dropped else []
    roi = (kept.get("model") or {}).get("roi")
    if roi is not None and method in ROI_RULES:
        kept["model"]["roi"] = ROI_RULES[method](roi)
        if kept["model"]["roi"] != list(roi):
            notes.append(f"model.roi {kept['model']['roi']} for the preset's {list(roi)} (the same voxels)")
    return kept, notes


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
        """``arm``'s pre-training settings, of its method (``scratch``: GMIM's, whose initial weights
        every arm shares): the preset's ``pretrain`` section as :func:`method_section` gives it to
        that method, then the arm's overrides."""
        return self._pretrain_config(arm, steps)[0]

    def _pretrain_config(self, arm: str, steps: int | None = None) -> tuple[Any, list[str]]:
        from gmim.methods import METHODS

        method = METHODS[self.preset.method(arm)]
        section, notes = method_section(self.preset.pretrain, method.name)
        overrides = [*(self.preset.all_arms[arm] or []), f"train.device={self.device}"] + ([f"train.steps={steps}"] if steps else [])
        path = self.out / "configs" / ("pretrain.yaml" if method.name == DEFAULT_METHOD else f"pretrain-{method.name}.yaml")
        return _config(method.config_class(), section, path, overrides, method.presets), notes

    def pretrain(self, arm: str, steps: int | None = None) -> Path | None:
        """Pre-train ``arm`` once with its method (through :data:`gmim.methods.METHODS`), ``steps``
        steps (default the preset's), resuming an interrupted run; the encoder, or None for ``scratch``."""
        if self.preset.all_arms[arm] is None:
            return None
        from gmim.methods import METHODS

        method = METHODS[self.preset.method(arm)]
        run = self.out / "pretrain" / arm
        config, notes = self._pretrain_config(arm, steps)
        done = run / "done.json"
        if not done.is_file():
            how = f"{method.title}, " if method.name != DEFAULT_METHOD else ""
            print(f"pre-training {arm} ({how}{config.train.steps} steps{''.join('; ' + n for n in notes)})", flush=True)
            resume = (run / "last.pt").is_file()
            start = time.perf_counter()
            method.run_function()(config, [self.datalists["unlabelled"]], run, resume=resume)
            write_json(
                done,
                {
                    "steps": config.train.steps,
                    "seconds": time.perf_counter() - start,
                    "resumed": resume,
                    "method": method.name,
                    "voxels_per_step": voxels_per_step(config),
                    "adapted": notes,
                },
            )
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
