"""The BYOCKIT_MODEL_* environment variables: parsed, checked, and what a user sees when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from byockit.protocol.errors import ParseError
from byockit.worker.cli import main
from byockit.worker.frames import Frame
from byockit.worker.processor import StreamContext
from byockit.worker.reference.model import Model
from byockit.worker.reference.model_settings import ENVIRONMENT, ModelSettings

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


class Negative(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 255 - x


def test_only_the_path_is_required() -> None:
    settings = ModelSettings.from_env({"BYOCKIT_MODEL_PATH": "/models/x.pt", "UNRELATED": "1"})
    assert settings == ModelSettings(Path("/models/x.pt"))
    assert (settings.layout, settings.dtype, settings.value_range) == ("NCHW", "float32", (0, 1))
    assert (settings.resolution, settings.half, settings.compile) == (None, False, False)
    assert settings.device == "auto"


def test_every_variable_is_read() -> None:
    settings = ModelSettings.from_env(
        {
            "BYOCKIT_MODEL_PATH": " /models/x.pt2 ",
            "BYOCKIT_MODEL_LAYOUT": "NHWC",
            "BYOCKIT_MODEL_DTYPE": "float32",
            "BYOCKIT_MODEL_RANGE": "-1, 1",
            "BYOCKIT_MODEL_RESOLUTION": "640x360",
            "BYOCKIT_MODEL_HALF": "true",
            "BYOCKIT_MODEL_COMPILE": "1",
            "BYOCKIT_MODEL_DEVICE": "cuda:1",
        }
    )
    assert settings == ModelSettings(
        Path("/models/x.pt2"),
        layout="NHWC",
        dtype="float32",
        value_range=(-1.0, 1.0),
        resolution=(640, 360),
        half=True,
        compile=True,
        device="cuda:1",
    )


def test_uint8_ranges_over_0_255_and_empty_variables_count_as_unset() -> None:
    settings = ModelSettings.from_env(
        {"BYOCKIT_MODEL_PATH": "m.pt", "BYOCKIT_MODEL_DTYPE": "uint8", "BYOCKIT_MODEL_HALF": ""}
    )
    assert (settings.value_range, settings.half) == ((0, 255), False)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("BYOCKIT_MODEL_PATH", "", r"not set: .* \(e.g. BYOCKIT_MODEL_PATH=/models/model.pt\)"),
        ("BYOCKIT_MODEL_LAYOUT", "nchw", r"expected NCHW or NHWC, got 'nchw' \(e.g. .*=NCHW\)"),
        ("BYOCKIT_MODEL_DTYPE", "fp16", r"expected float32 or uint8, got 'fp16'"),
        ("BYOCKIT_MODEL_RANGE", "0-1", r"two numbers 'low,high' .* \(e.g. .*=0,1\)"),
        ("BYOCKIT_MODEL_RANGE", "1,0", r"low < high, got '1,0'"),
        ("BYOCKIT_MODEL_RANGE", "0,inf", r"finite"),
        ("BYOCKIT_MODEL_RESOLUTION", "512", r"WIDTHxHEIGHT .* \(e.g. .*=512x512\)"),
        ("BYOCKIT_MODEL_RESOLUTION", "0x512", r"WIDTHxHEIGHT"),
        ("BYOCKIT_MODEL_HALF", "maybe", r"1/0, true/false.* got 'maybe' \(e.g. .*=1\)"),
        ("BYOCKIT_MODEL_COMPILE", "2", r"1/0, true/false"),
        ("BYOCKIT_MODEL_DEVICE", "gpu", r"auto, cpu, cuda or cuda:N, got 'gpu' \(e.g. .*=cuda\)"),
    ],
)
def test_a_bad_variable_is_named_with_an_example(variable: str, value: str, message: str) -> None:
    environ = {"BYOCKIT_MODEL_PATH": "/models/x.pt", variable: value}
    with pytest.raises(ParseError, match=message) as caught:
        ModelSettings.from_env(environ)
    assert caught.value.field == variable


def test_a_range_uint8_cannot_have_is_refused() -> None:
    environ = {
        "BYOCKIT_MODEL_PATH": "m.pt",
        "BYOCKIT_MODEL_DTYPE": "uint8",
        "BYOCKIT_MODEL_RANGE": "0,1",
    }
    with pytest.raises(ParseError, match=r"uint8 takes values 0\.\.255") as caught:
        ModelSettings.from_env(environ)
    assert caught.value.field == "BYOCKIT_MODEL_RANGE"


def test_every_setting_has_a_variable() -> None:
    fields = [field.name for field in ModelSettings.__attrs_attrs__]
    assert list(ENVIRONMENT) == fields


def test_model_is_configured_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "negative.pt"
    torch.jit.save(torch.jit.script(Negative()), str(path))
    monkeypatch.setenv("BYOCKIT_MODEL_PATH", str(path))
    monkeypatch.setenv("BYOCKIT_MODEL_LAYOUT", "NHWC")
    monkeypatch.setenv("BYOCKIT_MODEL_DTYPE", "uint8")
    monkeypatch.setenv("BYOCKIT_MODEL_DEVICE", "cpu")
    model = Model()
    assert model.frame_format.layout == "HWC"
    assert model.frame_format.dtype == "uint8"
    model.load()
    frame = torch.randint(0, 256, (8, 10, 3), dtype=torch.uint8)
    stream = StreamContext("s", None, send_data=lambda _: None, send_event=lambda _: None)
    assert torch.equal(model.process(Frame(frame, 0, 0, stream)), 255 - frame)


def test_serving_model_without_its_path_exits_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BYOCKIT_MODEL_PATH", raising=False)
    monkeypatch.delenv("ORCH_URL", raising=False)
    assert main(["serve", "byockit.worker.reference.model:Model", "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert "BYOCKIT_MODEL_PATH" in error
    assert "e.g. BYOCKIT_MODEL_PATH=/models/model.pt" in error
