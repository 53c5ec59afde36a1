"""The label-efficiency benchmark's cheap parts: its presets, the subjects it makes from real brains,
and its tables (the training runs are the library's, tested elsewhere)."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import nibabel as nib
import numpy as np
import pytest
import yaml

from benchmarks.label_efficiency.__main__ import main
from benchmarks.label_efficiency.data import make_data
from benchmarks.label_efficiency.plan import plan_for
from benchmarks.label_efficiency.presets import PRESETS, TEST_SETS, Preset
from benchmarks.label_efficiency.report import DOCS_BEGIN, markdown, probe_markdown, write_docs
from benchmarks.label_efficiency.results import aggregate, health_history
from benchmarks.label_efficiency.runs import (
    Benchmark,
    _config,
    crops_per_step,
    initial_encoder,
    method_section,
    voxels_per_step,
    weight_change,
)
from benchmarks.time_window import PARTS, Plan, Window
from conftest import made_once
from gmim.errors import InputError


@pytest.mark.parametrize("name", sorted(path.stem for path in PRESETS.glob("*.yaml")))
def test_shipped_presets_give_valid_configs(name, tmp_path):
    from gmim.segmentation.config import FinetuneConfig

    preset, _ = Preset.load(name)
    benchmark = Benchmark(tmp_path, preset, {}, "cpu")
    for arm in preset.arms:
        config = benchmark.pretrain_config(arm)  # of the arm's method; refused if it is not valid
        assert config.method == preset.method(arm) and config.train.steps == preset.pretrain["train"]["steps"]
    config = _config(FinetuneConfig, preset.finetune, tmp_path / "finetune.yaml", ["data.fold=all"], "finetune")
    assert config.train.steps and config.train.epochs is None
    merging = {"scratch": "monai", "gmim": "monai", "prototype": "monai-legacy", "swin-ssl": "monai"}  # fine-tuned as pre-trained
    assert all(preset.patch_merging(arm) == merging[arm] for arm in preset.arms if arm in merging)


@pytest.mark.parametrize("name", sorted(path.stem for path in PRESETS.glob("*.yaml")))
def test_swin_ssl_arm_has_gmims_budget(name, tmp_path):
    """The swin-ssl arm: the preset's pre-training settings, less GMIM's own keys, and as many
    voxels through the encoder per step as GMIM's x and y."""
    from gmim.config import flatten, to_dict
    from gmim.swin.config import SwinConfig

    preset, _ = Preset.load(name)
    benchmark = Benchmark(tmp_path, preset, {}, "cpu")
    gmim, swin = benchmark.pretrain_config("gmim"), benchmark.pretrain_config("swin-ssl")
    assert swin.method == "swin-ssl" and swin.data.crops_per_volume == 1
    assert swin.preprocessing == gmim.preprocessing
    architecture = [f.name for f in dataclasses.fields(SwinConfig) if f.name != "roi"]
    assert {k: getattr(swin.model, k) for k in architecture} == {k: getattr(gmim.model, k) for k in architecture}
    shared = ["steps", "batch_size", "lr", "warmup_steps", "mixed_precision", "workers", "device", "seed", "grad_clip", "compile"]
    assert {k: getattr(swin.train, k) for k in shared} == {k: getattr(gmim.train, k) for k in shared}
    assert sorted(swin.model.roi) == sorted(gmim.model.roi) and swin.model.roi[1] == swin.model.roi[2]
    assert voxels_per_step(swin) == voxels_per_step(gmim) and crops_per_step(swin) == crops_per_step(gmim)
    resolved = flatten(to_dict(swin))
    _, notes = method_section(preset.pretrain, "swin-ssl")
    for key, value in flatten(preset.pretrain).items():  # every key the preset sets: carried over, or dropped and named
        assert (key in resolved and (resolved[key] == value or key == "model.roi")) or key in notes[0], key
    assert "data.margin" in notes[0]


def test_method_section_drops_only_gmims_own_keys_for_another_method(tmp_path):
    section = {"model": {"feature_size": 12, "roi": [64, 64, 32]}, "masking": {"grids": [2]}, "train": {"steps": 3, "picture_every": 0}}
    assert method_section(section, "gmim") == (section, [])  # GMIM's arms: as it is, unknown keys refused by its config
    kept, notes = method_section(section, "swin-ssl")
    assert kept == {"model": {"feature_size": 12, "roi": [32, 64, 64]}, "train": {"steps": 3}}
    assert notes == [
        "GMIM's masking.grids, train.picture_every dropped (no such setting)",
        "model.roi [32, 64, 64] for the preset's [64, 64, 32] (the same voxels)",
    ]
    kept, _ = method_section({**section, "train": {"steps": 3, "stepz": 1}}, "swin-ssl")
    assert kept["train"] == {"steps": 3, "stepz": 1}  # a typo stays, to be refused by the config
    assert method_section({"model": {"roi": [64, 32, 64]}}, "swin-ssl")[0]["model"]["roi"] == [32, 64, 64]
    with pytest.raises(InputError, match="swin-ssl needs two equal sizes"):
        method_section({"model": {"roi": [96, 64, 32]}}, "swin-ssl")
    (tmp_path / "arm.yaml").write_text((PRESETS / "smoke.yaml").read_text() + "extra_arms: {simclr: [method=simclr]}\n")
    with pytest.raises(InputError, match="arm 'simclr': method 'simclr' is not a pre-training method"):
        Preset.load(str(tmp_path / "arm.yaml"))


def test_bad_presets_are_refused_in_one_line(tmp_path):
    good = (PRESETS / "smoke.yaml").read_text()
    (tmp_path / "typo.yaml").write_text(good + "seed: [1]\n")
    with pytest.raises(InputError, match="unknown keys"):
        Preset.load(str(tmp_path / "typo.yaml"))
    (tmp_path / "labels.yaml").write_text(good.replace("labels: [1, 2]", "labels: [1, 5]"))
    with pytest.raises(InputError, match="between 1 and labelled"):
        Preset.load(str(tmp_path / "labels.yaml"))
    (tmp_path / "probe.yaml").write_text(good.replace("probe_labels: [1]", "probe_labels: [3]"))
    with pytest.raises(InputError, match="probe_labels"):
        Preset.load(str(tmp_path / "probe.yaml"))
    (tmp_path / "context.yaml").write_text(good + "context_class: deep\n")
    with pytest.raises(InputError, match="context_class must be true or false"):
        Preset.load(str(tmp_path / "context.yaml"))
    with pytest.raises(InputError, match="neither a preset"):
        Preset.load("no-such-preset")
    assert main(["--preset", "smoke", "--arms", "gmim", "simclr", "--out", str(tmp_path / "out")]) == 2
    assert main(["--preset", "smoke", "--seeds", "0", "7", "--plan"]) == 2  # a seed the preset does not have


@pytest.fixture(scope="module")
def smoke_subjects(tmp_path_factory, itk_paths, mni):
    """The smoke preset's subjects (made once for all the test processes: the window test below runs
    on them too; make_data reuses what is there)."""
    preset, _ = Preset.load("smoke")
    folder = made_once(tmp_path_factory, "smoke_subjects", lambda folder: make_data(folder, preset))
    return folder, make_data(folder, preset)


@pytest.mark.slow
def test_subjects_from_two_real_brains(smoke_subjects, tmp_path, itk_paths):
    preset, _ = Preset.load("smoke")
    folder, datalists = smoke_subjects
    pools = {pool: json.loads(path.read_text())["training"] for pool, path in datalists.items()}
    assert {pool: len(entries) for pool, entries in pools.items()} == {"unlabelled": 2, "labelled": 2, "icbm152": 1, "itk": 1}
    assert all("label" not in entry for entry in pools["unlabelled"])  # pre-training sees no labels
    images = [nib.load(folder / e["image"]) for entries in pools.values() for e in entries]
    assert len({img.get_fdata().tobytes() for img in images}) == len(images)  # every subject its own
    for entry in [e for pool in ("labelled", "icbm152", "itk") for e in pools[pool]]:
        image, label = nib.load(folder / entry["image"]), nib.load(folder / entry["label"])
        assert image.shape == label.shape and np.allclose(image.affine, label.affine)
        labels = np.asarray(label.dataobj)
        assert set(np.unique(labels)) == {0, 1, 2}
        assert np.asarray(image.dataobj)[0, 0, 0] == 0  # skull-stripped: nothing outside the brain
    itk = nib.load(itk_paths["t1"])
    first = nib.load(folder / pools["itk"][0]["image"])
    assert first.header.get_zooms() == itk.header.get_zooms()  # the real ITK brain, cropped to its brain
    assert np.allclose(first.affine[:3, :3], itk.affine[:3, :3])
    assert first.shape != itk.shape and all(a <= b for a, b in zip(first.shape, itk.shape, strict=True))
    assert make_data(folder, preset) == datalists  # made once
    preset.context_class = True
    deep = make_data(tmp_path / "context", preset)
    for pool in ("labelled", "icbm152", "itk"):  # deep CSF in every brain, and only inside it
        entry = json.loads(deep[pool].read_text())["training"][0]
        labels = np.asarray(nib.load(tmp_path / "context" / entry["label"]).dataobj)
        assert set(np.unique(labels)) == {0, 1, 2, 3}
        assert np.asarray(nib.load(tmp_path / "context" / entry["image"]).dataobj)[labels == 3].min() > 0


def test_tables_mean_and_spread_over_seeds():
    def run(arm, labels, seed, dice):
        test = {
            t: {"mean_dice": dice, "mean_hd95": 10 * dice, "class_dice": {"deep_csf": dice / 2}, "predict_seconds_per_case": 1.0}
            for t in TEST_SETS
        }
        return {"arm": arm, "labels": labels, "seed": seed, "train_seconds": 4.0, "score_seconds": 1.0, "steps": 2, "test": test}

    runs = [run("scratch", 1, 0, 0.5), run("scratch", 1, 1, 0.7), run("gmim", 1, 0, 0.8), run("gmim", 1, 1, math.nan)]
    table = aggregate(runs, ["scratch", "gmim"], [1])
    assert table["icbm152"]["scratch"][1]["dice"] == pytest.approx(0.6)
    assert table["icbm152"]["scratch"][1]["dice_std"] == pytest.approx(0.1)
    assert table["itk"]["gmim"][1]["dice"] == pytest.approx(0.8)  # NaN left out
    preset, _ = Preset.load("smoke")
    preset.labels = [1]
    times = {"minutes": 0.1, "pretrain_s_per_step": None, "finetune_s_per_step": 2.0, "predict_s_per_case": 1.0}
    timing = {arm: times for arm in ("scratch", "gmim")}
    text = markdown(table, preset, "python -m benchmarks.label_efficiency --preset smoke", timing, {"icbm152": 1, "itk": 1})
    assert "deep CSF alone" not in text  # a class of the task only with context_class
    preset.context_class = True
    text = markdown(table, preset, "python -m benchmarks.label_efficiency --preset smoke", timing, {"icbm152": 1, "itk": 1})
    assert table["icbm152"]["gmim"][1]["dice_gain"] == pytest.approx(0.3)  # paired with scratch's seed 0 only
    assert "| gmim | **0.800 ± 0.000** (+0.300 ± 0.000) |" in text and "| scratch | 0.600 ± 0.100 |" in text
    assert "`python -m benchmarks.label_efficiency --preset smoke`" in text
    assert "Dice of deep CSF alone" in text
    assert "| gmim | **0.400 ± 0.000** (+0.150 ± 0.000) |" in text  # deep CSF alone, and its gain


def test_a_preset_without_fine_tuning_reports_health_and_timing(tmp_path):
    """``seeds: []``: pre-training, its health and the linear probe only (the collapse presets)."""
    preset, _ = Preset.load("collapse-cpu")
    assert preset.seeds == [] and preset.labels == []
    assert plan_for(preset, preset.arms).describe()[-1] == "fine-tuning: none"
    run = tmp_path / "pretrain" / "gmim"
    run.mkdir(parents=True)
    records = [
        {
            "step": s,
            **{f"val/health/variation{i}": v for i in range(5)},
            "val/health/effective_rank4": 2.0,
            "val/health/correlation_rank": 1.0,
            "val/health/cc_above_trivial": cc,
        }
        for s, v, cc in ((0, 0.4, 300.0), (20, 0.02, 0.5))
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [{"step": 1, "train/loss": 1.0}, *records]))
    # a method without GMIM's cross-correlation (swin-ssl) records the encoder's health alone
    (tmp_path / "pretrain" / "swin-ssl").mkdir()
    own = [{k: v for k, v in r.items() if "correlation" not in k and "trivial" not in k} for r in records]
    (tmp_path / "pretrain" / "swin-ssl" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in own))
    history = health_history(tmp_path, ["scratch", "gmim", "swin-ssl"])
    assert list(history) == ["gmim", "swin-ssl"] and [h["step"] for h in history["gmim"]] == [0, 20]
    assert history["swin-ssl"][-1]["cc_above_trivial"] is None
    timing = {
        "gmim": {
            "minutes": 1.0,
            "pretrain_steps": 20,
            "pretrain_s_per_step": 3.0,
            "weight_change": 0.1,
            "finetune_s_per_step": None,
            "predict_s_per_case": None,
            "health": {
                "initial": {"variation": [0.4] * 5},
                "final": {"variation": [0.02] * 5, "cross_correlation": 368.5, "trivial": 368.0},
                "final_stage_relative": 0.05,
                "collapsed": True,
            },
        }
    }
    own_health = {**timing["gmim"]["health"], "final": {"variation": [0.02] * 5, "cross_correlation": None, "trivial": None}}
    timing["swin-ssl"] = {**timing["gmim"], "health": own_health}
    text = markdown(
        None, preset, "python -m benchmarks.label_efficiency --preset collapse-cpu", timing, {"icbm152": 1, "itk": 1}, health=history
    )
    assert "### Dice" not in text and "dice_vs_labels.png" not in text
    assert "| gmim | 100% | 5% | +0.5 | 2.0 |" in text and "| swin-ssl | 100% | 5% | – | 2.0 |" in text
    assert "| gmim | 20 | 10.0% | 0.020 (5%) collapsed | 368.5 (368.0) | 3.00 | – | – |" in text
    assert "| swin-ssl | 20 | 10.0% | 0.020 (5%) collapsed | – | 3.00 | – | – |" in text


def test_probe_table_sets_frozen_beside_fine_tuned():
    def run(arm, seed, dice):
        test = {t: {"mean_dice": dice, "mean_hd95": 5.0, "class_dice": {"deep_csf": dice - 0.1}} for t in TEST_SETS}
        return {"arm": arm, "labels": 1, "seed": seed, "test": test}

    tuned = aggregate([run("scratch", 0, 0.7), run("scratch", 1, 0.9)], ["scratch"], [1, 2])
    frozen = aggregate([run("scratch", 0, 0.5), run("scratch", 1, 0.5)], ["scratch"], [1])
    assert "| scratch | 0.500 ± 0.000 | 0.800 ± 0.100 |" in probe_markdown(frozen, tuned, [1], {"icbm152": 3, "itk": 2})
    lines = probe_markdown(frozen, tuned, [1], {"icbm152": 3, "itk": 2}, context=True)
    assert "| scratch | 0.500 ± 0.000 | 0.800 ± 0.100 | 0.400 ± 0.000 | 0.700 ± 0.100 |" in lines
    assert any(line.startswith("### Probe") and "`itk` (2 subjects)" in line for line in lines)


def test_weight_change_measures_from_the_initial_weights(tmp_path):
    import torch

    from gmim.engine.device import seed_everything
    from gmim.pretraining.method import build_model

    preset, _ = Preset.load("smoke")
    benchmark = Benchmark(tmp_path, preset, {}, "cpu")
    config = benchmark.pretrain_config("gmim")
    config.model.in_channels = 1
    seed_everything(config.train.seed)
    weights = build_model(config).encoder.state_dict()
    torch.save(weights, tmp_path / "same.pt")
    assert weight_change(config, tmp_path / "same.pt") == pytest.approx(0.0, abs=1e-7)
    torch.save({k: v * 1.5 if v.is_floating_point() else v for k, v in weights.items()}, tmp_path / "scaled.pt")
    assert weight_change(config, tmp_path / "scaled.pt") == pytest.approx(0.5, rel=1e-5)
    # swin-ssl's run builds the same encoder first thing, so at the same seed it starts where GMIM does
    swin = benchmark.pretrain_config("swin-ssl")
    assert type(initial_encoder(swin)) is type(initial_encoder(config))
    assert weight_change(swin, tmp_path / "same.pt") == pytest.approx(0.0, abs=1e-7)


def test_docs_section_replaced_in_place(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("dice_vs_labels.png", "examples.png"):
        (out / name).write_bytes(b"png")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text("# Results\n\n## Performance\n\nkept\n")
    write_docs(docs, out, "first\n")
    write_docs(docs, out, "second\n")
    text = (docs / "results.md").read_text()
    assert "kept" in text and "second" in text and "first" not in text and text.count(DOCS_BEGIN) == 1
    assert (docs / "examples.png").is_file()


def test_deep_csf_lies_deep_inside_the_real_brain(itk_paths):
    from scipy import ndimage

    from gmim.data.checks import voxel_spacing
    from gmim.sample_data import DEEP_CSF_DEPTH_MM, TISSUE_VALUES, brain_tissue

    _, tissue, affine = brain_tissue("itk")
    zooms = np.asarray(voxel_spacing(affine))
    depth = ndimage.distance_transform_edt(tissue != TISSUE_VALUES["outside"], sampling=zooms)
    deep = tissue == TISSUE_VALUES["deep_csf"]
    assert 10 < deep.sum() * np.prod(zooms) / 1000 < 100  # ml: the ventricles' order of size
    assert depth[deep].min() > DEEP_CSF_DEPTH_MM
    assert (tissue == TISSUE_VALUES["other"]).any()  # the CSF of the sulci stays other tissue


def test_gpu_window_plans_nine_minutes_at_most_on_an_h200(capsys):
    preset, _ = Preset.load("gpu-window")
    assert (
        preset.arms == ["scratch", "gmim", "variance", "random", "prototype", "swin-ssl"]
        and preset.labels == [1, 2]
        and len(preset.seeds) >= 2
    )
    assert preset.context_class and preset.pretrain["model"] == preset.finetune["model"] == {"feature_size": 48, "roi": [96, 96, 96]}
    assert main(["--preset", "gpu-window", "--device", "cpu", "--plan"]) == 0
    printed = capsys.readouterr().out
    assert "figures for h200 (this is a cpu" in printed
    minutes = float(re.search(r"estimate: ([0-9.]+) min of a budget of 9.0 min", printed).group(1))
    assert 0 < minutes <= 9


def test_budget_and_figures_are_checked(tmp_path, capsys):
    assert main(["--preset", "smoke", "--budget-minutes", "0", "--plan"]) == 2
    assert "--budget-minutes 0.0: must be a positive number of minutes" in capsys.readouterr().err
    good = (PRESETS / "smoke.yaml").read_text()
    (tmp_path / "figures.yaml").write_text(good.replace("predict: 2.0,", ""))
    with pytest.raises(InputError, match="seconds.cpu misses \\['predict'\\]"):
        Preset.load(str(tmp_path / "figures.yaml"))
    (tmp_path / "steps.yaml").write_text(good.replace("steps: 2, epochs: null", "epochs: null"))
    with pytest.raises(InputError, match="finetune.train.steps must be a positive integer"):
        Preset.load(str(tmp_path / "steps.yaml"))


def test_plan_gives_up_later_rounds_then_steps():
    plan = Plan(
        subjects=6,
        test_subjects=2,
        probe_subjects=4,
        arms=["scratch", "gmim", "random"],
        pretrained=["gmim", "random"],
        labels=[1],
        probe_labels=[],
        seeds=[0, 1, 2],
        pretrain_steps=3,
        finetune_steps=2,
    )
    done = ["subjects", "pre-training gmim"]
    assert plan.give_up(done) and plan.seeds == [0, 1]
    assert plan.give_up(done) and plan.seeds == [0]  # the first round stays
    assert plan.give_up(done) and (plan.finetune_steps, plan.pretrain_steps) == (1, 3)
    assert plan.give_up(done) and plan.pretrain_steps == 2  # random is still to pre-train
    assert plan.give_up(done) and plan.pretrain_steps == 1
    assert not plan.give_up(done)
    assert list(plan.phases()) == ["subjects", "pre-training gmim", "pre-training random", "linear probe", "fine-tuning seed 0", "report"]
    plan.seeds = [0, 1]
    assert not plan.give_up(["fine-tuning seed 0", "fine-tuning seed 1", "pre-training gmim", "pre-training random"])  # what ran stays


@pytest.mark.slow
def test_linear_probe_reads_the_upsampled_hidden_states(mni_t1):
    import torch
    import torch.nn.functional as F

    from benchmarks.linear_probe import LinearProbe, all_voxels, hidden_states, sample_features
    from gmim.pretraining.encoder import MaskedSwinEncoder

    torch.manual_seed(0)
    encoder = MaskedSwinEncoder(1, 12).eval()
    t1 = torch.from_numpy(mni_t1[::3, ::3, ::3][:64, 8:56, 20:50].copy())  # 3 mm, 64×48×30
    image = ((t1 - t1[t1 > 0].mean()) / t1[t1 > 0].std() * (t1 > 0))[None, None]
    states = hidden_states(encoder, image, (64, 64, 32), 0.25)
    grid = [2 * n for n in states[0].shape[2:]]
    assert grid == [64, 64, 32]  # padded to the crop
    assert [s.shape[1] for s in states] == [12, 24, 48, 96, 192]
    assert all([n * 2 ** (i + 1) for n in s.shape[2:]] == grid for i, s in enumerate(states))
    voxels = all_voxels(image.shape[2:])[::3]
    features = sample_features(states, grid, voxels)
    assert features.shape == (64 * 48 * 30 // 3, 372)
    start = 0
    for state in states:  # the same as upsampling each hidden state to the voxel grid
        upsampled = F.interpolate(state, size=grid, mode="trilinear")[0][:, voxels[:, 0], voxels[:, 1], voxels[:, 2]].T
        assert torch.allclose(features[:, start : start + state.shape[1]], upsampled, atol=1e-5)
        start += state.shape[1]
    targets = (t1 > t1[t1 > 0].median()).long().flatten()[::3]  # the brighter half of the brain
    fitted = torch.randperm(len(voxels), generator=torch.Generator().manual_seed(0))[:5000]
    probe = LinearProbe.fit(features[fitted], targets[fitted], 2, l2=1e-3)
    weight, bias = probe.linear.weight.clone().requires_grad_(), probe.linear.bias.clone().requires_grad_()
    x = (features[fitted] - probe.mean) / probe.std
    loss = F.cross_entropy(x @ weight.T + bias, targets[fitted]) + 1e-3 * weight.pow(2).sum()
    assert all(g.abs().max() < 1e-4 for g in torch.autograd.grad(loss, [weight, bias]))  # fitted to convergence
    assert (probe.predict(features) == targets).float().mean() > 0.9  # and it holds on the voxels it did not see


@pytest.mark.slow
def test_a_phase_over_its_share_shortens_what_remains(smoke_subjects, tmp_path, capsys):
    """A tiny run whose pre-training is estimated at a fraction of a second, with a budget 1 s over
    the whole estimate: the pre-training runs over its share, and fine-tuning rounds are dropped."""
    preset = yaml.safe_load((PRESETS / "smoke.yaml").read_text())
    preset.update(arms=["gmim", "swin-ssl"], labels=[1], seeds=[0, 1, 2], probe_labels=[])
    preset["pretrain"]["train"]["steps"] = preset["finetune"]["train"]["steps"] = 1
    # the tests' small runs: 4 mm (probe, fine-tuning and prediction on fewer voxels), 64×32×32 views
    preset["pretrain"]["preprocessing"]["spacing"] = preset["finetune"]["preprocessing"]["spacing"] = [4.0, 4.0, 4.0]
    preset["pretrain"]["model"]["roi"], preset["pretrain"]["data"]["margin"] = [64, 32, 32], [8, 8, 8]
    preset["seconds"] = {"cpu": {**dict.fromkeys(PARTS, 1.0), "startup": 0.0, "pretrain_start": 0.01, "pretrain_step": 0.01}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset))
    tiny, _ = Preset.load(str(path))
    estimate = sum(Window(tiny.seconds["cpu"], None).remaining(plan_for(tiny, tiny.arms)).values())
    out = tmp_path / "out"
    out.mkdir()
    (out / "data").symlink_to(smoke_subjects[0], target_is_directory=True)
    assert main(["--preset", str(path), "--out", str(out), "--device", "cpu", "--budget-minutes", str((estimate + 1) / 60)]) == 0
    printed = capsys.readouterr().out
    assert "pre-training gmim ran over its share" in printed
    results = json.loads((out / "results.json").read_text())
    assert "fine-tuning seeds 2 dropped" in printed or "fine-tuning seeds 1, 2 dropped" in printed
    assert sorted({run["seed"] for run in results["runs"]}) == results["plan"]["seeds"] != [0, 1, 2]
    phases = {phase["name"]: phase for phase in results["window"]}
    assert phases["pre-training gmim"]["seconds"] > phases["pre-training gmim"]["share"]
    assert [name for name in phases if name.startswith("fine-tuning")] == [f"fine-tuning seed {s}" for s in results["plan"]["seeds"]]
    linear = results["linear_probe"]
    assert set(linear) == {"gmim", "swin-ssl"}
    for arm in linear.values():
        for test_set in TEST_SETS:
            scores = arm["test"][test_set]
            assert scores["names"] == ["grey_matter", "white_matter"] and all(0 <= d <= 1 for d in scores["class_dice"].values())
    text = (out / "results.md").read_text()
    assert "| gmim | " in text.split("### Linear probe of frozen encoder features")[1]
    for arm in ("gmim", "swin-ssl"):  # the initial encoder, then the final one
        assert [h["step"] for h in results["health"][arm]] == [0, 1]
        assert f"| {arm} | 100% | " in text.split("### Representation health over pre-training")[1]
    swin = yaml.safe_load((out / "pretrain" / "swin-ssl" / "config.yaml").read_text())
    roi, batch = preset["pretrain"]["model"]["roi"], preset["pretrain"]["train"]["batch_size"]  # GMIM's: [64, 32, 32] here
    assert swin["method"] == "swin-ssl" and swin["model"]["roi"] == roi and swin["data"]["crops_per_volume"] == 1
    assert json.loads((out / "pretrain" / "swin-ssl" / "done.json").read_text())["voxels_per_step"] == 2 * batch * math.prod(roi)
