"""Start-up of the command line: seconds until ``gmim --help`` and each command's ``--help`` answer.

Argument parsing imports no torch or MONAI; a command loads them only when it runs. Each figure is
the median of ``--repeats`` fresh processes.

    python benchmarks/cli_startup.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = ([], ["pretrain"], ["finetune"], ["predict"], ["evaluate"], ["demo"])


def seconds(arguments: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gmim.cli", *arguments, "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for arguments in COMMANDS:
        print(f"  gmim {' '.join([*arguments, '--help']):20s} {seconds(arguments, args.repeats):6.2f} s", flush=True)


if __name__ == "__main__":
    main()
