"""The effects on synthetic pictures drawn here: what each one must do to them, and frame handling.

Each effect runs through :meth:`Effect.process`, as the worker calls it,
on images whose right answer is known from how they were drawn (a square's
edges, flat colours, exact block means, a key colour), never on recorded
outputs.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import pytest
import torch

from byockit.protocol.errors import MediaError
from byockit.worker.frames import Frame, FrameFormat
from byockit.worker.processor import ParamsRejected, ProcessorRuntime, StreamContext
from byockit.worker.reference import (
    EFFECTS,
    Cartoon,
    CartoonParams,
    ChromaKey,
    ChromaKeyParams,
    ColorGrade,
    Effect,
    GradeParams,
    Pixelate,
    PixelateParams,
    Sketch,
    SketchParams,
)
from byockit.worker.reference.assets import Assets

H, W = 48, 64
TOP, BOTTOM, LEFT, RIGHT = 12, 36, 16, 48
"""The square drawn in :func:`square`: rows TOP..BOTTOM-1, columns LEFT..RIGHT-1."""


def stream(params: object) -> StreamContext:
    return StreamContext("s", params, send_data=lambda _: None, send_event=lambda _: None)


def process(effect: Effect[Any], data: torch.Tensor, params: object) -> torch.Tensor:
    """One frame through the effect; a copy (the effect reuses its output buffer)."""
    result = effect.process(Frame(data, 0, 0, stream(params)))
    assert isinstance(result, torch.Tensor)
    return result.clone()


def square(
    inside: float = 0.9, outside: float = 0.1, height: int = H, width: int = W
) -> torch.Tensor:
    """A grey square on a grey ground, float32 (3, H, W)."""
    image = torch.full((3, height, width), outside)
    image[:, TOP:BOTTOM, LEFT:RIGHT] = inside
    return image


def band(distance: int) -> torch.Tensor:
    """(H, W) mask of the pixels within ``distance`` of the square's outline (its edge pixels)."""
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[TOP - distance : BOTTOM + distance, LEFT - distance : RIGHT + distance] = True
    mask[TOP + distance : BOTTOM - distance, LEFT + distance : RIGHT - distance] = False
    return mask


def outline() -> torch.Tensor:
    """(H, W) mask of the pixels on both sides of the square's sides, corners left out."""
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[TOP - 1 : TOP + 1, LEFT + 1 : RIGHT - 1] = True
    mask[BOTTOM - 1 : BOTTOM + 1, LEFT + 1 : RIGHT - 1] = True
    mask[TOP + 1 : BOTTOM - 1, LEFT - 1 : LEFT + 1] = True
    mask[TOP + 1 : BOTTOM - 1, RIGHT - 1 : RIGHT + 1] = True
    return mask


def inner_part() -> torch.Tensor:
    """(H, W) mask of the square's inside, two pixels clear of its edge."""
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[TOP + 2 : BOTTOM - 2, LEFT + 2 : RIGHT - 2] = True
    return mask


def noisy(seed: int = 0, height: int = H, width: int = W) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


# --- sketch ---------------------------------------------------------------------------------


def test_sketch_draws_the_square_s_outline_on_blank_paper() -> None:
    out = process(Sketch(), square(), SketchParams(shading=0.0))
    assert torch.equal(out[0], out[1])  # pencil is grey
    assert torch.equal(out[1], out[2])
    lines = out[0]
    assert lines[outline()].max() < 0.05  # solid dark lines along every side
    far = ~band(3)
    assert torch.allclose(lines[far], torch.ones(()), atol=1e-6)  # nothing else drawn


def test_sketch_shading_keeps_the_tones_and_invert_draws_light_lines() -> None:
    shaded = process(Sketch(), square(0.9, 0.1), SketchParams(shading=0.5))[0]
    far = ~band(3)
    inside = far & inner_part()
    assert torch.allclose(shaded[inside], torch.tensor(0.5 + 0.5 * 0.9), atol=1e-5)
    assert torch.allclose(shaded[far & ~inside], torch.tensor(0.5 + 0.5 * 0.1), atol=1e-5)

    chalk = process(Sketch(), square(), SketchParams(shading=0.0, invert=True))[0]
    assert chalk[outline()].min() > 0.95
    assert torch.allclose(chalk[far], torch.zeros(()), atol=1e-6)


def test_sketch_strength_blends_with_the_original() -> None:
    image = noisy()
    assert torch.allclose(process(Sketch(), image, SketchParams(strength=0.0)), image)
    full = process(Sketch(), image, SketchParams(strength=1.0))
    half = process(Sketch(), image, SketchParams(strength=0.5))
    assert torch.allclose(half, (image + full) / 2, atol=1e-6)


# --- cartoon --------------------------------------------------------------------------------


def test_cartoon_quantises_each_channel_to_its_levels() -> None:
    ramp = torch.linspace(0, 1, W).expand(3, H, W).contiguous()
    for levels in (2, 4, 7):
        out = process(Cartoon(), ramp, CartoonParams(levels=levels, edges=0.0, smoothing=0))
        values = torch.unique(out[0])
        assert len(values) == levels
        assert torch.allclose(values, torch.linspace(0, 1, levels), atol=1e-6)
    out = process(Cartoon(), noisy(), CartoonParams(levels=3, edges=0.0, smoothing=2))
    assert set(torch.unique(out).tolist()) <= {0.0, 0.5, 1.0}


def test_cartoon_outlines_the_square_and_leaves_its_areas_flat() -> None:
    out = process(Cartoon(), square(0.85, 0.15), CartoonParams(levels=6, edges=1.0))
    assert out[:, outline()].max() < 0.05  # dark outline on both sides of the edge
    outside = ~band(2) & ~inner_part()
    assert torch.allclose(out[:, inner_part()], torch.tensor(0.8), atol=1e-6)  # 0.85 -> 4/5
    assert torch.allclose(out[:, outside], torch.tensor(0.2), atol=1e-6)  # 0.15 -> 1/5
    faint = process(Cartoon(), square(0.85, 0.15), CartoonParams(levels=6, edges=0.5))
    flat = process(Cartoon(), square(0.85, 0.15), CartoonParams(levels=6, edges=0.0))
    assert torch.allclose(faint[:, outline()], 0.5 * flat[:, outline()], atol=1e-6)


def test_cartoon_smoothing_flattens_noise_but_keeps_the_edge() -> None:
    generator = torch.Generator().manual_seed(3)
    image = square(0.7, 0.3) + 0.03 * torch.randn(3, H, W, generator=generator)
    params = CartoonParams(levels=32, edges=0.0, smoothing=0)
    rough = process(Cartoon(), image, params)
    smooth = process(Cartoon(), image, CartoonParams(levels=32, edges=0.0, smoothing=3))
    for area in (inner_part(), ~band(2) & ~inner_part()):  # inside and outside the square
        assert smooth[:, area].std(dim=1).max() < 0.6 * rough[:, area].std(dim=1).min()
    inside, outside = smooth[:, TOP + 4, LEFT + 4 : RIGHT - 4], smooth[:, TOP - 4, LEFT:RIGHT]
    assert inside.mean() - outside.mean() > 0.35  # the 0.4 step is not smoothed away


def test_cartoon_smooths_a_one_pixel_wide_frame() -> None:
    column = noisy(height=32, width=1) * 0.1 + 0.45
    rough = process(Cartoon(), column, CartoonParams(levels=32, edges=0.0, smoothing=0))
    smooth = process(Cartoon(), column, CartoonParams(levels=32, edges=0.0, smoothing=3))
    assert smooth.std() < 0.6 * rough.std()


# --- pixelate -------------------------------------------------------------------------------


def block_means(image: torch.Tensor, block: int) -> torch.Tensor:
    """Each block's pixels replaced by their mean, block by block (edge blocks cut short)."""
    expected = torch.empty_like(image)
    for top in range(0, image.shape[1], block):
        for left in range(0, image.shape[2], block):
            cell = image[:, top : top + block, left : left + block]
            expected[:, top : top + block, left : left + block] = cell.mean(
                dim=(1, 2), keepdim=True
            )
    return expected


@pytest.mark.parametrize(
    ("height", "width", "block"), [(48, 64, 16), (50, 70, 16), (30, 20, 8), (10, 12, 32)]
)
def test_pixelate_gives_uniform_blocks_of_their_mean(height: int, width: int, block: int) -> None:
    image = noisy(height=height, width=width)
    out = process(Pixelate(), image, PixelateParams(block_size=block))
    assert torch.allclose(out, block_means(image, block), atol=1e-6)
    assert len(torch.unique(out[0])) == -(-height // block) * -(-width // block)


# --- chroma key -----------------------------------------------------------------------------

GREEN, SHADOW, RED = (0.0, 1.0, 0.0), (0.05, 0.65, 0.05), (0.8, 0.3, 0.2)


def screen() -> torch.Tensor:
    """Green screen on the left (with a darker fold at the bottom), a red subject on the right."""
    image = torch.empty(3, H, W)
    image[:, :, : W // 2] = torch.tensor(GREEN)[:, None, None]
    image[:, H // 2 :, : W // 2] = torch.tensor(SHADOW)[:, None, None]
    image[:, :, W // 2 :] = torch.tensor(RED)[:, None, None]
    return image


def test_chroma_key_replaces_the_screen_and_keeps_the_subject() -> None:
    image = screen()
    out = process(ChromaKey(), image, ChromaKeyParams(background="#204080"))
    background = torch.tensor([0x20, 0x40, 0x80]) / 255
    assert torch.allclose(out[:, :, : W // 2], background[:, None, None], atol=1e-6)  # fold too
    assert torch.allclose(out[:, :, W // 2 :], image[:, :, W // 2 :], atol=1e-6)


def test_chroma_key_softness_blends_colours_near_the_key() -> None:
    image = torch.tensor(RED)[:, None, None].expand(3, H, W).contiguous()
    hard = process(ChromaKey(), image, ChromaKeyParams(tolerance=0.0, softness=0.0))
    assert torch.allclose(hard, image, atol=1e-6)
    soft = process(ChromaKey(), image, ChromaKeyParams(tolerance=0.0, softness=1.0))
    share = soft / image  # over black: the share of the foreground kept
    assert share.min() > 0.05
    assert share.max() < 0.95
    assert torch.allclose(share, share[0, 0, 0], atol=1e-5)  # one alpha for all channels


def write_picture(path: Path, rgb: np.ndarray[Any, np.dtype[np.uint8]]) -> Path:
    with av.open(str(path), "w") as container:
        video = container.add_stream("png")
        video.width, video.height, video.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
        for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            container.mux(packet)
    return path


def test_chroma_key_background_picture_covers_the_frame(tmp_path: Path) -> None:
    picture = np.zeros((H // 2, W // 2, 3), np.uint8)
    picture[:, : W // 4] = (0, 0, 255)  # blue on the left half, yellow on the right
    picture[:, W // 4 :] = (255, 255, 0)
    path = write_picture(tmp_path / "bg.png", picture)
    image = torch.tensor(GREEN)[:, None, None].expand(3, H, W).contiguous()
    out = process(ChromaKey(), image, ChromaKeyParams(background=str(path)))
    blue, yellow = torch.tensor([0.0, 0, 1]), torch.tensor([1.0, 1, 0])
    assert torch.allclose(out[:, :, : W // 2 - 4], blue[:, None, None], atol=1e-5)
    assert torch.allclose(out[:, :, W // 2 + 4 :], yellow[:, None, None], atol=1e-5)


def test_a_background_picture_deleted_after_it_was_accepted_stays(tmp_path: Path) -> None:
    path = write_picture(tmp_path / "bg.png", np.full((H, W, 3), (0, 0, 255), np.uint8))
    effect = ChromaKey()
    params = ProcessorRuntime.wrap(effect).parse_params({"background": str(path)}).processor
    path.unlink()
    image = torch.tensor(GREEN)[:, None, None].expand(3, H, W).contiguous()
    out = process(effect, image, params)
    assert torch.allclose(out, torch.tensor([0.0, 0, 1])[:, None, None], atol=1e-5)


def test_chroma_key_refuses_bad_colours_and_unreadable_pictures(tmp_path: Path) -> None:
    runtime = ProcessorRuntime.wrap(ChromaKey)
    with pytest.raises(ParamsRejected, match=r"'key_color' must be a colour like '#00ff00'"):
        runtime.parse_params({"key_color": "green"})
    with pytest.raises(ParamsRejected, match=r"'background' must be a colour like .*'#12345'"):
        runtime.parse_params({"background": "#12345"})
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(ParamsRejected, match=r"'background' .*notes\.txt.*not a readable image"):
        runtime.parse_params({"background": str(text)})


# --- frames in every format -----------------------------------------------------------------

CASES: list[tuple[type[Effect[Any]], object]] = [
    (Sketch, SketchParams()),
    (Cartoon, CartoonParams()),
    (ColorGrade, GradeParams(temperature=0.5, lut="teal_orange")),
    (Pixelate, PixelateParams(block_size=8)),
    (ChromaKey, ChromaKeyParams(key_color="#ff0000", tolerance=0.3)),
]


def test_every_effect_is_tested_here() -> None:
    assert {effect for effect, _ in CASES} == set(EFFECTS.values())


@pytest.mark.parametrize(("effect", "params"), CASES, ids=lambda case: getattr(case, "name", ""))
@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_uint8_and_float_frames_in_either_layout(
    effect: type[Effect[Any]], params: object, layout: Literal["CHW", "HWC"]
) -> None:
    """Every dtype and layout gives what the native float32 CHW frame gives."""
    rgb = (noisy() * 255).round().to(torch.uint8)  # (3, H, W)
    processor = effect()
    processor.frame_format = FrameFormat.torch(dtype="uint8", layout=layout, device="cpu")
    for chw, native in (
        (rgb, rgb.float() * (1 / 255)),  # the scaling FrameIO applies to uint8
        (rgb.float() / 255, rgb.float() / 255),
        (rgb.double() / 255, rgb.float() / 255),
    ):
        expected = process(effect(), native, params)
        data = chw.permute(1, 2, 0) if layout == "HWC" else chw
        out = process(processor, data, params)
        assert out.dtype == data.dtype
        assert out.shape == data.shape
        out_chw = out.permute(2, 0, 1) if layout == "HWC" else out
        if data.dtype == torch.uint8:
            assert torch.equal(out_chw, (expected * 255 + 0.5).clamp(0, 255).to(torch.uint8))
        else:
            assert torch.allclose(out_chw.float(), expected, atol=1e-6)


def test_unfit_frames_are_refused_with_what_was_expected() -> None:
    params = PixelateParams()
    with pytest.raises(
        MediaError, match=r"expected a \(3, H, W\) RGB frame, got shape \(1, 3, 8, 8\)"
    ):
        process(Pixelate(), torch.zeros(1, 3, 8, 8), params)
    with pytest.raises(
        MediaError, match=r"expected a uint8 or floating point frame, got torch\.int32"
    ):
        process(Pixelate(), torch.zeros(3, 8, 8, dtype=torch.int32), params)
    with pytest.raises(MediaError, match="expected a torch tensor frame, got ndarray"):
        Pixelate().process(Frame(np.zeros((8, 8, 3), np.uint8), 0, 0, stream(params)))
    with pytest.raises(TypeError, match=r"Pixelate needs .*PixelateParams.* got CartoonParams"):
        process(Pixelate(), torch.zeros(3, 8, 8), CartoonParams())


# --- buffers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("effect", "params"), CASES, ids=lambda case: getattr(case, "name", ""))
def test_no_new_buffers_after_the_first_frame(effect: type[Effect[Any]], params: object) -> None:
    stage = effect.stage_type(Assets())
    with torch.inference_mode():
        first = stage.apply(noisy(0), params)
        buffers = stage.buffers.pointers()
        for seed in (1, 2, 3):
            out = stage.apply(noisy(seed), params)
            assert out.data_ptr() == first.data_ptr()
            assert stage.buffers.pointers() == buffers
    processor = effect()  # and through the processor, converting uint8 frames both ways
    frames = [(noisy(seed) * 255).to(torch.uint8) for seed in range(4)]
    results = [processor.process(Frame(data, 0, 0, stream(params))) for data in frames]
    assert all(isinstance(result, torch.Tensor) for result in results)
    assert len({result.data_ptr() for result in results if isinstance(result, torch.Tensor)}) == 1


@pytest.mark.parametrize(("effect", "params"), CASES, ids=lambda case: getattr(case, "name", ""))
def test_the_frame_size_can_change_mid_stream(effect: type[Effect[Any]], params: object) -> None:
    processor = effect()
    sizes = [(48, 64), (30, 40), (64, 48), (48, 64)]
    for number, (height, width) in enumerate(sizes):
        image = noisy(number, height, width)
        out = process(processor, image, params)
        assert torch.allclose(out, process(effect(), image, params), atol=1e-6)


def test_streams_in_their_own_threads_keep_their_own_stages() -> None:
    """One processor serves every stream, each in its own thread, at its own size."""
    processor = Cartoon()
    params = CartoonParams()
    sizes = [(48, 64), (36, 80), (64, 32)]
    expected = [process(Cartoon(), noisy(n, *size), params) for n, size in enumerate(sizes)]
    failures: list[str] = []
    start = threading.Barrier(len(sizes))

    def serve(number: int) -> None:
        start.wait()
        for _ in range(5):
            out = process(processor, noisy(number, *sizes[number]), params)
            if not torch.allclose(out, expected[number], atol=1e-6):
                failures.append(f"stream {number}")

    threads = [threading.Thread(target=serve, args=(n,)) for n in range(len(sizes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
