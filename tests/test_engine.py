"""Engine utilities: schedule, devices, exact resume, and a 2-process torchrun (gloo) job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from monai.transforms import Compose, RandFlipd, RandSpatialCropd

from conftest import crop
from gmim.engine.checkpoint import restore_training_state, save_checkpoint, training_state
from gmim.engine.device import resolve_device, seed_everything
from gmim.engine.distributed import DistributedContext, init_distributed, wrap_ddp
from gmim.engine.loop import validation_interval
from gmim.engine.optim import adamw, warmup_cosine
from gmim.engine.precision import MixedPrecision
from gmim.engine.sampling import SeededDataset, StepSampler, run_loader
from gmim.errors import InputError
from gmim.weights_only import load_checkpoint


def test_warmup_then_cosine():
    optimizer = adamw(
        [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1}], 1.0, 0.0
    )
    schedule = warmup_cosine(optimizer, warmup_steps=4, total_steps=14)
    rates = []
    for _ in range(14):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    assert rates[0][0] == pytest.approx(0.2) and rates[3][0] == pytest.approx(0.8) and rates[4][0] == pytest.approx(1.0)
    assert rates[9][0] == pytest.approx(0.5) and rates[13][0] < 0.03
    assert all(b == pytest.approx(a / 10) for a, b in rates)


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(InputError, match="--device gpu"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda:1")
    assert not MixedPrecision(torch.device("cpu")).enabled


def _run(volumes, out: Path, steps: int, stop: int | None = None, resume: bool = False) -> torch.Tensor:
    """A tiny denoising loop over real crops with random crops and flips, checkpointing at ``stop``;
    3 volumes in batches of 2, so that batches straddle epochs."""
    seed_everything(0)
    context = DistributedContext(torch.device("cpu"))
    model = wrap_ddp(torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Dropout(0.3), torch.nn.Conv3d(4, 1, 1)), context)
    optimizer = adamw(model.parameters(), 1e-2, 1e-5)
    scheduler = warmup_cosine(optimizer, 2, steps)
    precision = MixedPrecision(context.device)
    dataset = SeededDataset(
        [{"image": v[None]} for v in volumes],
        Compose([RandSpatialCropd("image", (12, 12, 12), random_size=False), RandFlipd("image", prob=0.5, spatial_axis=0)]),
        seed=0,
    )
    step = restore_training_state(load_checkpoint(out), model, optimizer, scheduler, precision, context) if resume else 0
    for batch in run_loader(dataset, StepSampler(len(dataset), 2, step, stop or steps), workers=0, pin_memory=False):
        image = batch["image"]
        noisy = image + 0.1 * torch.randn_like(image)
        with precision.autocast():
            loss = torch.nn.functional.mse_loss(model(noisy), image)
        precision.step(loss, optimizer, model.parameters(), clip=1.0)
        scheduler.step()
        step += 1
    if stop is not None:
        save_checkpoint(out, training_state(model, optimizer, scheduler, precision, step, context))
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_resume_is_exact(tmp_path, itk_t1):
    volumes = [crop(itk_t1, (30 + 8 * i, 40, 20), (16, 16, 16)) / 255 for i in range(3)]
    straight = _run(volumes, tmp_path / "a.pt", steps=6)
    _run(volumes, tmp_path / "b.pt", steps=6, stop=3)
    resumed = _run(volumes, tmp_path / "b.pt", steps=6, resume=True)
    assert torch.equal(straight, resumed)
    different = _run(volumes[::-1], tmp_path / "c.pt", steps=6)
    assert not torch.allclose(straight, different)


def test_step_sampler_draws_global_batches_whatever_the_processes_and_the_start():
    """5 volumes, global batch 4: batches straddle epochs, each epoch is a permutation, and 1 or 2
    processes, started at step 0 or resumed at step 3, draw the same samples for each step."""
    one = list(StepSampler(5, 4, 0, 10, seed=7))
    assert len(one) == 40
    for epoch in range(8):
        assert sorted(i for e, i in one if e == epoch) == list(range(5))
    batches = [one[4 * s : 4 * s + 4] for s in range(10)]
    two = [list(StepSampler(5, 4, 0, 10, rank, 2, seed=7)) for rank in (0, 1)]
    assert [two[0][2 * s : 2 * s + 2] + two[1][2 * s : 2 * s + 2] for s in range(10)] == batches
    assert list(StepSampler(5, 4, 3, 10, seed=7)) == one[12:]
    assert list(StepSampler(5, 4, 0, 10, seed=8)) != one
    with pytest.raises(ValueError):
        StepSampler(5, 3, 0, 10, 0, 2)


def test_validation_interval():
    assert validation_interval(7, cost=1000.0, total=100) == 7  # as set
    assert validation_interval(0, cost=1.0, total=100) == 0  # only at the end
    assert validation_interval(None, cost=0.5, total=4000) == 200  # cheap: twenty in a run
    assert validation_interval(None, cost=100.0, total=4000) == 1900  # costly: at most 5 % of the compute
    assert validation_interval(None, cost=0.01, total=3) == 1


def test_bad_checkpoints(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    context = DistributedContext(torch.device("cpu"))
    model = torch.nn.Linear(1, 1)
    optimizer = adamw(model.parameters(), 1e-3, 0)
    with pytest.raises(InputError, match="not a training checkpoint"):
        restore_training_state(
            load_checkpoint(tmp_path / "partial.pt"),
            model,
            optimizer,
            warmup_cosine(optimizer, 1, 2),
            MixedPrecision(context.device),
            context,
        )


WORKER = textwrap.dedent(
    """
    import json, sys, torch
    from gmim.engine.distributed import init_distributed, wrap_ddp, all_reduce_mean, gather_objects
    from gmim.engine.sampling import StepSampler
    from gmim.engine.precision import MixedPrecision
    from gmim.engine.optim import adamw

    context = init_distributed("cpu")
    torch.manual_seed(context.rank)  # different initial weights: DDP must broadcast rank 0's
    shard = [index for _, index in StepSampler(10, 10, 1, 2, context.rank, context.world_size, seed=3)]
    model = wrap_ddp(torch.nn.Linear(3, 1), context)
    optimizer = adamw(model.parameters(), 0.1, 0.0)
    x = torch.full((2, 3), float(context.rank + 1))
    MixedPrecision(context.device).step(model(x).pow(2).mean(), optimizer, model.parameters(), clip=None)
    weights = torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()
    mean = all_reduce_mean(torch.tensor(float(context.rank)), context).item()
    gathered = gather_objects({"rank": context.rank, "shard": shard, "weights": weights}, context)
    if context.is_main:
        json.dump({"world": context.world_size, "mean": mean, "gathered": gathered}, open(sys.argv[1], "w"))
    context.shutdown()
    """
)


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    first, second = out["gathered"]
    assert out["world"] == 2 and out["mean"] == 0.5
    assert sorted(first["shard"] + second["shard"]) == list(range(10)) and not set(first["shard"]) & set(second["shard"])
    assert first["weights"] == second["weights"]  # same start (broadcast) and averaged gradients
    assert init_distributed("cpu").world_size == 1  # without torchrun: a single process
