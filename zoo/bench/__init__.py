"""`zoo bench`: speed, cost, memory and (with weights) accuracy of registered models under identical conditions.

Each model x setting (dtype, channels_last, compile) x batch size is one *unit*, measured in a fresh process on
CPU (so its peak RSS is its own) and in this process on CUDA (peak memory from the allocator, reset per unit).
Rows are appended to a CSV whose columns are documented in docs/results.md.
"""

from zoo.bench.ceiling import compute_ceiling
from zoo.bench.config import BenchConfig, Setting, Unit
from zoo.bench.measure import count_flops, measure_unit
from zoo.bench.report import COLUMNS, append_csv
from zoo.bench.run import run_bench

__all__ = ["COLUMNS", "BenchConfig", "Setting", "Unit", "append_csv", "compute_ceiling", "count_flops",
           "measure_unit", "run_bench"]
