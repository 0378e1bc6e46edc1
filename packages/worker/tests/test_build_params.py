"""build_params: strict parsing of nested processor parameters, errors naming the field's path."""

from __future__ import annotations

import dataclasses

import pytest

from byockit.worker import ParamsRejected, build_params


@dataclasses.dataclass
class Stage:
    a: int = 1
    name: str = "x"


@dataclasses.dataclass
class Pipeline:
    stages: list[Stage] = dataclasses.field(default_factory=list)
    gain: float = 1.0


def test_nested_params_are_built_with_defaults() -> None:
    built = build_params(Pipeline, {"stages": [{"a": 2}, {"name": "y"}], "gain": 2})
    assert built == Pipeline([Stage(2, "x"), Stage(1, "y")], 2.0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"stages": [{"a": 1}, {"a": "x"}]}, r"parameter 'stages\[1\]\.a' must be an integer"),
        ({"stages": [{"b": 1}]}, r"stages\[0\]\.b"),
        ({"stages": {"a": 1}}, r"'stages' must be"),
        ({"gain": "loud"}, r"'gain' must be a number"),
    ],
)
def test_errors_name_the_field(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ParamsRejected, match=message):
        build_params(Pipeline, raw)  # type: ignore[arg-type]


def test_where_prefixes_every_error() -> None:
    with pytest.raises(ParamsRejected, match=r"stages\[2\]\.a"):
        build_params(Stage, {"a": "x"}, where="stages[2]")
    with pytest.raises(ParamsRejected, match=r"stages\[2\] must be a JSON object"):
        build_params(Stage, [1], where="stages[2]")  # type: ignore[arg-type]


def test_a_class_that_is_not_params_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        build_params(int, {})
