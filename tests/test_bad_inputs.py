"""Bad inputs from a new user's trial (issue 13): each is one line naming what is wrong, exit status 2, no
traceback, and nothing is loaded or trained first. Method options are checked against the type and range
declared beside each option."""
from __future__ import annotations

import os

import pytest

from bench.errors import BenchError
from bench.method import METHODS, MethodSpec, parse_methods
from bench.registry import option_rules

RUN = ["--protocol", "setting1", "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke",
       "--executor", "local"]
EVALUATE = ["evaluate", "--checkpoint", "missing.pt", "--arch", "cnn4", "--protocol", "setting1",
            "--dataset", "fashion_mnist", "--partition", "0-5"]


@pytest.fixture
def no_data_loading(monkeypatch):
    """Fails the test if a run gets as far as planning trials (the step before data and training)."""
    import bench.runner

    def refuse(*args, **kwargs):
        raise AssertionError("the bad input was not caught before the run started")

    monkeypatch.setattr(bench.runner, "run", refuse)


@pytest.mark.parametrize("methods, expected", [
    ("cmg_e[sigma=abc]", "cmg_e[sigma=abc]: sigma must be a number > 0 (got 'abc')"),
    ("cmg_e[sigma=-5]", "cmg_e[sigma=-5]: sigma must be a number > 0 (got -5)"),
    ("cmg_e[sigma=]", "sigma must be a number > 0 (got '')"),
    ("cmg_e[sigma=0]", "sigma must be a number > 0"),
    ("cmg_e[sigma=1e999]", "sigma must be a number > 0 (got inf)"),
    ("cmg_e[epochs=0]", "epochs must be an integer >= 1"),
    ("cmg_e[epochs=2.5]", "epochs must be an integer >= 1"),
    ("cmg_e[lr=0]", "lr must be a number > 0"),
    ("cmg_e[pseudo_fraction=1.5]", "pseudo_fraction must be a number in [0, 1]"),
    ("cmg_e[pseudo_fraction=-0.1]", "pseudo_fraction must be a number in [0, 1]"),
    ("cmg_e[temperature=0]", "temperature must be a number > 0"),
    ("cmg_e[z_filter=-1]", "z_filter must be a number >= 0"),
    ("cmg_e[margin_percentiles=(20,180)]", "margin_percentiles must be 2 values in parentheses"),
    ("cmg_e[margin_percentiles=20]", "margin_percentiles must be 2 values in parentheses"),
    ("cmg_e[objective=energyy]", "objective must be one of energy, extra_class"),
    ("cmg_e[training=twostage]", "training must be one of frozen, unfrozen, direct"),
    ("cmg_e[tune=all]", "tune must be one of auto, head, last"),
    ("csi+cmg_e[sigma=-1]", "csi+cmg_e[sigma=-1]: sigma must be"),
    ("cmg_e_direct[net=cac]", "training='direct'"),
    ("react[percentile=0]", "percentile must be a number in (0, 100]"),
    ("react[percentile=101]", "percentile must be a number in (0, 100]"),
    ("knn[k=0]", "k must be an integer >= 1"),
    ("knn[k=five]", "k must be an integer >= 1"),
    ("energy[temperature=-1]", "temperature must be a number > 0"),
    ("odin[epsilon=-0.1]", "epsilon must be a number >= 0"),
    ("openmax[weibull=libMR]", "weibull must be one of libmr, scipy"),
    ("openmax[distance=manhattan]", "distance must be one of euclidean, cosine, eucos"),
    ("openmax[alpha=0]", "alpha must be an integer >= 1"),
    ("openmax[tail_size=-3]", "tail_size must be an integer >= 1"),
    ("csi[ensemble=yes]", "ensemble must be True or False"),
    ("moodcat[test_mask=bogus]", "test_mask must be one of random, fixed, none, or None"),
    ("moodcat[conditional=1]", "conditional must be True or False"),
    ("cmg_e[sigmaa=2]", "has no parameter sigmaa (did you mean sigma?); its parameters are net, objective"),
    ("softmax,softmax", "names softmax more than once"),
    ("csi+cmg_e,cmg_e[net=csi]", "names csi+cmg_e more than once"),
    ("energy,cmg_e[sigma=2],cmg_e[sigma=2]", "names cmg_e[sigma=2] more than once"),
])
def test_bad_method_option_stops_the_run_before_it_starts(one_line_error, no_data_loading, methods, expected):
    line = one_line_error(["run", "--methods", methods, *RUN])
    assert expected in line


@pytest.mark.parametrize("argv, expected", [
    (["run", "--methods", "softmax", *RUN, "--seeds", "99999999999999999999"], "argument --seeds: a seed must be"),
    (["run", "--methods", "softmax", *RUN, "--seeds", ""], "argument --seeds: give at least one seed"),
    (["run", "--methods", "softmax", *RUN, "--seeds", "-1"], "argument --seeds: a seed must be an integer from 0"),
    (["run", "--methods", "softmax", *RUN, "--seeds", "0,one"], "argument --seeds"),
    (["run", "--methods", "softmax"], "the following arguments are required: --protocol"),
    ([*EVALUATE, "--width", "-4"], "argument --width: must be an integer >= 1"),
    ([*EVALUATE, "--width", "0"], "argument --width: must be an integer >= 1"),
    ([*EVALUATE, "--test-limit", "0"], "argument --test-limit: must be an integer >= 1"),
    ([*EVALUATE, "--train-limit", "-10"], "argument --train-limit: must be an integer >= 1"),
    ([*EVALUATE, "--seed", "-1"], "argument --seed: a seed must be"),
    ([*EVALUATE, "--mean", "0.5", "--std", "0"], "--std values must be > 0"),
    ([*EVALUATE, "--methods", "react[percentile=-1]"], "percentile must be a number in (0, 100]"),
    (["compare", "cmg_e", "energy", "--seed", "99999999999999999999"], "argument --seed: a seed must be"),
])
def test_bad_flag_is_one_line(one_line_error, no_data_loading, argv, expected):
    assert expected in one_line_error(argv)


@pytest.mark.parametrize("argv, expected", [
    (["table", "1", "--metric", "nosuch"], "unknown metric 'nosuch'; choose one of auroc"),
    (["table", "2", "--metric", "nosuch"], "unknown metric 'nosuch'; choose one of auroc"),
    (["table", "ood", "--metric", "accuracy"], "unknown OOD metric 'accuracy'; choose one of auroc"),
    (["table", "1", "--spread", "seeds"], "unknown spread 'seeds'"),
    (["compare", "cmg_e", "energy", "--metric", "nosuch"], "unknown metric 'nosuch'"),
])
def test_a_bad_metric_is_named_even_without_results(one_line_error, tmp_path, argv, expected):
    """The metric is checked before the store: an empty store must not hide the bad metric behind 'no results'."""
    assert expected in one_line_error([*argv, "--out", str(tmp_path / "empty")])


def _with_output(command: str, store, output) -> list[str]:
    prefix = ["leaderboard", "--out", str(store)] if command == "leaderboard" else EVALUATE
    return [*prefix, "--output", str(output)]


@pytest.mark.parametrize("command", ["leaderboard", "evaluate"])
def test_output_naming_a_folder(one_line_error, tmp_path, command):
    line = one_line_error(_with_output(command, tmp_path, tmp_path))
    assert f"--output {tmp_path} is a folder; name a file in it" in line


@pytest.mark.parametrize("command", ["leaderboard", "evaluate"])
def test_output_under_a_file(one_line_error, tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line_error(_with_output(command, tmp_path, blocker / "out.md"))
    assert "cannot write --output" in line and f"{blocker} is a file" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_output_in_a_read_only_folder(one_line_error, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    line = one_line_error(["leaderboard", "--out", str(tmp_path), "--output", str(locked / "board.md")])
    assert "cannot write the --output file" in line


@pytest.mark.parametrize("text, label", [
    ("cmg_e[sigma=3]", "cmg_e[sigma=3]"),
    ("cmg_e[sigma=0.5,pseudo_fraction=0.1]", "cmg_e[pseudo_fraction=0.1,sigma=0.5]"),
    ("cmg_e[epochs=3,lr=0.001]", "cmg_e[epochs=3,lr=0.001]"),
    ("cmg_e[epochs=None]", "cmg_e[epochs=None]"),
    ("cmg_e[margin_percentiles=(10,90)]", "cmg_e[margin_percentiles=(10, 90)]"),
    ("cmg_e[margin_percentiles=(10, 90),sigma=1]", "cmg_e[margin_percentiles=(10, 90),sigma=1]"),
    ("cmg_e[pseudo_fraction=0]", "cmg_e[pseudo_fraction=0]"),
    ("cmg_e[tune=last,objective=extra_class]", "cmg_e[objective=extra_class,tune=last]"),
    ("csi+cmg_e", "csi+cmg_e"),
    ("react[percentile=85]", "react[percentile=85]"),
    ("react[percentile=100]", "react[percentile=100]"),
    ("openmax[weibull=scipy]", "openmax[weibull=scipy]"),
    ("openmax[distance=cosine,alpha=2]", "openmax[alpha=2,distance=cosine]"),
    ("knn[k=1]", "knn[k=1]"),
    ("odin[epsilon=0]", "odin[epsilon=0]"),
    ("csi[ensemble=False]", "csi[ensemble=False]"),
    ("moodcat[mask=fixed]", "moodcat[mask=fixed]"),
    ("moodcat[test_mask=none]", "moodcat[test_mask=none]"),
    ("energy[net=cac]", "energy[net=cac]"),
])
def test_good_options_still_parse(text, label):
    (spec,) = parse_methods(text)
    assert spec.label == label
    assert parse_methods(spec.label) == [spec]  # the canonical label reads back as the same method
    spec.build()


def test_a_tuple_option_reaches_the_detector():
    (spec,) = parse_methods("cmg_e[margin_percentiles=(10,90)]")
    assert spec.build().margin_percentiles == (10, 90)


def test_only_none_falls_through_to_the_recipe():
    from bench.recipes import recipe_for

    recipe = recipe_for("smoke", (1, 28, 28), augment=False)
    default = MethodSpec("cmg_e").build()._stage(recipe)
    tuned = MethodSpec("cmg_e", (("epochs", 3), ("lr", 0.01))).build()._stage(recipe)
    assert (tuned.epochs, tuned.lr) == (3, 0.01) and tuned.batch_size == default.batch_size
    with pytest.raises(BenchError, match="epochs must be an integer >= 1"):
        MethodSpec("cmg_e", (("epochs", 0),)).build()


@pytest.mark.parametrize("name", METHODS.names())
def test_every_option_has_a_checkable_type_and_valid_defaults(name):
    """Every option of every registered method has a supported annotation, and its defaults (and the
    variant's own) pass their declarations; otherwise a new method would fail only at run time."""
    entry = METHODS.get(name)
    rules = option_rules(entry.cls)
    assert set(rules) == set(entry.parameters())
    for key, value in entry.parameters().items():
        words, accepts = rules[key]
        assert accepts(value), f"{name}: default {key}={value!r} is not {words}"
    MethodSpec(name).build()
