"""Every source's simulator by `source:` value, found by convention: `SOURCES` (the check's registry) names the
tools, and the simulator of tool `<name>` is the `ToolSimulator` subclass in `loopback/<name>.py` whose `source`
is `<name>`. A tool without one is missing from `SIMULATORS`, and `make_simulator` says so."""

from __future__ import annotations

import importlib
import inspect

from datadog_checks.dora_incidents.sources import SOURCES

from .core import ToolSimulator


def simulator_class(source: str) -> type[ToolSimulator]:
    """The simulator of a tool of `SOURCES`; LookupError naming what is missing when there is none."""
    try:
        module = importlib.import_module(f'{__package__}.{source}')
    except ModuleNotFoundError as e:
        if e.name != f'{__package__}.{source}':
            raise
        raise LookupError(f'no simulator for {source!r}: loopback/{source}.py does not exist') from None
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, ToolSimulator) and cls.__module__ == module.__name__ and cls.source == source:
            return cls
    raise LookupError(f'no simulator for {source!r}: loopback/{source}.py defines no ToolSimulator of that source')


def _found() -> dict[str, type[ToolSimulator]]:
    found = {}
    for source in SOURCES:
        try:
            found[source] = simulator_class(source)
        except LookupError:
            continue
    return found


SIMULATORS = _found()


def make_simulator(source: str) -> ToolSimulator:
    return simulator_class(source)(validate=True)
