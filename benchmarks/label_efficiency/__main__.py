"""The command line: ``python -m benchmarks.label_efficiency --help``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from gmim.atomic import atomic_path
from gmim.errors import InputError

from . import __doc__ as OVERVIEW
from .data import make_data
from .plan import device_kind, plan_for, window_for
from .plots import plot_dice, plot_examples
from .presets import ARMS, PRESETS, TEST_SETS, Preset, check_arms
from .report import markdown, write_docs
from .results import aggregate, health_history, timings, write_json
from .runs import Benchmark

#: How the benchmark is run, from the repository's root; results record it with its options.
COMMAND = ("python", "-m", "benchmarks.label_efficiency")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=" ".join(COMMAND), description=OVERVIEW.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
    parser.add_argument("--preset", default="cpu", help=f"{names} (benchmarks/presets/) or a YAML file (default cpu)")
    parser.add_argument("--out", type=Path, default=Path("runs/label_efficiency"), help="run folder (default runs/label_efficiency)")
    parser.add_argument("--arms", nargs="+", metavar="ARM", help=f"a subset of the preset's arms ({', '.join(ARMS)})")
    parser.add_argument(
        "--seeds", nargs="+", type=int, metavar="SEED", help="a subset of the preset's fine-tuning seeds (default all of them)"
    )
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


def run(args: argparse.Namespace, command: str) -> int:
    preset, preset_path = Preset.load(args.preset)
    arms = check_arms(args.arms, {a: None for a in preset.arms}, "--arms") if args.arms else preset.arms
    if args.seeds:
        unknown = [s for s in args.seeds if s not in preset.seeds]
        if unknown:
            raise InputError(f"--seeds: {unknown[0]} is not a seed of the preset ({', '.join(map(str, preset.seeds)) or 'none'})")
        preset.seeds = list(dict.fromkeys(args.seeds))
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
    command = shlex.join([*COMMAND, *argv])
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
