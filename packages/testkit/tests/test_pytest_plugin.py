"""The pytest plugin as a user meets it: test files that use only its fixtures, run by pytest.

Each test writes a user's project (test file, pytest settings) with
``pytester`` and runs pytest on it in a subprocess (as a user's CI would),
the plugin loaded from its entry point. Every user project gets a conftest
that fails a test's teardown if anything the fixtures started (tasks,
threads, sockets) outlives them.
The faults themselves are tested in ``test_pytest_plugin_faults.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).parents[3] / "examples" / "test_with_testkit.py"

NOTHING_LEFT_BEHIND = '''
import asyncio, contextlib, os, threading

import pytest_asyncio


def sockets():
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def threads():
    # asyncio_N: the loop's default executor, which the loop itself shuts down
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


@pytest_asyncio.fixture(autouse=True, loop_scope="function")
async def nothing_left_behind():
    """Set up first, torn down last: after every byockit fixture let go."""
    tasks, started, open_sockets = asyncio.all_tasks(), threads(), sockets()
    yield

    def leftovers():
        tasks_now = asyncio.all_tasks() - tasks - {asyncio.current_task()}
        return (tasks_now, threads() - started, sockets() - open_sockets)

    for _ in range(100):  # things being closed get a moment
        if leftovers() == (set(), set(), 0):
            return
        await asyncio.sleep(0.05)
    tasks, threads_, open_sockets = leftovers()
    assert not tasks and not threads_ and open_sockets <= 0, leftovers()
'''

USER_TESTS = """
import asyncio

import pytest


def invert(frame):
    return 255 - frame.data


async def test_the_network_is_up(trickle_server, orchestrator, gateway, client):
    assert orchestrator.trickle is trickle_server
    assert gateway.orchestrators == (orchestrator,)
    assert client.urls == (gateway.url,)


async def test_a_clip_through_the_processor(worker, orchestrator, test_clip):
    served = await worker(invert, capability="negative")
    assert orchestrator.registrations["negative"].url == served.server.url
    frames = await served.process(test_clip)
    indexes = [test_clip.index_of(frame) for frame in frames]
    assert indexes == sorted(set(indexes)) and indexes[-1] == test_clip.count - 1
    await served.wait_idle()


async def test_status_params_and_a_restart_through_the_client(worker, client, faults):
    served = await worker(invert)
    session = await client.start(served.capability, {"brightness": 1})
    async with asyncio.timeout(20):
        while await session.status() is None:
            await asyncio.sleep(0.05)
    await faults.restart()
    await session.stop()
"""


def user_project(pytester: pytest.Pytester, mode: str, **files: str) -> None:
    pytester.makeini(f"""
        [pytest]
        asyncio_mode = {mode}
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
        """)
    pytester.makeconftest(NOTHING_LEFT_BEHIND)
    pytester.makepyfile(**files)


def run(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")


def in_strict_mode(source: str) -> str:
    return source + "\npytestmark = pytest.mark.asyncio\n"


def test_the_example_passes_as_a_users_test_file(pytester: pytest.Pytester) -> None:
    user_project(pytester, "auto", test_example=EXAMPLE.read_text())
    run(pytester).assert_outcomes(passed=2)


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_every_fixture_in_each_asyncio_mode(pytester: pytest.Pytester, mode: str) -> None:
    source = USER_TESTS if mode == "auto" else in_strict_mode(USER_TESTS)
    user_project(pytester, mode, test_user=source)
    run(pytester).assert_outcomes(passed=3)


def test_unmarked_async_tests_are_not_run_in_strict_mode(pytester: pytest.Pytester) -> None:
    user_project(pytester, "strict", test_user=USER_TESTS)
    result = run(pytester)
    assert result.parseoutcomes().get("passed", 0) == 0


def test_fixtures_clean_up_after_a_failing_test(pytester: pytest.Pytester) -> None:
    user_project(
        pytester,
        "auto",
        test_user="""
        import asyncio


        def invert(frame):
            return 255 - frame.data


        async def test_fails_mid_stream(worker, client, gateway, faults, test_clip):
            served = await worker(invert)
            session = await client.start(served.capability)
            stream = await gateway.stream(session.stream_id)
            publishing = asyncio.create_task(stream.publish(test_clip.frames()))
            faults.delay(stream.channels["publish_url"], 1.0)
            async for frame in stream.output_frames():
                assert frame is None, "failing with everything running"
            await publishing
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*failing with everything running*"])


MISSING_WORKER = """
import sys

sys.modules["byockit.worker"] = None  # as if byockit-worker were not installed


async def test_uses_it(worker):
    await worker(print)
"""
MISSING_CLIENT = """
import sys

sys.modules["byockit.client"] = None  # as if byockit-client were not installed


async def test_uses_it(client):
    pass
"""


@pytest.mark.parametrize(
    ("source", "extra", "outcome"),
    [(MISSING_WORKER, "worker", "failed"), (MISSING_CLIENT, "client", "errors")],
)
def test_a_missing_extra_is_named(
    pytester: pytest.Pytester, source: str, extra: str, outcome: str
) -> None:
    user_project(pytester, "auto", test_user=source)
    result = run(pytester)
    result.assert_outcomes(**{outcome: 1})
    assert f"byockit-{extra} is not installed" in result.stdout.str()
    assert f"pip install 'byockit-testkit[{extra}]'" in result.stdout.str()


def test_the_test_clip_marker_shapes_the_clip(pytester: pytest.Pytester) -> None:
    user_project(
        pytester,
        "auto",
        test_user="""
        import pytest


        def test_default(test_clip):
            assert (test_clip.count, test_clip.width, test_clip.height) == (60, 160, 96)


        @pytest.mark.test_clip(seconds=1, fps=10, width=64, height=48, gop_seconds=0.5)
        def test_shaped(test_clip):
            assert (test_clip.count, test_clip.width, test_clip.height) == (10, 64, 48)
            assert len(test_clip.segments) == 2
            frame = next(test_clip.frames())
            assert test_clip.index_of(frame) == 0


        @pytest.mark.test_clip(fps=0)
        def test_refused(test_clip):
            pass
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ValueError: fps must be at least 1, got 0*"])


def test_faults_are_removed_at_teardown(pytester: pytest.Pytester) -> None:
    user_project(
        pytester,
        "auto",
        test_user="""
        used = []


        async def test_arms_faults(faults):
            used.append(faults)
            faults.delay("a", 1.0)
            faults.drop("b")
            with faults.answer_470("c") as fault:
                assert fault.active
            assert not fault.active
            assert len(faults.active) == 2


        def test_none_is_left():
            assert used[0].active == ()
        """,
    )
    run(pytester).assert_outcomes(passed=2)
