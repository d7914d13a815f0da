"""The metrics' names, what each is called in tables, and which way is better: defined once for the evaluator,
the trainer's logs and checkpoints, `zoo eval`, the benchmark and the comparison reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str  # the column / dictionary key
    label: str  # the heading a table shows
    lower_is_better: bool
    meaning: str = ""

    @property
    def direction(self) -> str:
        return "lower" if self.lower_is_better else "higher"

    def better(self, new: float, old: float) -> bool:
        """Whether `new` improves on `old` (strictly)."""
        return new < old if self.lower_is_better else new > old

    @property
    def worst(self) -> float:
        return float("inf") if self.lower_is_better else float("-inf")


_ALL = [
    Metric("mae", "MAE", True, "mean absolute count error"),
    Metric("mse", "MSE (root mean squared error)", True,
           "crowd counting's MSE: the root of the mean squared count error"),
    Metric("nae", "NAE", True, "mean relative count error over images with people"),
    *[Metric(f"game{k}", f"GAME({k})", True, f"grid average mean absolute error over 4^{k} regions")
      for k in (0, 1, 2, 3)],
    *[Metric(f"{kind}_{px}", f"{label} @ {px} px", False, f"point {label.lower()} within {px} px")
      for px in (4, 8) for kind, label in (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"))],
    Metric("ap", "OKS AP", False, "COCO keypoint average precision"),
    Metric("ap50", "OKS AP50", False, "COCO keypoint AP at OKS 0.5"),
    Metric("ap75", "OKS AP75", False, "COCO keypoint AP at OKS 0.75"),
    Metric("ar", "OKS AR", False, "COCO keypoint average recall"),
]
METRICS: dict[str, Metric] = {m.key: m for m in _ALL}

#: the metrics every counting result row reports (train's final test, bench accuracy, the comparison suite)
HEADLINE_METRICS = ("mae", "mse", "nae", "f1_4", "f1_8")
#: what a mean count over test-time views changes, and the keys the final test reports them under
VIEW_METRICS = ("mae", "mse", "nae")
VIEW_KEYS = ("test_views", *(f"{k}_views" for k in VIEW_METRICS))
#: COCO keypoint summary keys (rows 0, 1, 2 and 5 of COCOeval.stats)
POSE_METRICS = ("ap", "ap50", "ap75", "ar")


def label(key: str) -> str:
    """The heading of metric `key` (a `_views` suffix: the mean count over test-time views)."""
    base = key.removesuffix("_views")
    text = METRICS[base].label if base in METRICS else base.upper()
    return f"{text}, views" if key != base else text
