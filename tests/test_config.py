"""The shared dataclass-config helpers: YAML + overrides, key/type errors, help text."""
import dataclasses

import pytest

from megasnow.config import ConfigError, apply_overrides, describe_config, dump_config, from_dict, load_config


@dataclasses.dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    paths: list[str] = dataclasses.field(default_factory=list)
    flag: bool = False
    maybe: int | None = None


@dataclasses.dataclass
class Outer:
    optim: Inner = dataclasses.field(default_factory=Inner)
    seed: int = 1


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 5.3e-4\n  paths: [a, b]\nseed: 3\n")
    cfg = load_config(Outer, p, ["optim.steps=7", "optim.flag=true", "optim.maybe=4"])
    assert cfg.optim.lr == pytest.approx(5.3e-4)
    assert cfg.optim.paths == ["a", "b"]
    assert (cfg.optim.steps, cfg.optim.flag, cfg.optim.maybe, cfg.seed) == (7, True, 4, 3)
    again = load_config(Outer, None, [])
    assert again == Outer()
    assert "lr: 0.00053" in dump_config(cfg)


def test_unknown_key_names_it_plainly_with_the_closest_valid_key():
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, {"optim": {"lrr": 1}})
    assert str(e.value) == ("unknown config key optim.lrr; did you mean optim.lr? (valid keys under optim: flag, lr, "
                            "maybe, name, paths, steps)")
    with pytest.raises(ConfigError, match=r"^unknown config key optin; did you mean optim\? \(valid keys under the "
                                          r"top level: optim, seed\)$"):
        from_dict(Outer, {"optin": {}})
    with pytest.raises(ConfigError, match=r"^unknown config key optim\.zzz \(valid keys"):  # nothing close
        from_dict(Outer, {"optim": {"zzz": 1}})


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"optim\.steps: expected an integer"):
        from_dict(Outer, {"optim": {"steps": "many"}})


@dataclasses.dataclass
class Range:
    low: int = 0
    high: int = 10

    def __post_init__(self):
        if self.low > self.high:
            raise ConfigError(f"range.low ({self.low}) must be <= range.high ({self.high})")


@dataclasses.dataclass
class Checked:
    range: Range = dataclasses.field(default_factory=Range)
    seed: int = 1


def test_errors_the_yaml_file_causes_name_the_file_and_override_errors_do_not(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  stpes: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p, ["seed=2"])
    assert str(e.value).startswith(f"{p}: unknown config key optim.stpes; did you mean optim.steps?")
    p.write_text("range:\n  low: 20\n")
    with pytest.raises(ConfigError) as e:
        load_config(Checked, p)
    assert str(e.value) == f"{p}: range.low (20) must be <= range.high (10)"
    assert load_config(Checked, p, ["range.high=30"]).range.low == 20  # an override may complete the file
    p.write_text("seed: 4\n")
    with pytest.raises(ConfigError) as e:  # the override alone is wrong: named as typed, not put on the file
        load_config(Checked, p, ["range.low=50"])
    assert str(e.value) == "range.low (50) must be <= range.high (10)"
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p, ["optim.steps=many"])
    assert str(e.value) == "optim.steps: expected an integer, got 'many'"


def test_override_syntax():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["nonsense"])
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


def test_describe_lists_every_key():
    text = "\n".join(describe_config(Outer))
    for key in ("optim.lr", "optim.steps", "optim.paths", "seed"):
        assert key in text


def test_override_indexes_lists():
    data = {"phases": [{"name": "a", "steps": 5, "schedule": {"max_lr": 1.0}}, {"name": "b", "blend": [{"path": "x"}]}]}
    out = apply_overrides(data, ["phases.0.steps=10", "phases.1.schedule.max_lr=2.5e-4", "phases.1.blend.0.repeat=4",
                                 "phases.0.schedule.max_lr=3"])
    assert out["phases"][0] == {"name": "a", "steps": 10, "schedule": {"max_lr": 3}}
    assert out["phases"][1] == {"name": "b", "blend": [{"path": "x", "repeat": 4}], "schedule": {"max_lr": 2.5e-4}}
    assert data["phases"][0]["steps"] == 5  # the input is not modified
    assert apply_overrides({"tags": ["a", "b"]}, ["tags.1=c"]) == {"tags": ["a", "c"]}


@pytest.mark.parametrize("override,match", [
    ("phases.2.steps=1", r"'phases\.2\.steps': index 2 is out of range, phases has 2 entries \(valid: 0\.\.1\)"),
    ("phases.0.blend.1.path=y", r"index 1 is out of range, phases\[0\]\.blend has 1 entries"),
    ("phases.first.steps=1", r"phases is a list; index it with a number"),
    ("other.0.x=1", r"'other\.0\.x': other has no entries to index"),
    ("phases.0.name.x=1", r"'phases\[0\]\.name' is not a section or a list"),
])
def test_override_list_errors_name_the_key(override, match):
    data = {"phases": [{"name": "a", "blend": [{"path": "x"}]}, {"name": "b"}]}
    with pytest.raises(ConfigError, match=match):
        apply_overrides(data, [override])
