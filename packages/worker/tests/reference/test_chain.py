"""``Chain`` (served as ``byockit.worker.reference:effects``): stages in order, their parameters.

A chain must give what its effects give one after the other, refuse bad
parameters naming the stage's field (``stages[1].levels``), and keep its
stages' buffers when its parameters change.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from byockit.worker.cli import load_processor
from byockit.worker.frames import Frame
from byockit.worker.processor import ParamsRejected, ProcessorRuntime, StreamContext
from byockit.worker.reference import (
    MAX_STAGES,
    Cartoon,
    CartoonParams,
    Chain,
    ChainParams,
    ColorGrade,
    Effect,
    GradeParams,
    Pixelate,
    PixelateParams,
)

H, W = 32, 48


def image(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed))


def run(processor: Chain | Effect[Any], data: torch.Tensor, params: object) -> torch.Tensor:
    stream = StreamContext("s", params, send_data=lambda _: None, send_event=lambda _: None)
    out = processor.process(Frame(data, 0, 0, stream))
    assert isinstance(out, torch.Tensor)
    return out.clone()


def parse(raw: dict[str, Any]) -> ChainParams:
    params = ProcessorRuntime.wrap(Chain).parse_params(raw).processor
    assert isinstance(params, ChainParams)
    return params


def test_the_cli_target_serves_the_chain() -> None:
    assert load_processor("byockit.worker.reference:effects") is Chain
    runtime = ProcessorRuntime.wrap(load_processor("byockit.worker.reference:effects"))
    assert runtime.processor.params_type is ChainParams


def test_the_default_chain_is_a_cartoon() -> None:
    assert parse({}).stages == [{"effect": "cartoon"}]
    assert torch.equal(run(Chain(), image(), parse({})), run(Cartoon(), image(), CartoonParams()))


def test_stages_run_in_order_each_with_its_own_parameters() -> None:
    params = parse(
        {
            "stages": [
                {"effect": "pixelate", "block_size": 8},
                {"effect": "grade", "saturation": 0.0},
                {"effect": "grade", "contrast": 2.0},
            ]
        }
    )
    expected = run(Pixelate(), image(), PixelateParams(block_size=8))
    expected = run(ColorGrade(), expected, GradeParams(saturation=0.0))
    expected = run(ColorGrade(), expected, GradeParams(contrast=2.0))
    out = run(Chain(), image(), params)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out[0], out[2])  # grey, in blocks
    assert len(torch.unique(out[0])) <= (H // 8) * (W // 8)


def test_no_stages_pass_frames_through() -> None:
    frame = image()
    stream = StreamContext(
        "s", parse({"stages": []}), send_data=lambda _: None, send_event=lambda _: None
    )
    assert Chain().process(Frame(frame, 0, 0, stream)) is frame


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        (
            [{"effect": "cartoon"}, {"effect": "cartoon", "levels": 99}],
            "parameter 'stages[1].levels' must be between 2 and 32, got 99",
        ),
        (
            [{"effect": "pixelate", "block_size": "big"}],
            "parameter 'stages[0].block_size' must be an integer",
        ),
        (
            [{"effect": "sketch"}, {"effect": "grade", "saturaton": 1}],
            "unknown parameter 'stages[1].saturaton'",
        ),
        (
            [{"effect": "blur"}],
            "parameter 'stages[0].effect' must be one of 'sketch', 'cartoon', 'grade', "
            "'pixelate', 'chroma_key', got 'blur'",
        ),
        ([{"levels": 3}], "parameter 'stages[0].effect' is missing"),
        (["cartoon"], "parameter 'stages[0]' must be an object"),
        (
            [{"effect": "chroma_key", "key_color": "green"}],
            "parameter 'stages[0].key_color' must be a colour like '#00ff00', got 'green'",
        ),
        (
            [{"effect": "grade", "lut": "sepia"}],
            "parameter 'stages[0].lut' must be a built-in LUT",
        ),
        (
            [{"effect": "pixelate"}] * (MAX_STAGES + 1),
            f"parameter 'stages' has {MAX_STAGES + 1} stages; a chain runs at most {MAX_STAGES}",
        ),
    ],
)
def test_bad_stages_are_refused_naming_the_field(stages: list[object], message: str) -> None:
    with pytest.raises(ParamsRejected) as refused:
        parse({"stages": stages})
    assert refused.value.message.startswith(message)


def test_the_most_stages_are_accepted() -> None:
    params = parse({"stages": [{"effect": "grade", "brightness": 0.01}] * MAX_STAGES})
    out = run(Chain(), torch.full((3, H, W), 0.5), params)
    assert torch.allclose(out, torch.full((3, H, W), 0.5 + 0.01 * MAX_STAGES), atol=1e-5)


def test_new_parameters_reuse_the_stream_s_stages_and_buffers() -> None:
    chain = Chain()
    before = parse({"stages": [{"effect": "cartoon"}, {"effect": "grade", "temperature": 0.5}]})
    first = run(chain, image(), before)
    stages = [stage for stage, _ in chain._state.stages]
    buffers = [stage.buffers.pointers() for stage in stages]

    after = parse({"stages": [{"effect": "grade"}, {"effect": "cartoon", "levels": 3}]})
    out = run(chain, image(), after)
    assert [stage for stage, _ in chain._state.stages] == stages[::-1]  # reordered, not remade
    assert [stage.buffers.pointers() for stage in stages] == buffers
    assert not torch.allclose(out, first)
    assert torch.equal(out, run(Cartoon(), image(), CartoonParams(levels=3)))


def test_a_change_of_frame_size_mid_stream() -> None:
    chain, params = Chain(), parse({"stages": [{"effect": "sketch"}, {"effect": "pixelate"}]})
    for height, width in ((32, 48), (64, 20), (32, 48)):
        frame = torch.rand(3, height, width)
        assert torch.equal(run(chain, frame, params), run(Chain(), frame, params))


def test_a_stream_stop_frees_its_stages() -> None:
    chain = Chain()
    run(chain, image(), parse({}))
    assert chain._state.stages
    chain.on_stream_stop()
    assert not chain._state.stages
    assert torch.equal(run(chain, image(), parse({})), run(Chain(), image(), parse({})))
