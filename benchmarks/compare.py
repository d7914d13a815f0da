"""The comparison suite of issue 8 in one command: the three protocols, then results/COMPARISON.md.

The usual invocations are `benchmarks.report.COMMANDS` (shown by --help and in COMPARISON.md). Re-running continues
where a run stopped: finished rows are skipped, interrupted trainings resume.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from benchmarks import fair, fair_report
from benchmarks.budgets import BUDGETS, FAIR_BUDGETS, get_budget
from benchmarks.protocols import PROTOCOLS, STREET_DIR, Setup
from benchmarks.report import COMMANDS, write_report
from zoo.core.errors import ZooError
from zoo.core.precision import AMP_CHOICES, resolve_amp
from zoo.data.sources import CELLS_DIR
from zoo.data.synthetic import ensure_synthetic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0],
                                     epilog=COMMANDS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="cpu", choices=sorted(BUDGETS) + sorted(FAIR_BUDGETS),
                        help="how much training each run gets (benchmarks/budgets.py): the commands below say what "
                             "each budget runs; fair-v1 is docs/protocol.md's")
    parser.add_argument("--stage", choices=fair.STAGES,
                        help="fair budgets: the search (validation trials) or the final runs (tested once)")
    parser.add_argument("--draws", type=int, help="fair budgets' final stage: draws (default: the budget's, at least)")
    parser.add_argument("--extras", action="store_true", help="fair budgets: also the labelled extra rows")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="fair budgets: write rows from uncommitted code, marked allow_dirty (left out of reports)")
    parser.add_argument("--docs", default="docs", help="fair budgets: folder of comparison.md and its figure")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                        help="mixed precision (auto: bf16, or off on a CPU without bf16 instructions)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="train and validate in channels_last memory format (default: on)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for torch here and in the harness's worker processes (default: torch's)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated subset, run in order")
    parser.add_argument("--models", help="comma-separated subset of the budget's models")
    parser.add_argument("--results", default="results", help="folder of the CSVs and COMPARISON.md")
    parser.add_argument("--runs", default="runs/compare", help="folder of the run folders and cells draws")
    parser.add_argument("--cells", default=str(CELLS_DIR), help="VGG cells folder")
    parser.add_argument("--street", default=str(STREET_DIR), help="street-crowd set (ShanghaiTech layout)")
    parser.add_argument("--report-only", action="store_true", help="only regenerate COMPARISON.md from the CSVs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        if args.threads:
            # On a CPU shared with other jobs, fewer threads than cores avoids OpenMP threads waiting on each
            # other; the environment variable carries the choice into the harness's fresh processes.
            torch.set_num_threads(args.threads)
            os.environ["OMP_NUM_THREADS"] = str(args.threads)
        if args.budget in FAIR_BUDGETS:
            run_fair(args, console)
            return 0
        if not args.report_only:
            budget = get_budget(args.budget)
            if args.models:
                budget = replace(budget, models=chosen_models(args.models, budget.name, budget.models))
            protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
            unknown = sorted(set(protocols) - set(PROTOCOLS))
            if unknown:
                raise ZooError(f"--protocols {', '.join(unknown)}: unknown; choose from {', '.join(PROTOCOLS)}")
            setup = Setup(results=Path(args.results), runs=Path(args.runs), device=args.device,
                          amp=resolve_amp(args.amp, args.device),
                          channels_last=args.channels_last, cells=Path(args.cells), street=Path(args.street),
                          console=console)
            for protocol in (p for p in PROTOCOLS if p in protocols and p in budget.protocols):
                PROTOCOLS[protocol](budget, setup)
        datasets = {"cells": args.cells, "street": args.street}
        if (Path(args.results) / "synthetic.csv").is_file():  # regenerable: made (~10 s) to quote its baseline
            datasets["synthetic"] = str(ensure_synthetic())
        report = write_report(Path(args.results),
                              datasets={name: path for name, path in datasets.items() if Path(path).is_dir()})
        console.print(f"report: {escape(str(report))}")
    except ZooError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    return 0


def chosen_models(text: str, budget: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """`--models`' comma-separated names, each one of the budget's."""
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    strays = sorted(set(chosen) - set(allowed))
    if strays:
        raise ZooError(f"--models {', '.join(strays)}: not in the {budget} budget ({', '.join(allowed)})")
    return chosen


def run_fair(args: argparse.Namespace, console: Console) -> None:
    """A fair budget's stage (docs/protocol.md), then its page docs/comparison.md from the CSVs."""
    budget = FAIR_BUDGETS[args.budget]
    if not args.report_only:
        if args.stage is None:
            raise ZooError(f"--budget {budget.name} runs in stages: pass --stage search or --stage final")
        models = budget.models if args.extras else budget.headline
        if args.models:
            models = chosen_models(args.models, budget.name, budget.models)
        draws = budget.draws if args.draws is None else args.draws
        if draws < budget.draws:
            raise ZooError(f"--draws {draws}: {budget.name} runs at least {budget.draws} draws")
        setup = fair.FairSetup(cells=Path(args.cells), results=Path(args.results), runs=Path(args.runs),
                               device=args.device, amp=resolve_amp(args.amp, args.device),
                               channels_last=args.channels_last, allow_dirty=args.allow_dirty, console=console)
        fair.run_stage(budget, setup, args.stage, models, draws)
    page = fair_report.write(Path(args.results), Path(args.docs), budget)
    console.print(f"report: {escape(str(page))}")


if __name__ == "__main__":
    sys.exit(main())
