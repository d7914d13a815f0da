"""What a benchmark run measures: its configuration, the settings it compares and the units it runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from zoo.core.device import resolve_device
from zoo.core.errors import ZooError
from zoo.core.precision import DTYPES
from zoo.deploy.export import EXPORTED_DTYPES, RUNTIMES


@dataclass(frozen=True)
class Setting:
    """How a model runs: numeric type (bf16 and fp16 through autocast), memory layout, torch.compile, and the
    runtime of the forward pass (torch, or onnxruntime or OpenVINO on the exported NCHW graph)."""

    dtype: str
    channels_last: bool = False
    compile: bool = False
    runtime: str = "torch"

    @property
    def label(self) -> str:
        return " ".join([self.dtype] + ["channels_last"] * self.channels_last + ["compile"] * self.compile
                        + [self.runtime] * (self.runtime != "torch"))


@dataclass
class BenchConfig:
    models: list[str]
    resolution: tuple[int, int] = (768, 1024)  # (height, width) of the timed input
    batch_sizes: tuple[int, ...] = (1,)
    dtypes: tuple[str, ...] = ("bf16",)
    channels_last: bool = False
    compile: bool = False
    runtimes: tuple[str, ...] = ("torch",)  # the others run EXPORTED_DTYPES, without channels_last or compile
    calibration: str = "synthetic"  # int8: the dataset whose training images calibrate the activation ranges
    fp32_reference: bool = False  # also run plain fp32 first, the reference of count_rel_diff and speedup
    device: str = "cpu"
    iters: int = 3  # timed forward passes per batch size
    warmup: int = 1  # untimed passes before them (the first one also counts the FLOPs)
    train_iters: int = 1  # timed training steps, after `warmup` untimed ones
    train_step: bool = True
    weights: dict[str, str] = field(default_factory=dict)  # model -> checkpoint; enables accuracy
    data: str = "synthetic"  # accuracy is measured on the test split of this dataset
    out: Path | None = None  # the CSV rows are appended to (none by default; `zoo bench` names a user's folder)
    isolate: bool | None = None  # a fresh process per unit; None: on CPU only (for its peak RSS)

    def settings(self) -> list[Setting]:
        chosen = [Setting(d, self.channels_last, self.compile) for d in self.dtypes
                  if "torch" in self.runtimes and d != "int8"]
        for runtime in self.exported_runtimes():
            chosen += [Setting(d, runtime=runtime) for d in self.dtypes if d in EXPORTED_DTYPES[runtime]]
        reference = Setting("fp32")
        if self.fp32_reference and reference not in chosen:
            chosen.insert(0, reference)
        return chosen

    def validate(self) -> None:
        resolve_device(self.device)
        unknown = [d for d in self.dtypes if d not in DTYPES]
        if unknown:
            raise ZooError(f"--dtype {','.join(unknown)}: unknown; choose from {', '.join(DTYPES)}")
        if "fp16" in self.dtypes and not self.device.startswith("cuda"):
            raise ZooError("--dtype fp16 needs CUDA; use bf16 on CPU")
        unknown = [r for r in self.runtimes if r not in RUNTIMES]
        if unknown or not self.runtimes:
            raise ZooError(f"--runtime {','.join(unknown)}: unknown; choose from {', '.join(RUNTIMES)}")
        for runtime in self.exported_runtimes():
            dtypes = EXPORTED_DTYPES[runtime]
            if self.device != "cpu":
                raise ZooError(f"--runtime {runtime} runs on the CPU here; not --device {self.device}")
            if not set(self.dtypes) & set(dtypes):
                raise ZooError(f"--runtime {runtime} runs the export at {', '.join(dtypes)}; add "
                               f"{' or '.join(dtypes)} to --dtype")
            if runtime == "openvino":  # before exporting: the package, and bf16 instructions for a bf16 row
                from zoo.deploy.runtime import check_openvino_dtype

                for dtype in set(self.dtypes) & set(dtypes):
                    check_openvino_dtype(dtype)
        if "int8" in self.dtypes and not self.exported_runtimes():
            raise ZooError(f"--dtype int8 runs on {' or '.join(EXPORTED_DTYPES)} (static quantization); add "
                           "--runtime onnxruntime or openvino")
        if min(self.resolution) < 1 or min(self.batch_sizes, default=0) < 1:
            raise ZooError("--resolution and --batch-sizes must be positive")
        if self.iters < 1 or self.warmup < 0 or self.train_iters < 1:
            raise ZooError("--iters and --train-iters must be >= 1 and --warmup >= 0")
        if self.data != "synthetic" and not self.weights:
            raise ZooError(f"--data {self.data}: accuracy needs trained weights (--weights MODEL=PATH)")
        strays = sorted(set(self.weights) - set(self.models))
        if strays:
            raise ZooError(f"--weights names {', '.join(strays)}, which --models does not include")

    def exported_runtimes(self) -> list[str]:
        """The chosen runtimes that run the exported file, in the order given."""
        return [r for r in self.runtimes if r in EXPORTED_DTYPES]

    def notes(self) -> list[str]:
        """What the chosen flags leave out of the rows of each runtime of the exported file."""
        notes = []
        for runtime in self.exported_runtimes():
            dtypes = EXPORTED_DTYPES[runtime]
            unused = [d for d in self.dtypes if d not in dtypes] + ["channels_last"] * self.channels_last
            unused += ["compile"] * self.compile
            if unused:
                notes.append(f"{runtime} rows are {' or '.join(dtypes)} on NCHW inputs, not compiled "
                             f"({', '.join(unused)}: torch rows only)")
        return notes


@dataclass
class Unit:
    """One model x setting x batch size, measured in one process (a fresh one on CPU). JSON-serializable."""

    model: str
    dtype: str
    channels_last: bool
    compile: bool
    batch_size: int
    resolution: tuple[int, int]
    device: str
    iters: int
    warmup: int
    train_iters: int
    train_step: bool  # measure training throughput in this unit (the first batch size of a model x setting)
    weights: str | None = None
    data: str | None = None  # accuracy on this dataset's test split (needs weights)
    isolated: bool = False  # running in a fresh process: its peak RSS is this unit's
    runtime: str = "torch"
    onnx: str | None = None  # onnxruntime, openvino: the model's file, exported (and quantized) before the unit runs
    calibration: str | None = None  # int8: the dataset whose training images calibrated it

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Unit:
        return cls(**{**values, "resolution": tuple(values["resolution"])})


def parse_resolution(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    try:
        return int(height), int(width)
    except ValueError:
        raise ZooError(f"--resolution {text!r}: expected HEIGHTxWIDTH, e.g. 768x1024") from None


def parse_list(text: str, flag: str, kind=str) -> tuple:
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return tuple(kind(item) for item in items)
    except ValueError:
        raise ZooError(f"{flag} {text!r}: expected a comma-separated list of {kind.__name__}") from None


def parse_weights(text: str | None) -> dict[str, str]:
    """`p2pnet=runs/p2pnet/best.pt,csrnet=...` -> {model: path}."""
    weights = {}
    for pair in parse_list(text or "", "--weights"):
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ZooError(f"--weights expects MODEL=PATH pairs, got {pair!r}")
        weights[name] = path
    return weights
