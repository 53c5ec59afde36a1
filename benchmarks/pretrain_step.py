"""Pre-training step: GMIM's step split into its parts, side by side with a plain Swin UNETR step.

On views of the ICBM152 T1 (PyPI package nilearn), times per step: data (two views and the target
augmentation per volume), masking (plan and masks a0–a3), target forward (no gradient), online
forward + backward with the losses, and the whole GMIM step with the optimiser; then a plain
``monai.networks.nets.SwinUNETR`` forward + backward + optimiser step on the same crop and batch.
Prints the overhead ratio GMIM / plain (target: ≤ 1.6) and the peak memory of each, each measured in
a process of its own. ``--flops`` prints instead the floating-point operations of each step, counted
by ``torch.utils.flop_counter`` on the meta device (no memory, no time: any crop and feature size on
any machine), so that a GPU's step time can be judged before one is at hand.

    python benchmarks/pretrain_step.py                                   # CPU: 64³, F 24, batch 2
    python benchmarks/pretrain_step.py --device cuda --roi 128 --feature-size 48 --bf16
    python benchmarks/pretrain_step.py --flops --roi 128 --feature-size 48       # the prototype's step
    python benchmarks/pretrain_step.py --no-sdpa                         # MONAI's window attention by hand
    python benchmarks/pretrain_step.py --compile                         # torch.compile both steps

With ``--compile`` each step is compiled as ``train.compile`` does (GMIM with a mask at every point,
so that one graph serves every step); the parts of the GMIM step are then not timed, and the first
steps take minutes (not counted). AdamW is PyTorch's fused one on CUDA unless ``--no-fused-adamw``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        function()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _attention(network: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
    """``network`` with fused (SDPA) window attention unless ``--no-sdpa`` (MONAI's own)."""
    from gmim.swin.attention import fuse_window_attention

    return fuse_window_attention(network) if args.sdpa else network


def _views(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, list, object]:
    from gmim.config import load_config
    from gmim.pretraining.config import PretrainConfig
    from gmim.pretraining.data import view_transforms
    from gmim.sample_data import mni152

    config = load_config(PretrainConfig, None, [f"model.roi=[{args.roi}, {args.roi}, {args.roi}]"])
    t1 = np.asarray(mni152()["t1"].get_fdata(), dtype=np.float32)
    t1 = (t1 - t1[t1 > 0].mean()) / t1[t1 > 0].std() * (t1 > 0)
    volume = {"image": torch.from_numpy(t1)[None], "index": 0}
    transform = view_transforms(config)

    def draw() -> list[dict]:
        return [transform(dict(volume)) for _ in range(args.batch_size)]

    items = draw()
    x = torch.stack([item["x"] for item in items])
    y = torch.stack([item["y"] for item in items])
    return x, y, draw, config


def _measure(args: argparse.Namespace, variant: str) -> dict[str, float]:
    from monai.networks.nets import SwinUNETR

    from gmim.engine.optim import adamw
    from gmim.pretraining.losses import GMIMLoss
    from gmim.pretraining.masking import GridMaskPlanner, mask_every_point, voxel_mask
    from gmim.pretraining.model import GMIM, GMIMOutput

    torch.manual_seed(0)
    device = torch.device(args.device)
    x, y, draw, _ = _views(args)
    x, y = x.to(device), y.to(device)
    dtype = torch.bfloat16 if args.bf16 else None

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def optimizer_of(module: torch.nn.Module) -> torch.optim.Optimizer:
        return adamw(module.parameters(), 1e-4, 1e-5, fused=args.fused_adamw and device.type == "cuda")

    def time_step(step: Callable[[torch.nn.Module], None], module: torch.nn.Module) -> None:
        """The step of ``module`` into results["step"]; with --compile the eager step first, in
        results["eager step"], for a ratio measured side by side."""
        if args.compile:
            results["eager step"] = _timed(lambda: step(module), device, args.repeats)
            module = torch.compile(module)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        results["step"] = _timed(lambda: step(module), device, args.repeats)

    results: dict[str, float] = {}
    if variant == "plain":
        network = _attention(SwinUNETR(in_channels=1, out_channels=1, feature_size=args.feature_size), args).to(device)
        optimizer = optimizer_of(network)

        def plain_step(module: torch.nn.Module) -> None:
            with autocast():
                prediction = module(x)
            loss = (prediction.float() - x).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        time_step(plain_step, network)
    else:
        model = _attention(GMIM(1, args.feature_size), args).to(device)
        optimizer = optimizer_of(model)
        planner, loss_function = GridMaskPlanner(), GMIMLoss()
        generator = torch.Generator(device=device).manual_seed(0)
        coins = torch.Generator().manual_seed(0)

        def masks() -> list:
            masks = planner.plan(x).hierarchical_masks(x.shape[2:], generator=generator, coin_generator=coins)
            return mask_every_point(masks, x.shape[2:]) if args.compile else masks  # compiled: one graph

        fixed = masks()

        def target_forward() -> None:
            with torch.no_grad(), autocast():
                model.encoder(y)

        def online() -> None:
            with autocast():
                states = model.encoder(x, masks=fixed)[-1]
                tokens = model.online_head(states.flatten(2).transpose(1, 2))
                output = GMIMOutput(online=tokens, target=tokens.detach(), reconstruction=model.decoder(states))
            loss = loss_function(output, x, voxel_mask(fixed[0]))["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()

        def gmim_step(module: torch.nn.Module) -> None:
            step_masks = masks()
            with autocast():
                output = module(x, y, step_masks)
            loss = loss_function(output, x, voxel_mask(step_masks[0]))["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        results["data"] = _timed(draw, torch.device("cpu"), args.repeats)
        results["masking"] = _timed(masks, device, args.repeats)
        if not args.compile:
            results["target forward"] = _timed(target_forward, device, args.repeats)
            results["online forward+backward+losses"] = _timed(online, device, args.repeats)
        time_step(gmim_step, model)
    if device.type == "cuda":
        results["peak memory (GiB)"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        results["peak memory (GiB)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return results


def _flops(args: argparse.Namespace) -> dict[str, int]:
    """Forward + backward FLOPs of a GMIM step and of a plain Swin UNETR step, counted on the meta
    device; the masks come from real views, since their ratios depend on the image."""
    from monai.networks.nets import SwinUNETR
    from torch.utils.flop_counter import FlopCounterMode

    from gmim.pretraining.losses import GMIMLoss
    from gmim.pretraining.masking import GridMaskPlanner, voxel_mask
    from gmim.pretraining.model import GMIM

    x, y, _, _ = _views(args)
    masks = GridMaskPlanner().plan(x).hierarchical_masks(x.shape[2:], generator=torch.Generator().manual_seed(0))
    meta = torch.device("meta")
    x, y = x.to(meta), y.to(meta)
    masks = [None if m is None else m.to(meta) for m in masks]
    model = _attention(GMIM(1, args.feature_size), args).to(meta)
    plain = _attention(SwinUNETR(in_channels=1, out_channels=1, feature_size=args.feature_size), args).to(meta)
    counts = {}
    with FlopCounterMode(display=False) as counter:
        GMIMLoss()(model(x, y, masks), x, voxel_mask(masks[0]))["loss"].backward()
    counts["gmim"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        (plain(x) - x).pow(2).mean().backward()
    counts["plain"] = counter.get_total_flops()
    return counts


def _worker(args: argparse.Namespace, variant: str, queue: multiprocessing.Queue) -> None:
    queue.put(_measure(args, variant))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--feature-size", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per measurement (median)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--flops", action="store_true", help="count each step's FLOPs instead of timing it")
    parser.add_argument(
        "--sdpa",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="window attention through scaled_dot_product_attention (default), or MONAI's by hand",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile each step's module (as train.compile)")
    parser.add_argument(
        "--fused-adamw",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="PyTorch's fused AdamW on CUDA (default, as the training loop), or the foreach one",
    )
    args = parser.parse_args()
    if args.flops:
        counts = _flops(args)
        print(f"roi {args.roi}³, feature size {args.feature_size}, batch {args.batch_size}: forward + backward FLOPs per step")
        for name, label in (("gmim", "GMIM step"), ("plain", "plain Swin UNETR step")):
            print(f"  {label:22s} {counts[name] / 1e9:10.1f} GFLOP")
        print(f"  GMIM / plain: {counts['gmim'] / counts['plain']:.2f}×")
        return
    context = multiprocessing.get_context("spawn")
    print(
        f"roi {args.roi}³, feature size {args.feature_size}, batch {args.batch_size}, {args.device}"
        f"{', bf16' if args.bf16 else ''}, {'SDPA' if args.sdpa else 'MONAI'} attention"
        f"{', compiled' if args.compile else ''}{', fused AdamW' if args.fused_adamw and args.device.startswith('cuda') else ''}; "
        f"torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    results = {}
    for variant in ("gmim", "plain"):
        queue = context.Queue()
        process = context.Process(target=_worker, args=(args, variant, queue))
        process.start()
        results[variant] = queue.get()
        process.join()
    for name, seconds in results["gmim"].items():
        if name not in ("step", "eager step", "peak memory (GiB)"):
            print(f"  GMIM {name:34s} {seconds * 1e3:10.1f} ms")
    gmim, plain = results["gmim"]["step"], results["plain"]["step"]
    print(
        f"  GMIM step (all of it, optimiser too)   {gmim * 1e3:10.1f} ms   {args.batch_size / gmim:6.2f} volumes/s   "
        f"peak {results['gmim']['peak memory (GiB)']:.2f} GiB"
    )
    print(
        f"  plain Swin UNETR step                  {plain * 1e3:10.1f} ms   {args.batch_size / plain:6.2f} volumes/s   "
        f"peak {results['plain']['peak memory (GiB)']:.2f} GiB"
    )
    print(f"  overhead GMIM / plain: {gmim / plain:.2f}×   masking: {results['gmim']['masking'] / gmim:.1%} of the GMIM step")
    if args.compile:
        for variant, label in (("gmim", "GMIM"), ("plain", "plain")):
            eager = results[variant]["eager step"]
            print(
                f"  {label} step eager {eager * 1e3:.1f} ms, compiled {results[variant]['step'] * 1e3:.1f} ms: "
                f"{eager / results[variant]['step']:.2f}× faster compiled"
            )


if __name__ == "__main__":
    main()
