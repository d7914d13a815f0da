"""What the commands share: their parser class, and the options several of them take (a checkpoint's model and
weights, threshold, precision, device, pickle trust, runtime, compiling), each worded once."""

from __future__ import annotations

import argparse

from zoo.cli.output import warn
from zoo.core.errors import ZooError
from zoo.core.precision import AMP_CHOICES, AMP_MODES
from zoo.deploy.export import RUNTIMES

COMPILE_MODES = ("auto", "on", "off")  # --compile: zoo.deploy.compiled when it applies (`compiles`)


class HelpFormatter(argparse.HelpFormatter):
    """States each option's default, unless its help already says it or there is none to state (an unset option, a
    flag that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if text is argparse.SUPPRESS or not action.option_strings or "default" in (text or ""):
            return text
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class CommandParser(argparse.ArgumentParser):
    """The parser of `zoo` and of each command (argparse gives subcommands their parent's class).

    `intermixed=True` takes positionals on both sides of the options (`zoo predict MODEL --weights W IMAGE...`):
    plain argparse fills every positional from the words before the first option and rejects the ones after it.
    """

    def __init__(self, *args, intermixed: bool = False, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.intermixed = intermixed
        self._in_plain_pass = False

    def parse_known_args(self, args=None, namespace=None):
        if not self.intermixed or self._in_plain_pass:  # the stdlib's intermixed parsing calls back here twice
            return super().parse_known_args(args, namespace)
        self._in_plain_pass = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._in_plain_pass = False


def add_checkpoint_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="registered model name (default: the one the checkpoint records)")


def add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True,
                   help="zoo checkpoint, or a published checkpoint of the model's family (then name the model)")


def add_threshold(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float,
                   help="decision threshold (default: the one the run chose on validation, else its recipe's)")


def add_amp(p: argparse.ArgumentParser, training: bool = False) -> None:
    if training:
        p.add_argument("--amp", choices=AMP_CHOICES,
                       help="mixed precision (default auto: bf16, or off on a CPU without bf16 instructions)")
    else:
        p.add_argument("--amp", choices=AMP_MODES, help="mixed precision (default: as trained)")


def add_device(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """`--device`; without a default, the command takes cuda when available."""
    p.add_argument("--device", default=default,
                   help="cpu or cuda" + ("" if default else " (default: cuda when available)"))


def add_trust_pickle(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow weights files that hold pickled Python objects (they can run code while loading); "
                        "by default only tensors and plain values are read")


def add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="what runs the network: torch (default), onnxruntime (CPU, float32) or openvino (CPU, "
                        "float32, or bf16 with --amp bf16); the model is exported for the run unless --onnx names a "
                        "file")
    p.add_argument("--onnx", metavar="FILE",
                   help="a `zoo export` file of --weights (fp32 or int8), run on onnxruntime unless --runtime says "
                        "openvino")


def add_compile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", choices=COMPILE_MODES, default="auto",
                   help="torch.compile the model (--runtime torch): auto does for videos, cameras and streams, whose "
                        "frames share a size, and not for images, whose sizes may differ; compiling costs the first "
                        "batch seconds to minutes (it says how long), less where the cache ($TORCHINDUCTOR_CACHE_DIR, "
                        "else ~/.cache/crowd-zoo/inductor) holds the model's kernels from an earlier run")


def chosen_runtime(args) -> str:
    """The runtime the flags of `add_runtime` choose (--onnx FILE implies onnxruntime)."""
    return args.runtime or ("onnxruntime" if args.onnx else "torch")


def compiles(args, same_size_frames: bool) -> bool:
    """Whether `--compile` (`add_compile`) compiles this job's model; `same_size_frames`: the job runs many frames of
    one size (a video, camera or stream), which one compilation serves."""
    runtime = chosen_runtime(args)
    if args.compile == "on" and runtime != "torch":
        raise ZooError(f"--compile on compiles the torch model; it does not apply to --runtime {runtime}")
    return runtime == "torch" and (args.compile == "on" or (args.compile == "auto" and same_size_frames))


def on_runtime(run, args):
    """`run` with its forward pass on the runtime the flags of `add_runtime` choose (--onnx FILE implies
    onnxruntime)."""
    runtime = chosen_runtime(args)
    if runtime == "torch":
        if args.onnx:
            raise ZooError("--onnx FILE runs on onnxruntime or openvino, not --runtime torch")
        from zoo.core.precision import slow_amp_note

        warn(slow_amp_note(run.device, run.amp))
        return run
    dtype = "fp32"
    if runtime == "openvino" and args.amp == "bf16":
        dtype = "bf16"  # OpenVINO's inference precision hint; any other --amp runs float32, saying so
    elif args.amp not in (None, "off"):
        warn(f"--amp {args.amp} does not apply to --runtime {runtime}: the exported model runs in float32")
    from zoo.deploy.runtime import with_exported

    return with_exported(run, args.weights, args.onnx, runtime, dtype)
