"""``byockit demo``: the whole Livepeer BYOC loop on this machine, in one command.

It brings up, in this process and on loopback, a fake orchestrator with its
trickle server, the reference effects worker (which registers itself with
the orchestrator), and a fake gateway; then a client streams the test
pattern (or a webcam, or a file) through the gateway over WHIP, plays the
processed video back over WHEP, shows both on a preview page, records the
output to MP4, and changes the effect every few seconds through the
gateway's update API. It ends with a summary: frames in and out, latency
p50/p95, dropped frames.

From Python::

    import asyncio
    from byockit.demo import DemoSettings, run_demo

    result = asyncio.run(run_demo(DemoSettings(seconds=10, record=None, preview=False)))
    print(result.summary.frames_out)

From a shell: ``byockit demo --seconds 20`` (``--webcam``, ``--file PATH``,
``--forever``; ``byockit demo --help``).
"""

from byockit.demo.looks import LOOKS, Look
from byockit.demo.network import CAPABILITY, DemoNetwork
from byockit.demo.run import DemoProgress, DemoResult, DemoSettings, run_demo

__version__ = "0.1.0"

__all__ = [
    "CAPABILITY",
    "LOOKS",
    "DemoNetwork",
    "DemoProgress",
    "DemoResult",
    "DemoSettings",
    "Look",
    "run_demo",
]
