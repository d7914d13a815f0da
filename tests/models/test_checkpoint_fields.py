"""The checkpoint's fields one by one: what the writer puts in a file, what the reader takes back (defaults where a
value is missing), how each earlier layout migrates, which way a selection improves, which versions are refused,
what `for_inference` leaves out, what the model card says, and which options the weights imply."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from support import tiny_family

from zoo.core.errors import ZooError
from zoo.models.factory import create_model
from zoo.models.registry import Recipe, get_recipe, register_model, unregister_model
from zoo.models.weights import checkpoint as ck
from zoo.models.weights import hub
from zoo.models.weights.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    RESUME_FIELDS,
    Checkpoint,
    Selection,
    load_model_state,
    model_from_checkpoint,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V0_BEST, V0_LAST = FIXTURES / "tiny_density_v0_best.pt", FIXTURES / "tiny_density_v0_last.pt"
EVERY_FIELD = ("model_name", "weights", "model_kwargs", "recipe", "threshold", "count_scale", "count_floor",
               "normalization", "selection", "training", "history", "results", "source", "provenance", "optimizer",
               "scaler", "torch_rng", "trained", "average", "epoch", "step")


def tiny_weights(**options) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return create_model("tiny_density", **options).state_dict()


def resumable_checkpoint() -> Checkpoint:
    weights = tiny_weights()
    return Checkpoint("tiny_density", weights, selection=Selection("mae", 1.5, 2),
                      optimizer={"state": {}, "param_groups": [{"lr": 0.1, "params": []}]}, scaler={"scale": 4.0},
                      torch_rng=torch.get_rng_state(), trained={k: v * 2 for k, v in weights.items()},
                      average={"n_averaged": torch.tensor(3)}, epoch=7, step=21)


def saved(tmp_path: Path, payload: dict, name: str = "file.pt") -> Path:
    torch.save(payload, tmp_path / name)
    return tmp_path / name


def v0_raw(kind: str = "last") -> dict:
    return torch.load(V0_LAST if kind == "last" else V0_BEST, weights_only=True)


# ---- defaults, selection and thresholds --------------------------------------------------------------------------

def test_a_bare_checkpoint_has_the_documented_defaults():
    checkpoint = Checkpoint("tiny_density", {})
    assert checkpoint.model_kwargs == {} and checkpoint.recipe == {} and checkpoint.threshold is None
    assert checkpoint.count_scale == 1.0 and checkpoint.selection is None and checkpoint.source is None
    assert checkpoint.training == {} and checkpoint.history == [] and checkpoint.results == []
    assert checkpoint.provenance == {} and checkpoint.notes == [] and not checkpoint.resumable
    assert all(getattr(checkpoint, name) is None for name in RESUME_FIELDS)
    # the float32 constants written as their shortest decimals, so a saved file shows 0.485, not 0.48500001
    assert checkpoint.normalization == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert [repr(v) for v in checkpoint.normalization["mean"]] == ["0.485", "0.456", "0.406"]
    # each checkpoint owns its default containers
    checkpoint.normalization["mean"][0] = 0.0
    checkpoint.training["x"] = 1
    assert Checkpoint("tiny_density", {}).normalization["mean"][0] == 0.485
    assert Checkpoint("tiny_density", {}).training == {}


def test_only_the_optimizer_makes_a_checkpoint_resumable():
    assert Checkpoint("tiny_density", {}, optimizer={}).resumable
    assert not Checkpoint("tiny_density", {}, epoch=3, step=9, scaler={"scale": 1.0}).resumable


@pytest.mark.parametrize(("metric", "direction"), [("mae", "lower"), ("nae", "lower"), ("f1_8", "higher"),
                                                   ("ap", "higher")])
def test_a_selection_takes_its_direction_from_the_metric(metric, direction):
    assert Selection(metric).direction == direction
    assert Selection(metric, direction=direction).direction == direction
    other = "higher" if direction == "lower" else "lower"
    with pytest.raises(ZooError):
        Selection(metric, direction=other)


def test_an_unknown_selection_metric_is_refused():
    with pytest.raises(ZooError, match="val_mae"):
        Selection("val_mae")


def test_lower_is_better_selection_improves_only_on_a_strictly_lower_finite_value():
    selection = Selection("mae", 2.0, 1)
    assert selection.improved_by(1.0) and selection.improved_by(1.999)
    assert not selection.improved_by(2.0) and not selection.improved_by(3.0)
    assert not selection.improved_by(float("-inf")) and not selection.improved_by(float("nan"))


def test_higher_is_better_selection_improves_only_on_a_strictly_higher_finite_value():
    selection = Selection("f1_8", 0.5, 1)
    assert selection.improved_by(0.75) and not selection.improved_by(0.5) and not selection.improved_by(0.25)
    assert not selection.improved_by(float("inf")) and not selection.improved_by(float("nan"))


def test_a_selection_without_a_best_value_takes_any_finite_value():
    assert Selection("mae").improved_by(1e9) and Selection("f1_8").improved_by(-1.0)
    assert not Selection("mae").improved_by(float("inf")) and not Selection("ap").improved_by(float("-inf"))


def test_the_decision_threshold_is_the_chosen_one_else_the_runs_recipe_else_the_registered_one():
    chosen = Checkpoint("tiny_density", {}, threshold=0.125, recipe={"threshold": 0.75})
    assert chosen.decision_threshold() == 0.125 and isinstance(chosen.decision_threshold(), float)
    zero = Checkpoint("tiny_density", {}, threshold=0.0, recipe={"threshold": 0.75})
    assert zero.decision_threshold() == 0.0  # a chosen threshold of zero is still the chosen one
    assert Checkpoint("tiny_density", {}, recipe={"threshold": 0.75}).decision_threshold() == 0.75
    registered = get_recipe("tiny_density").threshold
    assert Checkpoint("tiny_density", {}, recipe={"lr": 0.1}).decision_threshold() == registered == 0.3
    with pytest.raises(ZooError):  # an unregistered model without a recorded threshold has none
        Checkpoint("no_such_model", {}).decision_threshold()


# ---- writing -------------------------------------------------------------------------------------------------

def test_a_file_holds_the_format_the_version_and_one_entry_per_field_but_the_notes():
    checkpoint = resumable_checkpoint()
    checkpoint.notes = ["a note"]
    payload = checkpoint.to_dict(for_inference=False)
    assert list(payload) == ["format", "version", *EVERY_FIELD]
    assert payload["format"] == FORMAT == "crowd-zoo-checkpoint" and payload["version"] == FORMAT_VERSION == 1
    assert payload["selection"] == {"metric": "mae", "best": 1.5, "epoch": 2, "direction": "lower"}
    assert payload["epoch"] == 7 and payload["step"] == 21 and payload["scaler"] == {"scale": 4.0}
    assert payload["weights"] is checkpoint.weights and payload["normalization"] == checkpoint.normalization


def test_for_inference_drops_exactly_the_resume_fields():
    assert RESUME_FIELDS == ("optimizer", "scaler", "torch_rng", "trained", "average", "epoch", "step")
    payload = resumable_checkpoint().to_dict(for_inference=True)
    assert list(payload) == ["format", "version", *(f for f in EVERY_FIELD if f not in RESUME_FIELDS)]
    assert payload["selection"]["epoch"] == 2  # the selection's epoch is not the resume epoch


def test_saving_writes_the_payload_and_resume_state_only_when_asked(tmp_path):
    checkpoint = resumable_checkpoint()
    checkpoint.save(tmp_path / "last.pt", for_inference=False)
    checkpoint.save(str(tmp_path / "best.pt"), for_inference=True)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert set(last) - set(best) == set(RESUME_FIELDS) and "notes" not in last
    assert last["epoch"] == 7 and torch.equal(last["torch_rng"], checkpoint.torch_rng)
    loaded = Checkpoint.load(tmp_path / "last.pt")
    assert loaded.resumable and loaded.epoch == 7 and loaded.step == 21 and loaded.average["n_averaged"] == 3
    assert all(torch.equal(loaded.trained[k], v) for k, v in checkpoint.trained.items())
    assert not Checkpoint.load(tmp_path / "best.pt").resumable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temporary left behind


# ---- reading version 1 ------------------------------------------------------------------------------------------

def test_missing_or_none_entries_read_as_the_defaults(tmp_path):
    weights = tiny_weights()
    payload = {"format": FORMAT, "version": 1, "model_name": "tiny_density", "weights": weights,
               "model_kwargs": None, "count_scale": None, "normalization": None, "training": None,
               "selection": None, "notes": ["written by someone else"], "unknown_entry": 3}
    checkpoint = Checkpoint.load(saved(tmp_path, payload))
    assert checkpoint.model_kwargs == {} and checkpoint.count_scale == 1.0 and checkpoint.training == {}
    assert checkpoint.normalization == ck.imagenet_normalization() and checkpoint.selection is None
    assert checkpoint.notes == [] and not hasattr(checkpoint, "unknown_entry")
    assert all(torch.equal(checkpoint.weights[k], v) for k, v in weights.items())


def test_from_dict_rebuilds_the_selection_and_keeps_other_values():
    payload = {"model_name": "tiny_density", "weights": {}, "threshold": 0.25, "count_scale": 0.5,
               "selection": {"metric": "f1_8", "best": 0.75, "epoch": 3}, "history": [{"epoch": 3}]}
    checkpoint = Checkpoint.from_dict(payload)
    assert checkpoint.selection == Selection("f1_8", 0.75, 3, "higher")
    assert checkpoint.threshold == 0.25 and checkpoint.count_scale == 0.5 and checkpoint.history == [{"epoch": 3}]


@pytest.mark.parametrize("payload", [
    {"weights": {}},
    {"model_name": 3, "weights": {}},
    {"model_name": "tiny_density"},
    {"model_name": "tiny_density", "weights": [torch.zeros(1)]},
])
def test_a_payload_without_a_model_name_or_weights_is_not_a_checkpoint(payload, tmp_path):
    with pytest.raises(ZooError) as refused:
        Checkpoint.from_dict(payload, tmp_path / "x.pt")
    assert str(tmp_path / "x.pt") in str(refused.value)
    with pytest.raises(ZooError) as refused:
        Checkpoint.from_dict(payload)
    assert "checkpoint" in str(refused.value)
    path = saved(tmp_path, {"format": FORMAT, "version": 1, **payload})
    with pytest.raises(ZooError):
        Checkpoint.load(path, "tiny_density")


@pytest.mark.parametrize("selection", [{"metric": "mae", "bogus": 1}, {"metric": "nope"}, {"best": 1.0},
                                       {"metric": "mae", "direction": "higher"}])
def test_a_bad_selection_record_is_one_error_naming_the_file(selection, tmp_path):
    path = saved(tmp_path, {"format": FORMAT, "version": 1, "model_name": "tiny_density", "weights": {},
                            "selection": selection})
    with pytest.raises(ZooError) as refused:
        Checkpoint.load(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("header", [{"format": "other-zoo", "version": 1}, {"format": FORMAT, "version": 0},
                                    {"format": FORMAT, "version": -1}, {"format": FORMAT, "version": "1"},
                                    {"format": FORMAT, "version": 1.0}, {"format": FORMAT},
                                    {"format": FORMAT, "version": FORMAT_VERSION + 1},
                                    {"format": FORMAT, "version": 10}])
def test_a_file_of_another_format_or_version_is_refused_naming_it(header, tmp_path):
    payload = {**Checkpoint("tiny_density", tiny_weights()).to_dict(for_inference=True), **header}
    if "version" not in header:
        del payload["version"]
    path = saved(tmp_path, payload)
    with pytest.raises(ZooError) as refused:
        Checkpoint.load(path, "tiny_density")
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_the_newest_version_is_read(tmp_path):
    payload = {**Checkpoint("tiny_density", tiny_weights(), threshold=0.5).to_dict(for_inference=True)}
    assert Checkpoint.load(saved(tmp_path, payload)).threshold == 0.5
    assert ck._check_version(payload, "f") is payload


# ---- reading version 0 ------------------------------------------------------------------------------------------

def test_a_runs_untyped_file_migrates_its_training_record():
    raw = v0_raw("last")
    train = raw["config"]["train"]
    training = Checkpoint.load(V0_LAST).training
    kept = {k: v for k, v in train.items() if k not in ("model", "model_kwargs", "resume", "overwrite", "recipe")}
    assert training == {**kept, "recipe_overrides": train["recipe"], "world_size": 1, "epochs": raw["epoch"],
                        "steps": raw["step"], "images_seen": None, "protocol": None}
    assert training["out"] == "/tmp/fx/run" and training["val_fraction"] == 0.34 and "recipe" not in training


def test_an_untyped_best_file_has_no_resume_state_and_a_last_file_all_of_it():
    raw = v0_raw("last")
    best, last = Checkpoint.load(V0_BEST), Checkpoint.load(V0_LAST)
    assert all(getattr(best, name) is None for name in ("optimizer", "scaler", "torch_rng", "trained", "average"))
    assert best.epoch == v0_raw("best")["epoch"]  # the untyped best.pt recorded its epoch and step as well
    assert last.scaler == raw["scaler"] and last.epoch == raw["epoch"] and last.step == raw["step"]
    assert last.trained is None and last.average is None  # that run kept no moving average
    assert all(torch.equal(last.weights[k], v) for k, v in raw["model"].items())
    assert best.training["epochs"] == v0_raw("best")["epoch"]


def test_an_untyped_file_without_a_config_records_no_training_and_keeps_its_world_size(tmp_path):
    raw = v0_raw("best")
    bare = {"model": raw["model"], "model_name": "tiny_density"}
    checkpoint = Checkpoint.load(saved(tmp_path, bare))
    assert checkpoint.training == {} and checkpoint.recipe == {} and checkpoint.history == []
    assert checkpoint.threshold is None and checkpoint.count_scale == 1.0 and checkpoint.selection is None
    assert checkpoint.source is None and checkpoint.provenance == {} and checkpoint.model_kwargs == {}
    assert not checkpoint.resumable

    config = {**raw["config"], "world_size": 4}
    assert Checkpoint.load(saved(tmp_path, {**raw, "config": config}, "ddp.pt")).training["world_size"] == 4
    del config["world_size"]
    assert Checkpoint.load(saved(tmp_path, {**raw, "config": config}, "old.pt")).training["world_size"] == 1


def test_an_untyped_converted_file_moves_its_source_out_of_the_provenance(tmp_path):
    raw = v0_raw("best")
    provenance = {"source": "SHTechA.pth", "sha256": "ab" * 32, "layout": "p2pnet", "packing": "{'model': ...}",
                  "preprocessing": "none", "git_commit": "1234567", "torch": "2.3"}
    converted = {"model": raw["model"], "model_name": "tiny_density", "model_kwargs": {"width": 8},
                 "provenance": provenance}
    checkpoint = Checkpoint.load(saved(tmp_path, converted))
    assert checkpoint.source == {"file": "SHTechA.pth", "sha256": "ab" * 32, "layout": "p2pnet",
                                 "packing": "{'model': ...}", "preprocessing": "none"}
    assert checkpoint.provenance == {"git_commit": "1234567", "torch": "2.3"}
    assert checkpoint.model_kwargs == {"width": 8} and checkpoint.training == {}

    partial = {**converted, "provenance": {"source": "bare.pth", "sha256": "cd" * 32, "git_commit": "1234567"}}
    checkpoint = Checkpoint.load(saved(tmp_path, partial, "partial.pt"))
    assert checkpoint.source == {"file": "bare.pth", "sha256": "cd" * 32}
    assert checkpoint.provenance == {"git_commit": "1234567"}


def untyped_run(tmp_path: Path, best_val_mae: float, history: list[dict], kwargs: dict | None = None) -> Selection:
    raw = {**v0_raw("best"), "best_val_mae": best_val_mae, "history": history, "model_kwargs": kwargs or {}}
    return Checkpoint.load(saved(tmp_path, raw, f"run{len(list(tmp_path.iterdir()))}.pt")).selection


def test_an_untyped_count_selection_takes_the_matching_rows_mae_and_epoch(tmp_path):
    history = [{"epoch": 1, "val_mae": 2.5, "val_selection": 2.5}, {"epoch": 2, "val_mae": 1.25, "val_selection": 1.5},
               {"epoch": 3, "val_mae": 1.75, "val_selection": 1.75}]
    assert untyped_run(tmp_path, 1.5, history) == Selection("mae", 1.25, 2, "lower")
    # no row matches: the stored value itself, at no known epoch
    assert untyped_run(tmp_path, 1.0, history) == Selection("mae", 1.0, None)
    # a matching row without the metric: the stored value, at the row's epoch
    assert untyped_run(tmp_path, 2.0, [{"epoch": 4, "val_selection": 2.0}]) == Selection("mae", 2.0, 4)
    best = untyped_run(tmp_path, 2.0, [{"epoch": 4, "val_selection": 2.0}]).best
    assert isinstance(best, float)


def test_an_untyped_pose_selection_is_recognized_by_its_options_or_its_history(tmp_path):
    # by the options alone (no history): AP is 1 - the stored loss
    assert untyped_run(tmp_path, 0.25, [], {"num_keypoints": 17}) == Selection("ap", 0.75, None, "higher")
    # by the history alone, in any row
    history = [{"epoch": 1, "val_mae": 3.0, "val_selection": 0.5}, {"epoch": 2, "val_ap": 0.6, "val_selection": 0.4}]
    assert untyped_run(tmp_path, 0.5, history) == Selection("ap", 0.5, 1)  # the row has no AP: 1 - loss
    assert untyped_run(tmp_path, 0.4, history) == Selection("ap", 0.6, 2)
    # neither: a count model, whose best value is the loss itself
    assert untyped_run(tmp_path, 0.25, [], {"width": 8}) == Selection("mae", 0.25, None)


@pytest.mark.parametrize("loss", [float("inf"), float("nan")])
def test_an_untyped_run_never_validated_has_only_its_metric(loss, tmp_path):
    assert untyped_run(tmp_path, loss, [{"epoch": 1, "val_selection": loss}]) == Selection("mae")
    assert untyped_run(tmp_path, loss, [], {"num_keypoints": 17}) == Selection("ap")


def test_an_untyped_file_without_a_best_value_has_no_selection(tmp_path):
    raw = v0_raw("best")
    del raw["best_val_mae"]
    assert Checkpoint.load(saved(tmp_path, raw)).selection is None


def test_only_a_dict_with_a_model_name_and_a_model_dict_is_the_untyped_layout(tmp_path):
    weights = tiny_weights()
    # a model entry that is not a state dict: not the untyped layout, and without a name not convertible
    with pytest.raises(ZooError):
        Checkpoint.load(saved(tmp_path, {"model_name": "tiny_density", "model": torch.zeros(1)}, "a.pt"))
    # a published {'model': state dict} has no model name: converted for the model named by the caller
    published = saved(tmp_path, {"model": weights}, "b.pt")
    with pytest.raises(ZooError):
        Checkpoint.load(published)
    checkpoint = Checkpoint.load(published, "tiny_density")
    assert checkpoint.source["file"] == "b.pt"
    assert checkpoint.source["sha256"] == hashlib.sha256(published.read_bytes()).hexdigest()


def test_options_given_for_a_converted_file_reach_the_conversion(tmp_path, monkeypatch):
    seen = {}

    def convert(raw, name, path, options):
        seen.update(name=name, path=path, options=options)
        return {"model_name": name, "weights": raw}

    monkeypatch.setattr(ck, "convert", convert)
    checkpoint = Checkpoint.load(str(saved(tmp_path, tiny_weights())), "tiny_density", {"width": 8})
    assert seen == {"name": "tiny_density", "path": tmp_path / "file.pt", "options": {"width": 8}}
    assert isinstance(seen["path"], Path) and checkpoint.model_name == "tiny_density"


# ---- published tags --------------------------------------------------------------------------------------------

def test_a_published_tag_is_fetched_converted_and_cached_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    entry = hub.Published("tiny_density.fx", "tiny_density", "https://example.invalid/fx.pth", "fx.pth",
                          "zoo", "test only", "nothing", "nowhere", None)
    monkeypatch.setitem(hub.PUBLISHED, entry.tag, entry)
    weights = tiny_weights()
    original = saved(tmp_path, {"state_dict": weights}, "fx.pth")
    fetched = []
    monkeypatch.setattr(hub, "fetch", lambda e: fetched.append(e) or original)

    checkpoint = Checkpoint.load("tiny_density.fx")
    assert fetched == [entry] and hub.converted_file(entry).is_file()
    assert checkpoint.model_name == "tiny_density" and not checkpoint.resumable
    # what the conversion recorded about the file, with what the tag adds
    assert checkpoint.source["file"] == "fx.pth"
    assert checkpoint.source["sha256"] == hashlib.sha256(original.read_bytes()).hexdigest()
    assert {k: checkpoint.source[k] for k in entry.source} == entry.source
    assert set(checkpoint.provenance) == {"git_commit", "torch", "device_name", "started"}
    assert all(torch.equal(checkpoint.weights[k], v) for k, v in weights.items())
    assert "optimizer" not in torch.load(hub.converted_file(entry), weights_only=True)

    again = Checkpoint.load("tiny_density.fx")  # from the cache: nothing fetched
    assert fetched == [entry] and again.source == checkpoint.source


def test_provenance_names_the_commit_torch_device_and_start_time(monkeypatch):
    monkeypatch.setattr(ck, "git_commit", lambda: "abc1234")
    record = ck.provenance()
    assert list(record) == ["git_commit", "torch", "device_name", "started"]
    assert record["git_commit"] == "abc1234" and record["torch"] == torch.__version__
    assert type(record["torch"]) is str and record["device_name"] == ck.device_name(torch.device("cpu"))
    started = datetime.fromisoformat(record["started"])
    assert started.tzinfo is not None and started.utcoffset().total_seconds() == 0 and started.microsecond == 0
    assert abs((datetime.now(UTC) - started).total_seconds()) < 3600
    assert ck.provenance(torch.device("cpu"))["device_name"] == record["device_name"]


# ---- the model card -----------------------------------------------------------------------------------------------

def test_the_model_card_tells_the_model_input_training_choice_results_and_origin():
    history = [{"epoch": 1, "val_mae": 3.0}, {"epoch": 2, "val_mae": 2.0}, {"epoch": 3, "val_mae": 2.5}]
    training = {"data": "sha", "format": "shanghaitech", "protocol": None, "seed": 1, "amp": "bf16",
                "device": "cuda", "channels_last": True, "world_size": 2, "epochs": 3, "steps": 30,
                "images_seen": 120, "init_from": "a.pt", "val_fraction": 0.1, "workers": 4}
    checkpoint = Checkpoint("tiny_density", {}, model_kwargs={"width": 4}, recipe={"lr": 0.1}, threshold=0.4,
                            count_scale=0.9, selection=Selection("mae", 2.0, 2), training=training, history=history,
                            results=[{"split": "test", "mae": 2.2}], source={"file": "x.pth"},
                            provenance={"git_commit": "abc"})
    card = checkpoint.model_card()
    assert card == {
        "model": "tiny_density", "options": {"width": 4}, "normalization": ck.imagenet_normalization(),
        "threshold": 0.4, "count_scale": 0.9, "count_floor": 0.0,
        "training": {k: v for k, v in training.items() if k not in ("val_fraction", "workers")},
        "recipe": {"lr": 0.1}, "selection": {"metric": "mae", "best": 2.0, "epoch": 2, "direction": "lower"},
        "selected_row": {"epoch": 2, "val_mae": 2.0}, "results": [{"split": "test", "mae": 2.2}],
        "source": {"file": "x.pth"}, "provenance": {"git_commit": "abc"}}
    # the card is a copy: changing it leaves the checkpoint as it was
    card["options"]["width"] = 99
    card["selected_row"]["val_mae"] = 0.0
    card["source"]["file"] = "y"
    assert checkpoint.model_kwargs == {"width": 4} and history[1]["val_mae"] == 2.0
    assert checkpoint.source["file"] == "x.pth"


def test_a_card_of_converted_weights_leaves_the_training_parts_empty():
    card = Checkpoint("tiny_density", {}, training={"other": 1}, history=[{"epoch": 1}]).model_card()
    assert card["training"] is None and card["recipe"] is None and card["selection"] is None
    assert card["selected_row"] is None and card["source"] is None and card["results"] == []
    assert card["provenance"] == {} and card["threshold"] is None and card["count_scale"] == 1.0


def test_a_card_names_no_selected_row_without_a_selected_epoch_or_a_matching_row():
    history = [{"epoch": 1, "val_mae": 3.0}]
    unvalidated = Checkpoint("tiny_density", {}, selection=Selection("mae"), history=history)
    assert unvalidated.model_card()["selected_row"] is None
    assert unvalidated.model_card()["selection"] == {"metric": "mae", "best": None, "epoch": None,
                                                     "direction": "lower"}
    elsewhere = Checkpoint("tiny_density", {}, selection=Selection("mae", 1.0, 5), history=history)
    assert elsewhere.model_card()["selected_row"] is None
    first = Checkpoint("tiny_density", {}, selection=Selection("mae", 3.0, 1), history=history + [{"epoch": 1}])
    assert first.model_card()["selected_row"] == {"epoch": 1, "val_mae": 3.0}


# ---- loading into a model -----------------------------------------------------------------------------------------

@pytest.fixture
def wide_variant():
    """A second model of the tiny family, like csrnet and csrnet_bn."""
    register_model("tiny_density_wide", family="density", recipe=Recipe(threshold=0.3))(
        lambda pretrained=False, **kw: tiny_family.TinyDensity(**{"width": 16, **kw}))
    register_model("tiny_other_family", family="other", recipe=Recipe(threshold=0.3))(
        lambda pretrained=False, **kw: tiny_family.TinyDensity(**kw))
    yield
    unregister_model("tiny_density_wide")
    unregister_model("tiny_other_family")


def test_loading_state_checks_family_keys_and_shapes(wide_variant):
    from zoo.models.registry import build_model

    weights = tiny_weights()
    model = build_model("tiny_density")
    load_model_state(model, weights, "w.pt")  # a bare state dict, no model named
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    load_model_state(build_model("tiny_density"), Checkpoint("tiny_density_wide", weights), "w.pt")
    load_model_state(build_model("tiny_density"), weights, "w.pt", model_name="tiny_density_wide")
    with pytest.raises(ZooError, match="tiny_other_family"):
        load_model_state(build_model("tiny_density"), Checkpoint("tiny_other_family", weights), "w.pt")
    with pytest.raises(ZooError, match="tiny_other_family"):
        load_model_state(build_model("tiny_density"), weights, "w.pt", model_name="tiny_other_family")
    # an unregistered module is checked by its tensors only
    load_model_state(tiny_family.TinyDensity(), Checkpoint("tiny_other_family", weights), "w.pt")

    missing = {k: v for k, v in weights.items() if k != "head.2.bias"}
    with pytest.raises(ZooError, match="head.2.bias"):
        load_model_state(build_model("tiny_density"), missing, "w.pt")
    with pytest.raises(ZooError, match="extra.weight"):
        load_model_state(build_model("tiny_density"), {**weights, "extra.weight": torch.zeros(1)}, "w.pt")
    with pytest.raises(ZooError, match="head.2.weight"):
        load_model_state(build_model("tiny_density"), {**weights, "head.2.weight": torch.zeros(1, 4, 1, 1)}, "w.pt")
    with pytest.raises(ZooError, match="w.pt"):
        load_model_state(build_model("tiny_density", width=4), weights, "w.pt")


def test_a_model_from_a_checkpoint_is_rebuilt_with_its_options_scale_and_eval_mode(tmp_path, wide_variant):
    weights = tiny_weights(width=4)
    Checkpoint("tiny_density", weights, model_kwargs={"width": 4}, count_scale=0.5).save(tmp_path / "a.pt",
                                                                                         for_inference=True)
    model, checkpoint = model_from_checkpoint(tmp_path / "a.pt")
    assert model.registry_name == "tiny_density" and model.registry_kwargs == {"width": 4}
    assert model.count_scale == 0.5 and isinstance(model.count_scale, float) and not model.training
    assert checkpoint.notes == [] and all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    # another model of the same family, with the recorded options
    wide, _ = model_from_checkpoint(tmp_path / "a.pt", "tiny_density_wide")
    assert wide.registry_name == "tiny_density_wide" and wide.registry_kwargs == {"width": 4}
    with pytest.raises(ZooError, match="tiny_other_family"):
        model_from_checkpoint(tmp_path / "a.pt", "tiny_other_family")
    # options asked for add to the recorded ones
    Checkpoint("tiny_density", tiny_weights(batch_norm=True)).save(tmp_path / "bn.pt", for_inference=True)
    model, _ = model_from_checkpoint(tmp_path / "bn.pt", options={"batch_norm": True})
    assert model.registry_kwargs == {"batch_norm": True}


def test_options_the_weights_imply_win_and_are_noted_once_each(tmp_path, monkeypatch):
    def implied_options(state, name):
        return {"batch_norm": "backbone.1.running_mean" in state}

    monkeypatch.setattr(tiny_family, "implied_options", implied_options, raising=False)
    Checkpoint("tiny_density", tiny_weights(batch_norm=True)).save(tmp_path / "bn.pt", for_inference=True)
    model, checkpoint = model_from_checkpoint(tmp_path / "bn.pt")
    assert model.registry_kwargs == {"batch_norm": True} and len(checkpoint.notes) == 1
    assert str(tmp_path / "bn.pt") in checkpoint.notes[0] and "batch_norm=True" in checkpoint.notes[0]
    # recorded already: built with it, nothing to tell
    Checkpoint("tiny_density", tiny_weights(batch_norm=True), model_kwargs={"batch_norm": True}).save(
        tmp_path / "recorded.pt", for_inference=True)
    model, checkpoint = model_from_checkpoint(tmp_path / "recorded.pt")
    assert model.registry_kwargs == {"batch_norm": True} and checkpoint.notes == []
    # implied over a contradicting record
    Checkpoint("tiny_density", tiny_weights(), model_kwargs={"batch_norm": True}).save(
        tmp_path / "wrong.pt", for_inference=True)
    model, checkpoint = model_from_checkpoint(tmp_path / "wrong.pt")
    assert model.registry_kwargs == {"batch_norm": False} and "batch_norm=False" in checkpoint.notes[0]
    # asked against the weights: refused
    with pytest.raises(ZooError, match="batch_norm"):
        model_from_checkpoint(tmp_path / "bn.pt", options={"batch_norm": False})
    model, _ = model_from_checkpoint(tmp_path / "bn.pt", options={"width": 8})
    assert model.registry_kwargs == {"width": 8, "batch_norm": True}


def test_a_model_is_put_on_the_asked_device(tmp_path):
    Checkpoint("tiny_density", tiny_weights()).save(tmp_path / "a.pt", for_inference=True)
    model, _ = model_from_checkpoint(tmp_path / "a.pt", device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    assert math.isclose(model.count_scale, 1.0)
