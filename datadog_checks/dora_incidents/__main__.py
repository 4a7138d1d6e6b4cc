"""`python -m datadog_checks.dora_incidents`: the same CLI as `dora-incidents`."""

from .cli import run

run()
