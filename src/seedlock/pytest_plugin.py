"""The seedlock pytest plugin: every test runs under its own seed, replayable with one command.

Active whenever seedlock is installed (entry point ``pytest11``); ``-p no:seedlock`` turns it off.

Seeds
-----
The *session seed* ``S`` is ``--seedlock-seed=N`` (any seed :func:`~seedlock.derivation.parse_seed`
reads), ``last`` (the previous session's, from pytest's cache) or ``random`` (fresh entropy, the
default). It is printed in the header. Under pytest-xdist every worker gets the controller's.

A test's seed is ``T = derive("pytest", nodeid, root=S, bits=32)``: a function of the session seed
and the node id only, so it is the same whatever the test order and whichever other tests run.
``@pytest.mark.seedlock(seed=123)`` fixes ``T``; ``@pytest.mark.seedlock(False)`` leaves the test
alone (neither seeded nor restored).

What a test sees
----------------
* The root seed is ``T`` from the start of setup, so ``seedlock.derive("x")`` and the named
  streams are reproducible per test.
* Every backend's globals and every generator registered *before* the test are reseeded before
  setup, before the call and before teardown. The call gets exactly ``seed_everything(T)``'s
  values; setup and teardown get ``derive("pytest", phase, root=T, bits=32)``, so a fixture's
  draws and the test's own are different numbers, not the same stream twice.
* A fixture (or the test) that seeds for itself, ``seedlock.seed_everything(21)``, takes over:
  once the root is no longer ``T`` the plugin stops reseeding that test, so the body continues
  the fixture's streams.
* After teardown the RNG state (:func:`seedlock.fork` semantics) and the root seed are put back,
  so no test shifts another's numbers.

A failing test's report has a ``seedlock`` section with its seed and the command that replays it.

pytest-randomly
---------------
When pytest-randomly is active and ``--seedlock-seed`` is not given, its ``--randomly-seed`` is
the session seed and only its header line is printed. :func:`random_seeder` is registered under
its entry point group ``pytest_randomly.random_seeder``: it seeds every seedlock backend (with
values in each one's range, whatever pytest-randomly's seed) and, inside a test run by this
plugin, re-applies what this plugin decided for the phase (its seeds, or the state a fixture's
own seeding left), so the result does not depend on the order the two plug-ins run in.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from collections.abc import Callable, Generator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest

from seedlock import derivation
from seedlock._forking import fork
from seedlock._registry import registered
from seedlock.backends import owner_of
from seedlock.derivation import Seed, check_seed, derive, format_seed, fresh_seed, parse_seed
from seedlock.seeding import seed_everything
from seedlock.state import capture, restore

__all__ = ["random_seeder"]

_OPTION = "--seedlock-seed"
_CACHE_KEY = "seedlock/seed"
_MARKER = (
    "seedlock(enabled=True, *, seed=None): seed=N fixes the test's seed; "
    "seedlock(False) leaves the test unseeded"
)


@dataclass(frozen=True)
class _Session:
    seed: Seed
    option: str  # the option that replays it: --seedlock-seed, or --randomly-seed


@dataclass
class _Test:
    seed: Seed
    generators: dict[str, Any]  # registered before the test: the ones that carry state across
    undo: ExitStack = field(default_factory=ExitStack)  # puts back the state from before


_SESSION = pytest.StashKey[_Session]()
_TEST = pytest.StashKey["_Test | None"]()

# What the running test phase starts from, for random_seeder to re-establish (pytest-randomly
# reseeds after this plugin's hooks and gives its seeders no item).
_current: Callable[[], None] | None = None


# -- the session seed --------------------------------------------------------------------------


def _seed_option(text: str) -> str:
    if text not in ("last", "random"):
        try:
            parse_seed(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}, 'last' or 'random'") from None
    return text


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("seedlock", "seedlock: a replayable seed for every test")
    group.addoption(
        _OPTION,
        dest="seedlock_seed",
        metavar="N|last|random",
        type=_seed_option,
        default=None,
        help="session seed every test's seed derives from: an integer, str:<text> or "
        "hex:<digits>; 'last' reuses the previous session's; 'random' (default) draws one "
        "(with pytest-randomly active the default is its --randomly-seed)",
    )


@pytest.hookimpl(trylast=True)  # after pytest-randomly's pytest_configure has chosen its seed
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER)
    config.stash[_SESSION] = _choose_session_seed(config)


def _choose_session_seed(config: pytest.Config) -> _Session:
    worker: dict[str, Any] | None = getattr(config, "workerinput", None)
    if worker is not None:  # pytest-xdist worker: the controller chose and cached it
        return _Session(parse_seed(worker["seedlock_seed"]), worker["seedlock_option"])
    text: str | None = config.getoption("seedlock_seed")
    cache = getattr(config, "cache", None)
    randomly = config.getoption("randomly_seed", None)
    if text is None and config.pluginmanager.hasplugin("randomly") and isinstance(randomly, int):
        session = _Session(randomly, "--randomly-seed")
    elif text == "last":
        if cache is None:
            raise pytest.UsageError(f"{_OPTION}=last needs pytest's cacheprovider plugin")
        stored = cache.get(_CACHE_KEY, None)
        session = _Session(fresh_seed() if stored is None else parse_seed(stored), _OPTION)
    elif text is None or text == "random":
        session = _Session(fresh_seed(), _OPTION)
    else:
        session = _Session(parse_seed(text), _OPTION)
    if cache is not None:
        cache.set(_CACHE_KEY, format_seed(session.seed))
    return session


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist controller: hand every worker the session seed."""
    session = node.config.stash[_SESSION]
    node.workerinput["seedlock_seed"] = format_seed(session.seed)
    node.workerinput["seedlock_option"] = session.option


def pytest_report_header(config: pytest.Config) -> str | None:
    session = config.stash[_SESSION]
    if session.option != _OPTION:
        return None  # pytest-randomly prints the seed: one line is enough
    return f"seedlock: {_replay_option(session)}"


def pytest_sessionstart(session: pytest.Session) -> None:
    # Collection (module-level draws, random parametrize values) replays too, and module-level
    # `seedlock.numpy_rng("x")` finds a root.
    seed = session.config.stash[_SESSION].seed
    _reseed(seed, "call", registered())
    derivation.set_root(seed)


# -- per test ----------------------------------------------------------------------------------


def _test_seed(item: pytest.Item) -> Seed | None:
    session_seed = item.config.stash[_SESSION].seed
    marker = item.get_closest_marker("seedlock")
    if marker is None:
        return derive("pytest", item.nodeid, root=session_seed, bits=32)
    args, kwargs = marker.args, marker.kwargs
    enabled = args[0] if args else True
    if len(args) > 1 or not isinstance(enabled, bool) or set(kwargs) - {"seed"}:
        raise TypeError(
            "use @pytest.mark.seedlock(seed=N) or @pytest.mark.seedlock(False), "
            f"got @pytest.mark.seedlock(args={args!r}, kwargs={kwargs!r})"
        )
    if "seed" in kwargs:
        if not enabled:
            raise TypeError("@pytest.mark.seedlock(False, seed=...) both disables and fixes")
        return check_seed(kwargs["seed"], "@pytest.mark.seedlock seed")
    return derive("pytest", item.nodeid, root=session_seed, bits=32) if enabled else None


# Plain tryfirst hooks: they run before the fixtures are set up and the test is called, and an
# error (a malformed marker) is that test's setup error. pytest-randomly's hooks may run after
# them; random_seeder then re-applies what these set up.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    seed = _test_seed(item)
    test = None if seed is None else _Test(seed, registered())
    item.stash[_TEST] = test
    if test is not None:
        test.undo.enter_context(fork())
        test.undo.callback(derivation.restore_root_state, derivation.root_state())
        derivation.set_root(test.seed)
    _enter(item, "setup")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _enter(item, "call")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _enter(item, "teardown")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, Any, None]:
    # Restored here, after teardown, even when a fixture's teardown fails.
    global _current
    yield
    _current = None
    test = item.stash.get(_TEST, None)
    if test is not None:
        test.undo.close()


def _enter(item: pytest.Item, phase: str) -> None:
    global _current
    test = item.stash.get(_TEST, None)
    if test is None:
        _current = _leave_alone
        return
    if phase != "setup" and derivation.root_state()[0] != test.seed:
        # A fixture or the test seeded for itself: keep its streams (as they are now).
        _current = partial(restore, capture())
        return
    _current = partial(_reseed_test, test, phase)
    _current()


def _leave_alone() -> None:
    """An unseeded test: random_seeder must not seed it either."""


def _reseed_test(test: _Test, phase: str) -> None:
    _reseed(test.seed, phase, test.generators)
    derivation.set_root(test.seed)


def _reseed(seed: Seed, phase: str, generators: dict[str, Any]) -> None:
    """Seed every backend and ``generators`` for ``phase`` of a test whose seed is ``seed``."""
    value = seed if phase == "call" else derive("pytest", phase, root=seed, bits=32)
    log = logging.getLogger("seedlock")
    quiet, log.disabled = log.disabled, True  # three report tables per test is noise
    try:
        seed_everything(value)
    finally:
        log.disabled = quiet
    for name, generator in generators.items():
        owner = owner_of(generator)
        if owner is not None:
            owner.seed_generator(generator, derive("pytest", phase, name, root=seed, bits=256))


# -- reporting ---------------------------------------------------------------------------------


def _replay_option(session: _Session) -> str:
    return shlex.quote(f"{session.option}={format_seed(session.seed)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    test = item.stash.get(_TEST, None)
    if report.failed and test is not None:
        session = item.config.stash[_SESSION]
        command = f"pytest {shlex.quote(_cwd_nodeid(item))} {_replay_option(session)}"
        report.sections.append(
            (
                "seedlock",
                f"test seed {format_seed(test.seed)} (session seed {format_seed(session.seed)})\n"
                f"replay: {command}",
            )
        )


def _cwd_nodeid(item: pytest.Item) -> str:
    """The node id as typed from the directory pytest was started in (ids are rootdir-relative)."""
    config = item.config
    if config.invocation_params.dir == config.rootpath:
        return item.nodeid
    path, sep, rest = item.nodeid.partition("::")
    return os.path.relpath(config.rootpath / path, config.invocation_params.dir) + sep + rest


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def seedlock_seed(request: pytest.FixtureRequest) -> Seed | None:
    """The running test's seed (``None`` under ``@pytest.mark.seedlock(False)``)."""
    test: _Test | None = request.node.stash.get(_TEST, None)
    return None if test is None else test.seed


@pytest.fixture
def seedlock_numpy_rng(seedlock_seed: Seed | None) -> Any:
    """A new ``numpy.random.Generator``: ``default_rng(derive("numpy_rng", root=seed, bits=128))``
    (fresh entropy in an unseeded test). Not registered: it lives and dies with the test."""
    import numpy as np  # the framework: only for a test that asks for this fixture

    if seedlock_seed is None:
        return np.random.default_rng()
    return np.random.default_rng(derive("numpy_rng", root=seedlock_seed, bits=128))


@pytest.fixture
def seedlock_torch_generator(seedlock_seed: Seed | None) -> Any:
    """A new CPU ``torch.Generator`` seeded with ``derive("torch_generator", root=seed, bits=32)``
    (fresh entropy in an unseeded test). Not registered: it lives and dies with the test."""
    import torch  # the framework: only for a test that asks for this fixture

    generator = torch.Generator()
    if seedlock_seed is None:
        generator.seed()
    else:
        generator.manual_seed(derive("torch_generator", root=seedlock_seed, bits=32))
    return generator


# -- pytest-randomly ---------------------------------------------------------------------------


def random_seeder(seed: int) -> None:
    """pytest-randomly's reseed hook (entry point group ``pytest_randomly.random_seeder``).

    pytest-randomly calls it with its own seed (possibly ``>= 2**32``) before every test phase.
    Alone, it seeds every seedlock backend and registered generator as ``seed_everything(seed)``
    would (each backend gets a value in its own range). While this plugin runs a test, it
    re-applies what this plugin set up for the phase instead, whatever order the plug-ins run in.
    """
    if _current is not None:
        _current()
    else:
        _reseed(seed, "call", registered())
        derivation.set_root(seed)
