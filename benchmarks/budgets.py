"""How much training the comparison gives each model: the issue's full protocol (for a GPU) and a reduced one
that fits an hour on a 2-core CPU.

Training is counted in crops seen, not epochs, so datasets of different sizes (N = 32 or 64 cell images, 80
synthetic scenes, 24 street photos) get the same amount of data per run and every model gets the same amount
as the others; epochs follow from it (a model given larger crops gets as many pixels). Augmentation is the same
for every model too: the registry's default `Recipe` crop, scale range, flip and colour jitter. Everything else
(optimizer, learning rates, batch size, loss, decision threshold) is the model's own registry recipe, except
what a budget chose per model on validation (`model_recipes`, `model_kwargs`), which the report states.
The earlier budgets' evidence, cited below as results/README.md, is the lab notebook kept in git history
(`git show 698b25f:results/README.md`); the fair-v1 budget's is docs/protocol.md and its search log.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from zoo.core.errors import ZooError
from zoo.models.registry import Recipe

AUGMENTATION_FIELDS = ("crop_size", "scale_range", "flip", "color_jitter")


@dataclass(frozen=True)
class Budget:
    name: str  # recorded in every CSV row: its key in BUDGETS, but "cpu-reduced" for "cpu"
    models: tuple[str, ...]
    cells_sizes: tuple[int, ...]  # N, training images drawn from VGG cells 1-100
    cells_draws: int  # draws per N, seeded 0, 1, ...
    crops_per_image: int
    cells_crops: int  # training crops seen per cells run, whatever N
    synthetic_crops: int
    street_crops: int
    street_crop_size: int  # street photos are 768x1024 with ~16 heads: a 128 px crop holds a third of a head
    validations: int  # validation passes per run, spread evenly over its epochs (the last epoch always has one)
    note: str = ""  # what the budget can and cannot show, quoted in the report
    cells_models: dict[int, tuple[str, ...]] = field(default_factory=dict)  # N -> models, where not all of them
    # Per-model choices made on validation (cells draw 0's held-out images), on top of the registry's
    model_recipes: dict[str, dict] = field(default_factory=dict)
    model_kwargs: dict[str, dict] = field(default_factory=dict)
    # Protocol -> test-time views whose mean count the final test also scores (zoo.models.registry.Recipe.test_views)
    test_views: dict[str, int] = field(default_factory=dict)
    # Street runs fine-tune each model's synthetic checkpoint of this budget (one run), or start from random
    # weights (`street_draws` runs, seeded 0, 1, ...).
    street_from_synthetic: bool = True
    street_draws: int = 1

    def models_at(self, n_train: int) -> tuple[str, ...]:
        """The models trained on cells at N = `n_train` (of `models`, which --models may have narrowed)."""
        return tuple(m for m in self.cells_models.get(n_train, self.models) if m in self.models)

    def crops(self, protocol: str) -> int:
        """Training crops per run of `protocol`; 0 for a protocol this budget leaves out."""
        return {"cells": self.cells_crops if self.cells_sizes else 0, "synthetic": self.synthetic_crops,
                "street": self.street_crops}[protocol]

    @property
    def protocols(self) -> tuple[str, ...]:
        """The protocols this budget trains, in running order (street fine-tunes the synthetic checkpoints)."""
        return tuple(protocol for protocol in ("synthetic", "street", "cells") if self.crops(protocol) > 0)

    def epochs(self, crops: int, n_train: int) -> int:
        return max(1, round(crops / (n_train * self.crops_per_image)))

    def recipe_overrides(self, protocol: str, crops: int, n_train: int, model: str,
                         crop_size: int | None = None) -> dict:
        """What `protocol` sets on top of `model`'s recipe: the shared augmentation (with the protocol's crop
        size, if it has one), this budget's choices for the model, the run length and the test views.

        `crops` are of the shared size. A model this budget trains on other crops sees as many pixels: twice the
        side, a quarter of the crops."""
        default = Recipe()
        shared = {name: getattr(default, name) for name in AUGMENTATION_FIELDS}
        shared["crop_size"] = crop_size or shared["crop_size"]
        chosen = {**shared, **self.model_recipes.get(model, {})}
        epochs = self.epochs(round(crops * (shared["crop_size"] / chosen["crop_size"]) ** 2), n_train)
        return {**chosen, "crops_per_image": self.crops_per_image, "epochs": epochs,
                "eval_every": max(1, epochs // self.validations), "test_views": self.test_views.get(protocol, 1)}


# P2PNet's choices on cells validation (results/README.md): Adam at 3e-4 for the whole net, batch norm recalibrated.
CELLS_P2PNET = {"lr": 3e-4, "backbone_lr": 3e-4, "bn_recalibration": 4}

# The cells budget's best family (P2PNet, which underfits there: it counts its own training images no better
# than validation ones) with twice the crops: 480 epochs at N = 64, about 30 minutes a run on 2 idle cores
# (the cells budget's N = 32 runs, 15360 crops, took 14-15 minutes).
CELLS_LONG = Budget(name="cells-long", models=("p2pnet",), cells_sizes=(64,), cells_draws=3,
                     crops_per_image=1, cells_crops=30_720, synthetic_crops=0, street_crops=0,
                     street_crop_size=256, validations=20,
                     model_recipes={"p2pnet": CELLS_P2PNET},
                     test_views={"cells": 8},
                     note="P2PNet on cells at N = 64, 3 draws, twice the cells budget's crops: 480 epochs of "
                          "one 128 px crop per image, its recipe otherwise.")

BUDGETS = {
    # Sized from training speed measured with `zoo bench --resolution 256x256 --train-step` on the idle 2-core
    # CPU, two threads (twice one thread's speed there): p2pnet 16, csrnet_bn 15, cpn_r18 38 crops/s at 128 px.
    # About 6 minutes per cells N and draw for the three models with their validation and test passes, about
    # 40 minutes for the suite. CPN on ResNet-18 stands in for the ResNet-50 CPN, several times slower there.
    "cpu": Budget(name="cpu-reduced", models=("p2pnet", "csrnet_bn", "cpn_r18"), cells_sizes=(32, 64), cells_draws=2,
                  crops_per_image=1, cells_crops=1920, synthetic_crops=1920, street_crops=960, street_crop_size=256,
                  validations=2,
                  note="A smoke-scale budget: about 240 optimizer steps per run from random weights, far from "
                       "convergence. It checks that every protocol runs end to end and shows early-training "
                       "behaviour; its accuracy says little about what the architectures reach when trained "
                       "fully, which is what the published anchors report."),
    # How far longer CPU training takes the cells counts: the two best cpu-reduced models on cells, two draws at
    # N = 64 with 8 times the cells crops: 15-17 minutes of training a model and draw on 2 idle cores, 37 minutes
    # measured for one draw of both with their validation and test passes.
    "cpu-long": Budget(name="cpu-long", models=("p2pnet", "csrnet_bn"), cells_sizes=(64,), cells_draws=2,
                       crops_per_image=1, cells_crops=15_360, synthetic_crops=0, street_crops=0,
                       street_crop_size=256, validations=10,
                       note="Cells only, two draws at N = 64: 8 times the cpu-reduced cells budget, 240 epochs, "
                            "about 1900 optimizer steps from random weights."),
    # Issue 15's cells comparison, each family at its best on validation (draw 0's held-out images 65-100 of the
    # pool; the evidence is in results/README.md): three draws at N = 64 for every family, N = 32 for the best.
    # 15360 crops are 25-30 minutes of training a P2PNet or CSRNet-BN run on 2 cores with channels_last, about 10
    # for CPN-R18 (`zoo bench --resolution 256x256 --train-step --channels-last`: 11, 9 and ~30 crops/s).
    # CSRNet-BN and CPN-R18 train on whole 256 px cell images, a quarter as many crops: CSRNet's count from 128 px
    # crops drifts when it sees a whole image, and CPN's whole-image runs take half the time. CPN's count, the
    # heatmap's mass, swings in a level shared by every image between validations: it is rescaled on validation
    # (fit_count_scale; results/README.md).
    "cells": Budget(name="cells", models=("p2pnet", "csrnet_bn", "cpn_r18"), cells_sizes=(64, 32), cells_draws=3,
                    crops_per_image=1, cells_crops=15_360, synthetic_crops=0, street_crops=0, street_crop_size=256,
                    validations=20, cells_models={32: ("p2pnet",)},
                    model_recipes={"p2pnet": CELLS_P2PNET,
                                   "csrnet_bn": {"crop_size": 256, "bn_recalibration": 4},
                                   "cpn_r18": {"crop_size": 256, "bn_recalibration": 4, "fit_count_scale": True}},
                    model_kwargs={"cpn_r18": {"count": "mass"}},
                    test_views={"cells": 8},
                    note="Cells only, every run about 30 minutes or less of this 2-core CPU: 240 epochs at N = 64, "
                         "480 at N = 32, one 128 px crop per image per epoch (CSRNet-BN and CPN-R18: 60 epochs of "
                         "whole 256 px images, the same pixels)."),
    "cells-long": CELLS_LONG,
    # cells-long validated and tested on a moving average of P2PNet's weights (decay 0.998 a step: about the last
    # 500 of its 3840 steps, two and a half validation intervals) instead of the last step's weights.
    "cells-ema": replace(CELLS_LONG, name="cells-ema", model_recipes={"p2pnet": {**CELLS_P2PNET, "ema_decay": 0.998}},
                         note="cells-long (480 epochs of P2PNet at N = 64, 3 draws), the checkpoints a moving average "
                              "of the weights over about the last 500 of 3840 steps."),
    # Issue 15's street photos from random weights: 160 epochs of one 256 px crop of each of the 24 training photos
    # (each draw validates on its own 6 of the 30), half of the crops placed to hold a head (most random crops of
    # a 768x1024 photo with ~16 heads hold nobody), and the count scale fitted on validation: trained on crops
    # dense in heads, a whole photo is overcounted (k 0.2-0.5 in the first CSRNet-BN run; results/README.md).
    # The two families whose count is a map's sum; about 14 minutes a run on 2 cores.
    "street": Budget(name="street", models=("csrnet_bn", "cpn_r18"), cells_sizes=(), cells_draws=0,
                     crops_per_image=1, cells_crops=0, synthetic_crops=0, street_crops=3840, street_crop_size=256,
                     validations=16, street_from_synthetic=False, street_draws=3,
                     model_recipes={model: {"head_crops": 0.5, "bn_recalibration": 2, "fit_count_scale": True}
                                    for model in ("csrnet_bn", "cpn_r18")},
                     model_kwargs={"cpn_r18": {"count": "mass"}},
                     note="Street photos only, from random weights, 3 draws: 3840 crops of 256 px (160 epochs) per "
                          "run, half of them placed on a head, the count scale fitted on each draw's 6 validation "
                          "photos."),
    # The protocol: five draws per N, every model, long enough to converge on a GPU.
    "full": Budget(name="full", models=("p2pnet", "csrnet_bn", "cpn", "cpn_r18"), cells_sizes=(32, 64),
                   cells_draws=5, crops_per_image=4, cells_crops=64_000, synthetic_crops=64_000,
                   street_crops=19_200, street_crop_size=256, validations=20,
                   test_views={"cells": 8},
                   note="The issue's protocol: five draws per N; 250-500 epochs of four crops per image on cells."),
}


def get_budget(name: str) -> Budget:
    try:
        return BUDGETS[name]
    except KeyError:
        raise ZooError(f"unknown --budget {name!r}; choose from {', '.join(BUDGETS)}") from None


def budget_named(row_name: str, extra: dict[str, Budget] | None = None) -> Budget | None:
    """The budget a CSV row records by its `name`, or None for one this version does not define."""
    known = {b.name: b for b in [*BUDGETS.values(), *(extra or {}).values()]}
    return known.get(row_name)


# ---- the fair comparison (docs/protocol.md) ---------------------------------------------------------------------

@dataclass(frozen=True)
class Trial:
    """One configuration of the fair protocol's search: the menu's searched items (docs/protocol.md)."""

    name: str
    lr: float  # Adam's rate for the whole network, trunk and heads alike
    ema: bool  # validate, keep and test a moving average of the weights


@dataclass(frozen=True)
class FairBudget:
    """One budget for every family: the same steps, batch and crop size, the same menu and the same search.

    Everything a family may choose is in `trials`, tried on `search_draw`'s validation images only; the rest of
    the menu is fixed here for all families alike. Shared code reads a model's properties (whether its count is
    a map's sum), never its name; `model_kwargs` are the protocol's fixed per-model options (docs/protocol.md)."""

    name: str
    headline: tuple[str, ...]  # the mission's architectures: the rows the verdicts speak of
    extras: tuple[str, ...]  # labelled extra rows, trained only with --extras
    n_train: int
    steps: int  # optimizer steps of a final run
    batch_size: int  # crops per step (one crop per training image per epoch)
    crop_sizes: tuple[int, ...]  # candidates of the crop round, the default first
    trials: tuple[Trial, ...]
    crop_trial: str  # the trial the crop round trains at every candidate size
    search_draw: int = 0
    search_share: float = 0.25  # a trial's steps, as a share of a final run's
    draws: int = 3  # final draws by default (--draws asks for more)
    validations: int = 20  # per final run, evenly spaced
    search_validations: int = 10  # per trial
    ema_share: float = 1 / 8  # the moving average's horizon, as a share of the run's steps
    bn_recalibration: int = 4  # crops per training image before each validation
    amp: str = "bf16"  # fixed before the first draw
    threshold_candidates: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(2, 15))
    model_kwargs: dict[str, dict] = field(default_factory=dict)
    note: str = ""

    @property
    def models(self) -> tuple[str, ...]:
        return (*self.headline, *self.extras)

    @property
    def search_steps(self) -> int:
        return round(self.steps * self.search_share)

    def trial(self, name: str) -> Trial:
        for trial in self.trials:
            if trial.name == name:
                return trial
        raise ZooError(f"{self.name}: no trial named {name!r}; its trials are {', '.join(t.name for t in self.trials)}")

    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch_size  # the trainer drops a last, incomplete batch

    def recipe(self, trial: Trial, crop_size: int, steps: int, validations: int, count_is_sum: bool) -> dict:
        """The recipe overrides of a run of `trial` for `steps` optimizer steps: what the budget fixes for every
        family, and the trial's choices. `count_is_sum`: the model's count is a map's sum, calibrated by a fitted
        scale; otherwise (a count of points) by the decision threshold chosen on validation."""
        per_epoch = self.steps_per_epoch()
        if per_epoch < 1 or steps % per_epoch:
            raise ZooError(f"{self.name}: {steps} steps are not whole epochs of {self.n_train} images in batches "
                           f"of {self.batch_size}")
        epochs = steps // per_epoch
        if trial.ema and self.ema_share * steps <= 1:
            raise ZooError(f"{self.name}: a moving average over {self.ema_share:g} of {steps} steps averages nothing")
        default = Recipe()
        return {"optimizer": "adam", "lr": trial.lr, "backbone_lr": trial.lr, "weight_decay": 0.0,
                "batch_size": self.batch_size, "crops_per_image": 1, "crop_size": crop_size,
                "scale_range": default.scale_range, "flip": default.flip, "rotate": False,
                "color_jitter": default.color_jitter, "head_crops": 0.0, "epochs": epochs,
                "warmup_epochs": 1, "freeze_backbone_epochs": 0, "eval_every": max(1, epochs // validations),
                "ema_decay": 1 - 1 / (self.ema_share * steps) if trial.ema else 0.0,
                "bn_recalibration": self.bn_recalibration, "fit_count_scale": count_is_sum,
                "threshold_candidates": () if count_is_sum else self.threshold_candidates, "test_views": 1}


FAIR_V1 = FairBudget(
    name="fair-v1", headline=("p2pnet", "csrnet_bn", "cpn"), extras=("cpn_r18",), n_train=64, steps=3840,
    batch_size=8, crop_sizes=(128, 256),
    trials=(Trial("lr1e-4", 1e-4, True), Trial("lr3e-4", 3e-4, True), Trial("lr1e-3", 1e-3, True),
            Trial("lr3e-4-no-ema", 3e-4, False)),
    crop_trial="lr3e-4",
    model_kwargs={"cpn": {"count": "mass"}, "cpn_r18": {"count": "mass"}},
    note="docs/protocol.md: 3,840 steps of 8 crops for every family, N = 4 trials each at a quarter of it.")

FAIR_BUDGETS = {"fair-v1": FAIR_V1}
