"""Every numeric setting of every config model has its valid range; out-of-range values stop a command before
it writes anything."""

from __future__ import annotations

import types
import typing

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from curation.config import CurateConfig
from inference.config import SampleConfig, StoryScript
from pipelines.cli import main
from training.config import PrecomputeConfig, TrainConfig

BOUNDS = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt, annotated_types.Interval)


def unbounded(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of the numeric fields (ints and floats, also inside tuples, lists, dicts, unions and nested
    models) of ``model`` that carry no ge/gt/le/lt constraint."""
    out = []
    for name, info in model.model_fields.items():
        out += _unbounded_type(info.annotation, info.metadata, f"{prefix}{name}")
    return out


def _unbounded_type(tp, metadata, where: str) -> list[str]:
    if typing.get_origin(tp) is typing.Annotated:
        base, *extra = typing.get_args(tp)
        extra = [m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e])]
        return _unbounded_type(base, [*metadata, *extra], where)
    if tp in (int, float):
        return [] if any(isinstance(m, BOUNDS) for m in metadata) else [where]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return unbounded(tp, where + ".")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return [w for a in args if a is not type(None) for w in _unbounded_type(a, metadata, where)]
    if origin in (tuple, list, dict):
        items = args[1:] if origin is dict else args
        return [w for i, a in enumerate(items) if a is not Ellipsis for w in _unbounded_type(a, [], f"{where}[{i}]")]
    return []  # str, bool, Literal, ...


@pytest.mark.parametrize("model", [CurateConfig, TrainConfig, PrecomputeConfig, SampleConfig, StoryScript])
def test_every_numeric_setting_has_a_range(model):
    assert unbounded(model) == []


def test_the_range_check_sees_unbounded_fields():
    class Loose(BaseModel):
        a: int = 1
        b: tuple[float, float] = (0.0, 1.0)
        c: dict[str, float] | None = None

    assert unbounded(Loose) == ["a", "b[0]", "b[1]", "c[0]"]


@pytest.mark.parametrize(
    "setting",
    ["scenes.window=-1", "export.short_side=0", "export.crf=999", "filters.min_shot_s=-5", "scenes.threshold=1.5"],
)
def test_out_of_range_settings_stop_curate_before_it_writes(setting, tmp_path, capsys):
    film = tmp_path / "film.mp4"
    film.write_bytes(b"not read: the config is checked first")
    out = tmp_path / "ds"
    assert main(["curate", str(film), "--out", str(out), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("filmweaver: error: invalid config:")
    assert setting.split("=")[0] in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--set", "optim.lr=0"],
        ["train", "--set", "optim.betas=[0.9, 1.5]"],
        ["train", "--set", "distributed.num_workers=0"],
        ["precompute", "x", "--out", "unused", "--set", "height=0"],
        ["sample", "--checkpoint", "m", "--script", "s.yaml", "--out", "unused", "--set", "num_steps=0"],
    ],
)
def test_out_of_range_settings_of_the_model_commands(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("shots: [{prompt: a man walks}]\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("filmweaver: error: invalid config:") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]  # nothing written
