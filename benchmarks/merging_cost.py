"""What a wrong patch merging costs: Swin UNETR weights run with the patch merging they were not
trained with.

MONAI 1.5 changed which 2×2×2 sub-grids Swin UNETR's ``PatchMerging`` concatenates
(:mod:`gmim.swin.merging`). Weights trained before still load under MONAI ≥ 1.5 (the same tensors)
but compute another function from stage 1 on. This script measures what that costs, on real brains
(:mod:`gmim.sample_data`: the ICBM152 2009a T1 of the PyPI package nilearn with its brain mask and
grey/white-matter maps, and insighttoolkit5-examples' KmeansTest_T1UCharRaw.nii.gz with its k-means
label map and skull-strip mask), made into subjects as the label-efficiency benchmark makes them
(``label_efficiency.make_data``: deformed, bias-field, contrast and noise variants, skull-stripped):

1. **Hidden states**: for an encoder trained with one merging (the random initial encoder, one
   pre-trained briefly with ``model.patch_merging=monai-legacy``, and the encoders of the two
   fine-tunings below), the relative L2 difference ‖h_wrong − h_right‖ / ‖h_right‖ of its five hidden
   states (stages 0–4, each layer-normalised as Swin UNETR's decoder reads them) when it is run with
   the other merging, over the whole of each held-out subject (Gaussian-weighted ``roi`` windows),
   averaged over the held-out subjects.
2. **Dice**: a Swin UNETR fine-tuned (``gmim finetune``'s own method) for grey/white-matter
   segmentation with ``monai-legacy``, then every held-out subject predicted (``gmim predict``'s
   ``Predictor``) with the same weights under ``monai-legacy`` (right) and ``monai`` (wrong: the
   run's ``config.yaml`` with another ``model.patch_merging``); and the reverse, trained with
   ``monai`` and read with ``monai-legacy``. A control: the legacy run with its encoder's stages 1–4
   (``swinViT.layers1``–``4``, everything whose input the merging changes) freshly initialised, the
   most any change there could cost this task.
3. **Linear probe** (:mod:`linear_probe`) of the two encoders trained with ``monai-legacy`` (the
   pre-trained one and the fine-tuned one): a logistic regression on the frozen encoder's hidden
   states, fitted with the right merging and read with the right and the wrong one; and fitted
   again on the wrong merging's features (do they still hold the classes, read afresh?).

    python -m benchmarks.merging_cost                      # 17 min on two shared CPU cores (docs/results.md)
    python -m benchmarks.merging_cost --finetune-steps 300 --pretrain-steps 100 --out runs/merging_cost_long

Runs that finished are reused (the same ``--out`` with other sizes is refused); ``OUT/results.json``
holds every number.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.label_efficiency.data import make_data
from benchmarks.label_efficiency.presets import TEST_SETS, Preset
from benchmarks.label_efficiency.results import write_json
from benchmarks.label_efficiency.runs import PROBE_CHUNK, PROBE_VOXELS, Benchmark, initial_encoder
from gmim.errors import InputError
from gmim.swin.merging import LEGACY

#: The two patch mergings compared, as arms of the label-efficiency benchmark's machinery: the
#: merging a run is trained with (``model.patch_merging``).
MERGINGS = {"legacy": LEGACY, "monai": "monai"}
#: What the arms are called in the tables.
NAMES = {"legacy": "`monai-legacy`", "monai": "`monai`"}
#: Held-out pools: two subjects of the ICBM152 template's seeds, the ITK brain itself and a variant of it.
HELD_OUT = {"icbm152": 2, "itk": 2}


def other(arm: str) -> str:
    """The merging an encoder trained with ``arm``'s is not trained with."""
    return "monai" if arm == "legacy" else "legacy"


def relative_difference(wrong: Sequence[Any], right: Sequence[Any]) -> list[float]:
    """‖wrong_i − right_i‖ / ‖right_i‖ for each pair of hidden states (any shapes, one per stage)."""
    return [float(((w - r).double() ** 2).sum().sqrt() / (r.double() ** 2).sum().sqrt()) for w, r in zip(wrong, right, strict=True)]


def read_with(run: Path, arm: str) -> Path:
    """A run folder that reads ``run``'s weights with ``arm``'s patch merging: its ``config.yaml`` with
    ``model.patch_merging`` replaced (what a user who sets the wrong one gets), its weights linked."""
    folder = run.parent / f"{run.name}_read_{arm}"
    folder.mkdir(exist_ok=True)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["patch_merging"] = MERGINGS[arm]
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for name in ("best.pt", "last.pt"):
        if (run / name).is_file() and not (folder / name).exists():
            os.symlink(Path("..") / run.name / name, folder / name)
    return folder


def with_fresh_stages(run: Path, seed: int = 1) -> Path:
    """A run folder with ``run``'s weights but its encoder's stages 1–4 (``swinViT.layers*``) those of a
    freshly initialised network (``seed``): the control, a Swin UNETR whose deep features say nothing."""
    import torch

    from gmim.config import load_config
    from gmim.engine.checkpoint import save_checkpoint
    from gmim.segmentation.config import FinetuneConfig
    from gmim.segmentation.inference import find_run
    from gmim.segmentation.network import build_network
    from gmim.weights_only import load_checkpoint

    folder = run.parent / f"{run.name}_fresh_stages"
    folder.mkdir(exist_ok=True)
    config_path, weights = find_run(run)
    config = load_config(FinetuneConfig, config_path)
    torch.manual_seed(seed)
    fresh = build_network(config.model, config.task.out_channels).state_dict()
    trained = load_checkpoint(weights)["model"]
    save_checkpoint(folder / "best.pt", {"model": {k: fresh[k] if k.startswith("swinViT.layers") else v for k, v in trained.items()}})
    shutil.copyfile(config_path, folder / "config.yaml")
    return folder


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The preset's data and training sections (the label-efficiency ``cpu`` preset's, resized)."""
    spacing = [args.spacing] * 3
    model = {"feature_size": args.feature_size, "roi": list(args.roi)}
    return {
        "pretrain": {
            "preprocessing": {"modality": "mri", "spacing": spacing},
            "model": model,
            "data": {"margin": [16, 16, 16]},
            "train": {
                "steps": args.pretrain_steps,
                "batch_size": 2,
                "lr": 4.0e-4,
                "warmup_steps": max(1, args.pretrain_steps // 10),
                "mixed_precision": False,
                "workers": 0,
                "checkpoint_every": 0,
                "validate_every": 0,
                "picture_every": 0,
            },
        },
        "finetune": {
            "preprocessing": {"modality": "mri", "spacing": spacing},
            "model": model,
            "train": {
                "steps": args.finetune_steps,
                "epochs": None,
                "batch_size": 1,
                "samples_per_volume": 1,
                "lr": 2.0e-3,
                "warmup_steps": max(1, args.finetune_steps // 10),
                "mixed_precision": False,
                "workers": 0,
                "checkpoint_every": 0,
            },
            "inference": {"overlap": 0.25},
        },
    }


def preset_for(args: argparse.Namespace) -> Preset:
    sections = settings(args)
    return Preset(
        unlabelled=args.unlabelled,
        labelled=args.labelled,
        test_icbm152=HELD_OUT["icbm152"],
        test_itk=HELD_OUT["itk"],
        arms=list(MERGINGS),
        labels=[args.labelled],
        seeds=[0],
        pretrain=sections["pretrain"],
        finetune=sections["finetune"],
        extra_arms={arm: [f"model.patch_merging={merging}"] for arm, merging in MERGINGS.items()},
    )


class Encoders:
    """Frozen encoders (the pre-training's ``MaskedSwinEncoder``, MONAI's ``SwinTransformer``) built with
    either merging, and their hidden states on the probe's subjects (preprocessed as fine-tuning reads them)."""

    def __init__(self, benchmark: Benchmark) -> None:
        import torch

        from gmim.engine.device import resolve_device

        self.benchmark = benchmark
        self.device = resolve_device(benchmark.device)
        self.config, self.subjects = benchmark._probe_subjects
        self.initial = {arm: initial_encoder(benchmark.pretrain_config(arm)) for arm in MERGINGS}
        self.initial["monai"].load_state_dict(self.initial["legacy"].state_dict())  # one set of weights, two functions
        self.torch = torch

    def build(self, arm: str, weights: Path | None) -> Any:
        """The encoder with ``arm``'s merging: the initial weights, or those of ``weights`` (a
        pre-training's ``encoder.pt``, a fine-tuning's checkpoint) loaded as ``--pretrained`` loads them."""
        import copy

        from gmim.swin.weights import load_weights, read_weights

        encoder = copy.deepcopy(self.initial[arm])
        if weights is not None:
            report = load_weights(encoder, read_weights(weights))
            if report.missing or report.mismatched:
                raise RuntimeError(f"{weights}: the encoder did not load whole ({report.missing[:3]}, {report.mismatched[:3]})")
        return encoder.to(self.device).eval()

    def states(self, encoder: Any, pools: Sequence[str]) -> dict[str, dict[str, list[Any]]]:
        """pool → subject → the encoder's five hidden states over the whole subject, for ``pools``
        (``labelled`` and the test sets)."""
        from benchmarks.linear_probe import hidden_states

        model, inference = self.config.model, self.config.inference
        return {
            pool: {
                name: hidden_states(encoder, image[None].to(self.device), model.roi, inference.overlap, inference.sw_batch_size)
                for name, (image, _) in self.subjects[pool].items()
            }
            for pool in pools
        }

    def probe(self, fit: dict[str, dict[str, list[Any]]], reads: dict[str, dict[str, dict[str, list[Any]]]]) -> dict[str, Any]:
        """A linear probe fitted on the labelled subjects' states ``fit``, scored with each of ``reads``
        (name → states): per test set, Dice per class and its mean over the classes and subjects."""
        from benchmarks.linear_probe import LinearProbe, all_voxels, sample_features
        from gmim.segmentation.metrics import dice_scores

        torch, task = self.torch, self.config.task
        values = torch.tensor(task.label_values, device=self.device)
        generator = torch.Generator().manual_seed(0)  # the same voxels for every fit
        features, targets = [], []
        for name, (_, label) in self.subjects["labelled"].items():
            maps, shape = fit["labelled"][name], label.shape[1:]
            voxels = all_voxels(shape)
            voxels = voxels[torch.randperm(len(voxels), generator=generator)[:PROBE_VOXELS]].to(self.device)
            features.append(sample_features(maps, [2 * n for n in maps[0].shape[2:]], voxels))
            targets.append(torch.searchsorted(values, label[0].to(self.device)[tuple(voxels.T)].long()))
        probe = LinearProbe.fit(torch.cat(features), torch.cat(targets), len(values))
        scores: dict[str, Any] = {}
        for read, states in reads.items():
            scores[read] = {}
            for test_set in TEST_SETS:
                dice = []
                for name, (_, label) in self.subjects[test_set].items():
                    maps, shape = states[test_set][name], label.shape[1:]
                    grid = [2 * n for n in maps[0].shape[2:]]
                    voxels = all_voxels(shape).to(self.device)
                    classes = torch.cat([probe.predict(sample_features(maps, grid, chunk)) for chunk in voxels.split(PROBE_CHUNK)])
                    predicted = values[classes].view(shape).cpu()
                    dice.append(dice_scores(task.masks(predicted), task.masks(label[0].long())).tolist())
                per_class = np.mean(dice, axis=0)
                scores[read][test_set] = {"class_dice": dict(zip(task.scored, per_class.tolist())), "mean_dice": float(per_class.mean())}
        return scores


def percent(value: float) -> str:
    return f"{100 * value:.1f} %" if value < 0.995 else f"{100 * value:.0f} %"


def markdown(results: dict[str, Any]) -> str:
    """The three tables."""
    lines = [
        "### Hidden states: relative L2 difference under the other merging",
        "",
        "‖h_wrong − h_right‖ / ‖h_right‖ per stage, mean over the held-out subjects "
        f"({', '.join(f'{n} {s}' for s, n in HELD_OUT.items())}).",
        "",
        "| encoder | trained with | run with | stage 0 | stage 1 | stage 2 | stage 3 | stage 4 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["hidden_states"]:
        cells = " | ".join(percent(v) for v in row["relative_l2"])
        lines.append(f"| {row['encoder']} | {NAMES[row['trained']]} | {NAMES[other(row['trained'])]} | {cells} |")
    lines += [
        "",
        "### Fine-tuned Swin UNETR: Dice with the right and the wrong merging",
        "",
        "Mean Dice over the held-out subjects of each test set (grey matter, white matter, their mean); HD95 (mm) of the mean.",
        "",
        "| trained with | predicted with | `icbm152` grey | white | mean | HD95 | `itk` grey | white | mean | HD95 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["dice"]:
        cells = []
        for test_set in TEST_SETS:
            scores = row["test"][test_set]
            cells += [f"{v:.3f}" for v in scores["class_dice"].values()]
            cells += [f"{scores['mean_dice']:.3f}", f"{scores['mean_hd95']:.1f}"]
        lines.append(f"| {NAMES[row['trained']]} | {row['read']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Linear probe of the frozen encoder",
        "",
        "Mean Dice (grey and white matter) of a logistic regression on the encoder's five hidden states: "
        "fitted with the right merging and read with the right or the wrong one, or fitted and read with "
        "the wrong one.",
        "",
        "| encoder | trained with | fitted / read with | `icbm152` | `itk` |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in results["linear_probe"]:
        right, wrong = NAMES[row["trained"]], NAMES[other(row["trained"])]
        for read, label in (("right", f"{right} / {right}"), ("wrong", f"{right} / {wrong}"), ("refit", f"{wrong} / {wrong}")):
            cells = " | ".join(f"{row['scores'][read][t]['mean_dice']:.3f}" for t in TEST_SETS)
            lines.append(f"| {row['encoder']} | {right} | {label} | {cells} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/merging_cost"), help="run folder (default runs/merging_cost)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--feature-size", type=int, default=12, help="Swin UNETR feature size (default 12)")
    parser.add_argument("--roi", type=int, nargs=3, default=[64, 64, 32], metavar=("D", "H", "W"), help="crop (default 64 64 32)")
    parser.add_argument("--spacing", type=float, default=3.0, help="voxel size in mm the subjects are resampled to (default 3)")
    parser.add_argument("--finetune-steps", type=int, default=80, help="steps of each fine-tuning (default 80)")
    parser.add_argument("--pretrain-steps", type=int, default=20, help="steps of the brief legacy pre-training (default 20)")
    parser.add_argument(
        "--labelled", type=int, default=2, help="labelled ICBM152 subjects fine-tuning and the probe learn from (default 2)"
    )
    parser.add_argument("--unlabelled", type=int, default=2, help="unlabelled ICBM152 subjects of the pre-training (default 2)")
    parser.add_argument("--no-reverse", action="store_true", help="skip the run trained with monai and read with monai-legacy")
    args = parser.parse_args(argv)
    if min(args.finetune_steps, args.pretrain_steps, args.labelled, args.unlabelled) < 1:
        parser.error("steps and subject counts must be at least 1")
    return args


def run(args: argparse.Namespace, command: str) -> int:
    import torch

    start = time.perf_counter()
    seconds: dict[str, float] = {}

    def phase(name: str, began: float) -> None:
        seconds[name] = time.perf_counter() - began
        print(f"  {name}: {seconds[name]:.0f} s", flush=True)

    out: Path = args.out
    preset = preset_for(args)
    record = out / "settings.json"
    fixed = {k: v for k, v in vars(args).items() if k not in ("out", "device", "no_reverse")}
    fixed["roi"] = list(fixed["roi"])
    if record.is_file() and json.loads(record.read_text()) != fixed:
        raise InputError(f"--out {out}: holds runs with other settings (see {record}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(record, fixed)

    began = time.perf_counter()
    datalists = make_data(out / "data", preset)
    benchmark = Benchmark(out, preset, datalists, args.device)
    phase("subjects", began)

    began = time.perf_counter()
    pretrained = benchmark.pretrain("legacy", args.pretrain_steps)
    assert pretrained is not None
    moved = json.loads((pretrained.parent / "done.json").read_text())["weight_change"]
    phase("pre-training (monai-legacy)", began)

    trained = ["legacy"] if args.no_reverse else ["legacy", "monai"]
    dice, runs = [], {}
    for arm in trained:
        began = time.perf_counter()
        scores = benchmark.finetune(arm, args.labelled, 0, None, steps=args.finetune_steps)
        runs[arm] = benchmark.run_folder(arm, args.labelled, 0)
        dice.append({"trained": arm, "read": NAMES[arm], "test": scores["test"]})
        wrong = read_with(runs[arm], other(arm))
        dice.append({"trained": arm, "read": NAMES[other(arm)], "test": benchmark.score(wrong)})
        if arm == "legacy":
            control = benchmark.score(with_fresh_stages(runs[arm]))
            dice.append({"trained": arm, "read": f"{NAMES[arm]}, stages 1–4 re-initialised (control)", "test": control})
        phase(f"fine-tuning ({MERGINGS[arm]}) and predictions", began)

    began = time.perf_counter()
    encoders = Encoders(benchmark)
    candidates: list[tuple[str, str, Path | None]] = [
        ("random initial", "legacy", None),
        (f"pre-trained {args.pretrain_steps} steps (moved {moved:.1%})", "legacy", pretrained),
        *((f"fine-tuned {args.finetune_steps} steps", arm, runs[arm]) for arm in trained),
    ]
    hidden, probes = [], []
    for description, arm, weights in candidates:
        # the probe: of the encoders trained with the legacy merging (a random one is trained with neither)
        probed = weights is not None and arm == "legacy"
        pools = ["labelled", *TEST_SETS] if probed else list(TEST_SETS)
        right = encoders.states(encoders.build(arm, weights), pools)
        wrong = encoders.states(encoders.build(other(arm), weights), pools)
        per_subject = [relative_difference(wrong[t][name], right[t][name]) for t in TEST_SETS for name in right[t]]
        hidden.append(
            {"encoder": description, "trained": arm, "relative_l2": np.mean(per_subject, axis=0).tolist(), "per_subject": per_subject}
        )
        if probed:
            scores = encoders.probe(right, {"right": right, "wrong": wrong})
            scores["refit"] = encoders.probe(wrong, {"refit": wrong})["refit"]
            probes.append({"encoder": description, "trained": arm, "scores": scores})
        print(f"  {description} ({MERGINGS[arm]}): hidden states and probe done", flush=True)
    phase("hidden states and linear probes", began)

    results = {"command": command, "settings": fixed, "hidden_states": hidden, "dice": dice, "linear_probe": probes, "seconds": seconds}
    text = markdown(results)
    results["minutes"] = (time.perf_counter() - start) / 60
    write_json(out / "results.json", results)
    print()
    print(text)
    print(f"{command}: {results['minutes']:.1f} min on {torch.get_num_threads()} thread(s); results in {out / 'results.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "benchmarks.merging_cost", *argv])
    try:
        return run(parse_args(argv), command)
    except (ValueError, OSError) as error:  # InputError is a ValueError
        print(f"merging_cost: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
