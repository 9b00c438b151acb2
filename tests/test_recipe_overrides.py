"""Recipe overrides: `--recipe table.field=value` or a TOML file reaches exactly the models and trials it changes."""
from __future__ import annotations

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.method import MethodSpec
from bench.protocol import PROTOCOLS
from bench.recipes import overrides_text, parse_overrides, recipe_for
from bench.runner import plan
from bench.shared_models import classifier, csi, mcd

METHODS = [MethodSpec("softmax"), MethodSpec("cmg_e"), MethodSpec("energy", (("net", "cac"),))]


@pytest.fixture(scope="module")
def task():
    return PROTOCOLS.get("setting1").tasks(["fashion_mnist"], ["0-5"])[0]


def _planned(task, *specs):
    trials, jobs = plan([task], METHODS, [0], "demo", parse_overrides(list(specs)))
    return {t.method.label: t.trial_id for t in trials}, {kind: key for kind, key in jobs}


def test_an_override_changes_the_keys_and_trial_ids_it_reaches_and_no_others(task):
    trials, models = _planned(task)
    cvae_trials, cvae_models = _planned(task, "cvae.epochs=9")
    assert cvae_models["cvae"] != models["cvae"]
    assert {k: v for k, v in cvae_models.items() if k != "cvae"} == {k: v for k, v in models.items() if k != "cvae"}
    assert cvae_trials["cmg_e"] != trials["cmg_e"]
    assert cvae_trials["softmax"] == trials["softmax"] and cvae_trials["energy[net=cac]"] == trials["energy[net=cac]"]

    stage2_trials, stage2_models = _planned(task, "cmg.epochs=3")  # CMG's own stage: no model retrains
    assert stage2_models == models
    assert stage2_trials["cmg_e"] != trials["cmg_e"] and stage2_trials["softmax"] == trials["softmax"]

    nested_trials, nested_models = _planned(task, "cac.stage.epochs=5")
    assert nested_models["cac"] != models["cac"] and nested_models["classifier"] == models["classifier"]
    assert nested_trials["energy[net=cac]"] != trials["energy[net=cac]"]


def test_an_override_equal_to_the_recipe_changes_nothing_and_is_not_recorded(task):
    assert _planned(task, "classifier.epochs=3") == _planned(task)
    trials, _ = plan([task], METHODS, [0], "demo", parse_overrides(["classifier.epochs=3,cvae.epochs=5"]))
    assert {t.method.label: overrides_text(t.recipe.overrides) for t in trials} == {
        "softmax": "", "cmg_e": "cvae.epochs=5", "energy[net=cac]": ""}


def test_a_recipe_file_gives_the_same_trial_ids_as_the_flags(task, tmp_path):
    path = tmp_path / "longer.toml"
    path.write_text("[classifier]\nepochs = 30\nlr = 5e-4\n\n[cvae]\nwidth = 32\n\n[cac.stage]\nepochs = 6\n")
    assert _planned(task, str(path)) == _planned(task, "classifier.epochs=30,classifier.lr=0.0005,cvae.width=32",
                                                 "cac.stage.epochs=6")
    assert overrides_text(parse_overrides([str(path)])) == \
        "cac.stage.epochs=6,classifier.epochs=30,classifier.lr=0.0005,cvae.width=32"


def test_later_overrides_win_and_values_take_the_fields_types():
    overrides = parse_overrides(["classifier.epochs=4,classifier.width=none", "classifier.epochs=7,csi.pretrain.lr=1"])
    recipe = recipe_for("demo", (1, 28, 28), overrides=overrides)
    stage = classifier.stage(recipe)
    assert (stage.epochs, stage.width) == (7, None)
    assert recipe.pick(csi.RECIPES).pretrain.lr == 1.0 and isinstance(recipe.pick(csi.RECIPES).pretrain.lr, float)
    assert recipe_for("demo", (1, 28, 28)).pick(csi.RECIPES).pretrain.epochs == 4  # the table itself is untouched


def test_fields_checked_against_each_other_are_set_together_in_any_order(task):
    """MCD's pretrain_epochs must stay below stage.epochs: raising both at once is valid whichever sorts first."""
    overrides = parse_overrides(["mcd.pretrain_epochs=7,mcd.stage.epochs=8"])
    part = recipe_for("demo", (1, 28, 28), overrides=overrides).pick(mcd.RECIPES)
    assert (part.pretrain_epochs, part.stage.epochs) == (7, 8)
    trials, _ = plan([task], [MethodSpec("mcd")], [0], "demo", overrides)
    assert overrides_text(trials[0].recipe.overrides) == "mcd.pretrain_epochs=7,mcd.stage.epochs=8"
    with pytest.raises(BenchError, match=r"mcd\.pretrain_epochs=3: pretrain_epochs must be below stage\.epochs \(3\)"):
        plan([task], [MethodSpec("mcd")], [0], "demo", parse_overrides(["mcd.pretrain_epochs=3"]))


def test_the_dataset_choice_of_augmentation_can_be_overridden():
    recipe = recipe_for("demo", (3, 32, 32), augment=True, overrides=parse_overrides(["classifier.augment=false"]))
    assert classifier.stage(recipe).augment is False
    assert classifier.stage(recipe_for("demo", (3, 32, 32), augment=True)).augment is True


@pytest.mark.parametrize("spec, message", [
    ("classifer.epochs=3", "recipe table 'classifer' is not implemented. Did you mean classifier"),
    ("classifier.epoch=3", "classifier has no field 'epoch'; its fields: arch, width, epochs"),
    ("classifier.epochs=abc", "classifier.epochs=abc: expected int"),
    ("classifier.epochs=2.5", "expected int"),
    ("classifier.lr=inf", "expected float"),
    ("classifier.augment=maybe", "expected bool"),
    ("classifier", "write <table>.<field>=<value>"),
    ("classifier.epochs.x=1", "epochs is a value, not a group of fields"),
    ("missing.toml", "recipe file missing.toml does not exist"),
])
def test_bad_names_and_types_are_one_line_errors(spec, message):
    with pytest.raises(BenchError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_overrides([spec])


@pytest.mark.parametrize("spec, message", [
    ("classifier.epochs=0", "epochs must be > 0"),
    ("classifier.optimizer=rmsprop", "optimizer must be one of adam, sgd"),
    ("moodcat.generator.g_lr=-1", "g_lr must be > 0"),
    ("osrci.open_set.arch=cnn9", "must stay None: the K.1 classifier is a copy of C_K"),
    ("cac.low_lr.epochs=3", "low_lr is not used at this scale"),
    ("cmg.batch_size=-1", "batch_size must be > 0"),
])
def test_bad_values_fail_when_planned_before_anything_runs(task, spec, message):
    with pytest.raises(BenchError, match=message):
        plan([task], [MethodSpec("softmax")], [0], "demo", parse_overrides([spec]))


def test_a_bad_recipe_file_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text("[classifier\nepochs = 3\n")
    assert main(["run", "--methods", "softmax", "--protocol", "setting1", "--recipe", str(path),
                 "--out", str(tmp_path / "out")]) == 2
    assert "is not valid TOML" in capsys.readouterr().err


def test_runs_record_only_the_overrides_that_reach_them_and_tables_select_by_recipe(tmp_path, smoke_cache, capsys):
    common = ["--protocol", "setting1", "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke",
              "--executor", "local", "--out", str(tmp_path), "--cache", smoke_cache]
    assert main(["run", "--methods", "softmax,cmg_e", *common]) == 0
    assert main(["run", "--methods", "softmax,cmg_e", "--recipe", "cmg.epochs=2", *common]) == 0
    from bench.store import ResultStore

    frame = ResultStore(tmp_path).frame()
    assert sorted(zip(frame["method"], frame["overrides"])) == [("cmg_e", ""), ("cmg_e", "cmg.epochs=2"),
                                                                ("softmax", "")]
    capsys.readouterr()
    assert main(["table", "1", "--out", str(tmp_path), "--recipe", "cmg.epochs=2"]) == 0
    with_override = capsys.readouterr().out
    assert main(["table", "1", "--out", str(tmp_path)]) == 0
    default = capsys.readouterr().out
    cmg = {row.overrides: f"{row.auroc * 100:.1f}" for row in frame[frame["method"] == "cmg_e"].itertuples()}
    assert cmg["cmg.epochs=2"] in with_override and cmg[""] in default and "softmax" in with_override
    capsys.readouterr()
    assert main(["table", "1", "--out", str(tmp_path), "--recipe", "cmg.epochs=1"]) == 0  # the smoke recipe's own
    assert capsys.readouterr().out == default
