"""The reference worker: real-time video effects in torch, on CUDA when present, else the CPU.

Serve one effect, or a chain of them with per-stage parameters::

    byockit-worker serve byockit.worker.reference:Cartoon
    byockit-worker serve byockit.worker.reference:effects

A chain's parameters (the start params, ``/stream/params`` or the control
channel), here a cartoon look graded warm over a keyed-out green screen::

    {"stages": [
        {"effect": "chroma_key", "key_color": "#00ff00", "background": "#202040"},
        {"effect": "cartoon", "levels": 6, "smoothing": 2},
        {"effect": "grade", "temperature": 0.3, "lut": "teal_orange"}
    ]}

The effects (each also a processor of its own, taking its stage's
parameters without ``"effect"``): ``sketch`` (:class:`Sketch`), ``cartoon``
(:class:`Cartoon`), ``grade`` (:class:`ColorGrade`), ``pixelate``
(:class:`Pixelate`) and ``chroma_key`` (:class:`ChromaKey`). All take
float32 ``CHW`` frames on the GPU when there is one, work on one frame at
a time (no batch), reuse their buffers from frame to frame, and check
their parameters when they arrive, so a bad value is refused with a
message naming it while the stream goes on with the previous ones.

The model loader serves your own exported torch model instead
(TorchScript or ``torch.export``): :class:`ModelProcessor` in code, or
:class:`Model`, configured by ``BYOCKIT_MODEL_*`` environment variables::

    BYOCKIT_MODEL_PATH=model.pt2 byockit-worker serve byockit.worker.reference:Model

This subpackage needs torch (``byockit-worker[torch]``); the rest of
:mod:`byockit.worker` does not import it.
"""

from byockit.worker.reference.cartoon import Cartoon, CartoonParams
from byockit.worker.reference.chain import EFFECTS, MAX_STAGES, Chain, ChainParams
from byockit.worker.reference.chroma_key import ChromaKey, ChromaKeyParams
from byockit.worker.reference.effect import Effect, Stage
from byockit.worker.reference.grade import ColorGrade, GradeParams
from byockit.worker.reference.model import Model, ModelProcessor
from byockit.worker.reference.pixelate import Pixelate, PixelateParams
from byockit.worker.reference.sketch import Sketch, SketchParams

effects = Chain
"""``byockit-worker serve byockit.worker.reference:effects`` serves the chain."""

__all__ = [
    "EFFECTS",
    "MAX_STAGES",
    "Cartoon",
    "CartoonParams",
    "Chain",
    "ChainParams",
    "ChromaKey",
    "ChromaKeyParams",
    "ColorGrade",
    "Effect",
    "GradeParams",
    "Model",
    "ModelProcessor",
    "Pixelate",
    "PixelateParams",
    "Sketch",
    "SketchParams",
    "Stage",
    "effects",
]
