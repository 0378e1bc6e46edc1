"""``grade``: the colour controls, the built-in looks and ``.cube`` files written here.

Colours go in and come out as numbers: each control and look is checked on
colours whose result follows from its definition (a lattice point of a LUT
comes back exactly as the table holds it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from byockit.worker.frames import Frame, FrameFormat
from byockit.worker.processor import ParamsRejected, ProcessorRuntime, StreamContext
from byockit.worker.reference import ColorGrade, GradeParams

H, W = 8, 12


def graded(colors: list[tuple[float, float, float]], params: GradeParams) -> torch.Tensor:
    """Each colour (a float32 pixel) through ``grade``: a (N, 3) tensor."""
    image = torch.tensor(colors).T.reshape(3, 1, len(colors)).expand(3, H, len(colors))
    stream = StreamContext("s", params, send_data=lambda _: None, send_event=lambda _: None)
    out = ColorGrade().process(Frame(image.contiguous(), 0, 0, stream))
    assert isinstance(out, torch.Tensor)
    return out[:, H // 2].T.clone()


def rgb(*values: float) -> torch.Tensor:
    return torch.tensor(values)


def test_identity_parameters_leave_uint8_frames_unchanged() -> None:
    processor = ColorGrade()
    processor.frame_format = FrameFormat.torch(dtype="uint8", layout="HWC", device="cpu")
    pixels = torch.randint(0, 256, (H, W, 3), dtype=torch.uint8)
    stream = StreamContext("s", GradeParams(), send_data=lambda _: None, send_event=lambda _: None)
    out = processor.process(Frame(pixels, 0, 0, stream))
    assert isinstance(out, torch.Tensor)
    assert (out.int() - pixels.int()).abs().max() <= 1


def test_temperature_warms_towards_red_and_cools_towards_blue() -> None:
    grey = (0.5, 0.5, 0.5)
    warm, cool = (
        graded([grey], GradeParams(temperature=0.8)),
        graded([grey], GradeParams(temperature=-0.8)),
    )
    assert torch.allclose(warm[0], rgb(0.6, 0.5, 0.4), atol=1e-6)  # gains 1 +- 0.25 * 0.8
    assert torch.allclose(cool[0], rgb(0.4, 0.5, 0.6), atol=1e-6)


def test_contrast_stretches_around_mid_grey() -> None:
    colors = [(0.25, 0.5, 0.75), (0.4, 0.45, 0.55)]
    doubled = graded(colors, GradeParams(contrast=2.0))
    assert torch.allclose(doubled, torch.tensor([(0.0, 0.5, 1.0), (0.3, 0.4, 0.6)]), atol=1e-6)
    flat = graded(colors, GradeParams(contrast=0.0))
    assert torch.allclose(flat, torch.full((2, 3), 0.5), atol=1e-6)


def test_saturation_moves_colours_to_and_from_their_luma() -> None:
    color = (0.6, 0.4, 0.3)
    luma = 0.299 * 0.6 + 0.587 * 0.4 + 0.114 * 0.3
    grey = graded([color], GradeParams(saturation=0.0))[0]
    assert torch.allclose(grey, torch.full((3,), luma), atol=1e-6)
    vivid = graded([color], GradeParams(saturation=2.0))[0]
    assert torch.allclose(vivid - luma, 2 * (torch.tensor(color) - luma), atol=1e-6)


def test_brightness_adds_and_results_stay_in_range() -> None:
    out = graded([(0.2, 0.5, 0.9)], GradeParams(brightness=0.25))[0]
    assert torch.allclose(out, rgb(0.45, 0.75, 1.0), atol=1e-6)


# --- LUTs -----------------------------------------------------------------------------------


def smoothstep(x: float) -> float:
    return x * x * (3 - 2 * x)


def test_built_in_looks_map_known_colours() -> None:
    black, white, grey, red = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), (1.0, 0.0, 0.0)
    warm = graded([black, white, grey], GradeParams(lut="warm"))
    assert torch.allclose(
        warm, torch.tensor([black, white, (0.5**0.85, 0.5**0.95, 0.5**1.2)]), atol=1e-5
    )
    cool = graded([grey], GradeParams(lut="cool"))[0]
    assert torch.allclose(cool, rgb(0.5**1.2, 0.5**1.02, 0.5**0.85), atol=1e-5)
    noir = graded([red, grey], GradeParams(lut="noir"))
    luma = 0.299
    assert torch.allclose(
        noir[0], torch.full((3,), luma + 0.6 * (smoothstep(luma) - luma)), atol=1e-5
    )
    assert torch.allclose(noir[1], torch.full((3,), 0.5), atol=1e-5)
    teal_orange = graded([black, white, grey], GradeParams(lut="teal_orange"))
    assert torch.allclose(teal_orange[:2], torch.tensor([black, white]), atol=1e-5)
    assert torch.allclose(teal_orange[2], rgb(0.5, 0.5 + 0.1 * 0.35, 0.5), atol=1e-5)


def test_lut_amount_blends_the_look_with_the_ungraded_colour() -> None:
    colors = [(0.9, 0.2, 0.1), (0.3, 0.6, 0.8)]
    plain = torch.tensor(colors)
    assert torch.allclose(graded(colors, GradeParams(lut="noir", lut_amount=0.0)), plain, atol=1e-6)
    full = graded(colors, GradeParams(lut="noir"))
    half = graded(colors, GradeParams(lut="noir", lut_amount=0.5))
    assert torch.allclose(half, (plain + full) / 2, atol=1e-6)


Color = tuple[float, float, float]


def swap(r: float, g: float, b: float) -> Color:
    return b, g, r


def identity(r: float, g: float, b: float) -> Color:
    return r, g, b


def cube(
    path: Path, size: int, look: Callable[[float, float, float], Color], header: str = ""
) -> Path:
    """A ``.cube`` file whose output at each lattice point (r, g, b) (0 to 1) is ``look``'s."""
    lines = ['TITLE "written by a test"', f"LUT_3D_SIZE {size}", header]
    steps = [i / (size - 1) for i in range(size)]
    for b in steps:  # blue slowest, red fastest
        for g in steps:
            for r in steps:
                lines.append(" ".join(f"{v:.6f}" for v in look(r, g, b)))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_cube_file_is_loaded_and_applied(tmp_path: Path) -> None:
    path = cube(tmp_path / "swap.cube", 2, swap)  # linear, so exact between lattice points
    colors = [(0.8, 0.3, 0.1), (0.2, 0.7, 0.4)]
    out = graded(colors, GradeParams(lut=str(path)))
    assert torch.allclose(out, torch.tensor(colors).flip(1), atol=1e-6)


def test_a_cube_domain_maps_inputs_onto_the_lattice(tmp_path: Path) -> None:
    """With the domain 0..2, input x falls on the lattice at x / 2: an identity table halves it."""
    halve = cube(tmp_path / "halve.cube", 3, identity, "DOMAIN_MIN 0 0 0\nDOMAIN_MAX 2 2 2")
    out = graded([(0.8, 0.3, 0.1)], GradeParams(lut=str(halve)))[0]
    assert torch.allclose(out, rgb(0.4, 0.15, 0.05), atol=1e-6)


def test_a_cube_file_edited_in_place_is_read_again(tmp_path: Path) -> None:
    path = cube(tmp_path / "look.cube", 2, swap)
    processor, color = ColorGrade(), [(0.8, 0.3, 0.1)]
    runtime = ProcessorRuntime.wrap(processor)
    stream = StreamContext("s", None, send_data=lambda _: None, send_event=lambda _: None)
    image = torch.tensor(color).T.reshape(3, 1, 1).expand(3, 2, 2).contiguous()
    for expected, rewrite in (((0.1, 0.3, 0.8), None), ((0.8, 0.3, 0.1), identity)):
        if rewrite is not None:
            cube(path, 2, rewrite)
            os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1_000_000_000))
        stream.params = runtime.parse_params({"lut": str(path)}).processor  # a new update
        out = processor.process(Frame(image, 0, 0, stream))
        assert isinstance(out, torch.Tensor)
        assert torch.allclose(out[:, 0, 0], torch.tensor(expected), atol=1e-6)


def test_a_cube_file_deleted_after_it_was_accepted_keeps_its_look(tmp_path: Path) -> None:
    path = cube(tmp_path / "look.cube", 2, swap)
    processor = ColorGrade()
    runtime = ProcessorRuntime.wrap(processor)
    stream = StreamContext("s", None, send_data=lambda _: None, send_event=lambda _: None)
    stream.params = runtime.parse_params({"lut": str(path)}).processor  # accepted
    path.unlink()
    image = torch.tensor([(0.8, 0.3, 0.1)]).T.reshape(3, 1, 1).expand(3, 2, 2).contiguous()
    for _ in range(2):
        out = processor.process(Frame(image, 0, 0, stream))
        assert isinstance(out, torch.Tensor)
        assert torch.allclose(out[:, 0, 0], torch.tensor((0.1, 0.3, 0.8)), atol=1e-6)
    with pytest.raises(ParamsRejected, match="No such file"):
        runtime.parse_params({"lut": str(path)})  # named again: refused


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0 0 0\n", "line 1: table data before LUT_3D_SIZE"),
        ("TITLE x\nLUT_3D_SIZE 2\n", 'line 1: TITLE must be followed by a "quoted" title'),
        ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 7, "expected 8 table rows for size 2, found 7"),
        ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 9, "line 10: more than 8 table rows for size 2"),
        ("LUT_3D_SIZE 2\n" + "0 0 0\n" * 7 + "0 zero 0\n", "line 9: expected 3 numbers"),
        ("LUT_3D_SIZE 2\n" + "0 0\n" * 8, "line 2: expected 3 numbers, got '0 0'"),
        ("LUT_3D_SIZE 99\n", "line 1: LUT_3D_SIZE must be one integer from 2 to 65"),
        ("LUT_1D_SIZE 16\n", "line 1: this is a 1D LUT; only 3D LUTs are supported"),
        ("LUT_3D_SIZE 2\nLUT_3D_SIZE 2\n", "line 2: LUT_3D_SIZE given twice"),
        (
            "LUT_3D_SIZE 2\n" + "0 0 0\n" * 8 + "DOMAIN_MIN 0 0 0\n",
            "line 10: keyword DOMAIN_MIN after",
        ),
        (
            "LUT_3D_SIZE 2\nDOMAIN_MIN 1 0 0\n" + "0 0 0\n" * 8,
            "the domain minimum (1.0, 0.0, 0.0) is not below",
        ),
        ("LUT_3D_SIZE 2\nGAMMA 2.2\n", "line 2: unknown keyword 'GAMMA'"),
        ('TITLE "no table"\n', "no LUT_3D_SIZE line: not a 3D .cube LUT"),
    ],
)
def test_a_bad_cube_file_is_refused_naming_the_parameter_and_the_line(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "bad.cube"
    path.write_text(text)
    runtime = ProcessorRuntime.wrap(ColorGrade)
    with pytest.raises(ParamsRejected) as refused:
        runtime.parse_params({"lut": str(path)})
    message = refused.value.message
    assert message.startswith(
        "parameter 'lut' must be a built-in LUT (cool, noir, teal_orange, warm)"
    )
    assert f"{str(path)!r}: {reason}" in message


def test_an_unknown_look_or_missing_file_is_refused(tmp_path: Path) -> None:
    runtime = ProcessorRuntime.wrap(ColorGrade)
    with pytest.raises(ParamsRejected, match=r"'lut' .* or a \.cube file: 'sepia': No such file"):
        runtime.parse_params({"lut": "sepia"})
    with pytest.raises(ParamsRejected, match=r"'lut' .*: Is a directory"):
        runtime.parse_params({"lut": str(tmp_path)})
    with pytest.raises(
        ParamsRejected, match=r"parameter 'contrast' must be between 0.0 and 3.0, got 4"
    ):
        runtime.parse_params({"contrast": 4})
