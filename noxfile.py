"""Every routine task of the byockit monorepo.

``nox -s tests`` installs every package editable with its test extras and runs
the whole suite; ``lint``, ``typecheck``, ``demo`` and ``bench`` do what their
names say. Sessions install what they need: nothing relies on what happens to
be installed on the machine.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"

PACKAGES = ("protocol", "testkit", "worker", "client", "byockit")
TORCH = "torch==2.13.0"
"""The pin every test environment installs (a CPU build here); packages declare a range."""
LINT_TOOLS = ("ruff==0.17.6",)
TYPECHECK_TOOLS = ("mypy==2.4.1",)


def install_packages(session: nox.Session, extra: str | None = "test") -> None:
    """Install every byockit package editable (with ``extra``) in one resolver run."""
    suffix = f"[{extra}]" if extra else ""
    args: list[str] = []
    for package in PACKAGES:
        args += ["-e", f"packages/{package}{suffix}"]
    session.install(TORCH, *args)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite (pass pytest arguments after ``--``)."""
    install_packages(session)
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install(*LINT_TOOLS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict on library code (settings in pyproject.toml)."""
    install_packages(session)
    session.install(*TYPECHECK_TOOLS)
    session.run(
        "mypy",
        "packages/protocol/src",
        "packages/testkit/src",
        "packages/worker/src",
        "packages/client/src",
        "packages/byockit/src",
    )
    session.run("mypy", "benchmarks", "examples")


@nox.session
def demo(session: nox.Session) -> None:
    """The whole loop on loopback: client -> gateway -> orchestrator -> worker and back.

    Arguments after ``--`` go to ``byockit demo`` (``--seconds``, ``--webcam``...).
    """
    install_packages(session, extra=None)
    session.run("byockit", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; results are written to benchmarks/results/.

    Arguments after ``--`` go to the trickle relay benchmark. The worker
    benchmark runs pytrickle 0.1.6 side by side with byockit, in an
    environment of its own (pytrickle pins torch and PyAV; left to itself pip
    picks a PyAV that fails to build), kept in nox's cache between runs.
    """
    install_packages(session, extra=None)
    session.run("python", "-m", "benchmarks.trickle_relay", *session.posargs)
    pytrickle_python = session.cache_dir / "pytrickle-0.1.6" / "bin" / "python"
    if not pytrickle_python.exists():
        session.run("python", "-m", "venv", str(pytrickle_python.parent.parent))
    session.run(
        str(pytrickle_python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "torch==2.13.0",
        "av==14.2.0",
        "pytrickle==0.1.6",
        external=True,
    )
    session.run(
        "python", "-m", "benchmarks.worker_bench", "--pytrickle-python", str(pytrickle_python)
    )
