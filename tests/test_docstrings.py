"""Every public name of seedlock has a numpydoc docstring with the sections its signature needs.

What is checked: the names in ``__all__`` of ``seedlock``, ``seedlock.data``,
``seedlock.distributed``, ``seedlock.audit`` and ``seedlock.errors`` that are functions or
classes, and the public methods and properties (no leading ``_``) of those classes that seedlock
defines (members inherited from torch or Python are theirs to document). A public object that is
an instance (``seedlock.rng``) is checked through its class. Constants (``CAUSES``,
``__version__``) and subpackages carry no docstring of their own to check here.

The rule, for each of them:

* It has a docstring of its own (``__doc__``, not one inherited from a base class).
* A function or method that takes parameters other than ``self`` / ``cls`` has a ``Parameters``
  section naming each of them; ``*keys`` and ``**kwargs`` may be written with or without their
  stars. For a class the parameters are the constructor's (``__init__`` when seedlock defines
  it, the fields of a ``NamedTuple``), and they may be named in ``Parameters`` or, for a record
  whose constructor parameters are its fields, in ``Attributes``. A class whose constructor comes
  from Python or torch (an exception without ``__init__``, a ``Protocol``) has none to name.
* A function or method whose return annotation is not ``None`` has a ``Returns`` or ``Yields``
  section. Exempt: classes (calling one returns the instance), properties (numpydoc documents a
  property like an attribute: the docstring describes the value), and generator-based context
  managers that yield ``None`` (annotated ``Iterator[None]``: there is nothing to describe).

``Raises`` and ``Examples`` are not enforced: no signature says which exceptions a function
raises, or whether an example helps.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest

MODULES = ("seedlock", "seedlock.data", "seedlock.distributed", "seedlock.audit", "seedlock.errors")

# A numpydoc section header: a title line, then a line of dashes under it.
_HEADER = re.compile(r"^(?P<title>[A-Z][A-Za-z ]*)\n-+$", re.MULTILINE)
_NO_RESULT = re.compile(r"^(Iterator|Generator|AsyncIterator|AsyncGenerator)\[None\b")


def _own_doc(obj: Any) -> str:
    doc = obj.fget.__doc__ if isinstance(obj, property) else obj.__doc__
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def sections(doc: str) -> dict[str, str]:
    """A numpydoc docstring's sections: title -> body (the text up to the next header)."""
    found = {}
    headers = list(_HEADER.finditer(doc))
    for header, following in zip(headers, [*headers[1:], None], strict=False):
        end = following.start() if following is not None else len(doc)
        found[header.group("title").strip()] = doc[header.end() : end]
    return found


def documented_names(body: str) -> set[str]:
    """The names a ``Parameters`` / ``Attributes`` section lists (``a, b : type`` included),
    stars stripped."""
    names = set()
    for line in body.splitlines():
        if not line.strip() or line[0].isspace():
            continue
        for name in line.split(" : ")[0].split(","):
            names.add(name.strip().lstrip("*"))
    return names


def _public_members(cls: type) -> Iterator[tuple[str, Any]]:
    seen = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("seedlock"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            member = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if inspect.isfunction(member) or isinstance(member, property):
                yield name, member


def public_objects() -> list[tuple[str, Any]]:
    """(qualified name, object) for everything the module docstring says is checked."""
    found: dict[int, tuple[str, Any]] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                cls = obj
            elif inspect.isfunction(obj):
                cls = None
            elif not inspect.ismodule(obj) and hasattr(type(obj), "state_dict"):
                cls = type(obj)  # an instance with public methods: seedlock.rng
            else:
                continue  # a constant or a subpackage
            target = cls if cls is not None else obj
            found.setdefault(id(target), (f"{module_name}.{name}", target))
            if cls is not None:
                for member_name, member in _public_members(cls):
                    qualified = f"{module_name}.{name}.{member_name}"
                    found.setdefault(id(member), (qualified, member))
    return sorted(found.values(), key=lambda item: item[0])


def parameters(obj: Any) -> list[str]:
    """The parameters a docstring must name (``self`` / ``cls`` left out)."""
    if isinstance(obj, property):
        return []
    if inspect.isclass(obj):
        if issubclass(obj, tuple) and hasattr(obj, "_fields"):
            return list(obj._fields)
        init = obj.__init__
        if not getattr(init, "__module__", "").startswith("seedlock"):
            return []
        obj = init
    names = list(inspect.signature(obj).parameters)
    return names[1:] if names and names[0] in ("self", "cls") else names


def needs_result(obj: Any) -> bool:
    """Whether the docstring needs a ``Returns`` or ``Yields`` section (see the rule)."""
    if inspect.isclass(obj) or isinstance(obj, property):
        return False
    annotation = inspect.signature(obj).return_annotation
    if annotation is None or annotation == "None":
        return False
    if annotation is inspect.Signature.empty:
        return True
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return not _NO_RESULT.match(text)


def problems(obj: Any) -> list[str]:
    """What the docstring of ``obj`` lacks under the rule of this module."""
    doc = _own_doc(obj)
    if not doc:
        return ["no docstring"]
    found = sections(doc)
    missing = []
    wanted = parameters(obj)
    if wanted:
        titles = ("Parameters", "Attributes") if inspect.isclass(obj) else ("Parameters",)
        named: set[str] = set()
        for title in titles:
            named |= documented_names(found.get(title, ""))
        if not any(title in found for title in titles):
            missing.append(f"no {' / '.join(titles)} section")
        missing += [
            f"parameter {name!r} is not named in {' / '.join(titles)}"
            for name in wanted
            if name not in named
        ]
    if needs_result(obj) and "Returns" not in found and "Yields" not in found:
        missing.append("no Returns / Yields section")
    return missing


OBJECTS = public_objects()


def test_the_walk_finds_the_public_api():
    names = {name for name, _ in OBJECTS}
    for expected in (
        "seedlock.seed_everything",
        "seedlock.SeedReport.to_dict",
        "seedlock.rng.load_state_dict",
        "seedlock.data.SeedlockDataLoader.state_dict",
        "seedlock.distributed.shared_globals",
        "seedlock.audit.Tracer.record",
        "seedlock.errors.StateMismatchError",
    ):
        assert expected in names


@pytest.mark.parametrize(("name", "obj"), OBJECTS, ids=[name for name, _ in OBJECTS])
def test_public_docstring_has_its_sections(name: str, obj: Any):
    missing = problems(obj)
    assert not missing, f"{name}: " + "; ".join(missing)


def _sample(doc: str) -> Any:
    def function(seed: int, *keys: str, **kwargs: Any) -> int:
        return seed

    function.__doc__ = doc
    return function


def test_the_rule_catches_a_missing_section():
    full = """Do it.

    Parameters
    ----------
    seed
        The seed.
    *keys
        More keys.
    **kwargs
        Options.

    Returns
    -------
    int
        The seed.
    """
    assert problems(_sample(full)) == []
    without_returns = full[: full.index("Returns")]
    assert problems(_sample(without_returns)) == ["no Returns / Yields section"]
    assert problems(_sample(full.replace("    *keys\n        More keys.\n", ""))) == [
        "parameter 'keys' is not named in Parameters"
    ]
    assert problems(_sample("Do it.")) == [
        "no Parameters section",
        "parameter 'seed' is not named in Parameters",
        "parameter 'keys' is not named in Parameters",
        "parameter 'kwargs' is not named in Parameters",
        "no Returns / Yields section",
    ]
    assert problems(_sample("")) == ["no docstring"]
