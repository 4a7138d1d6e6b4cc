"""`python -m datadog_checks.dora_incidents`: the same CLI as `dora-incidents`."""

try:
    from .cli import run
except ImportError as e:  # click or rich missing: the check itself never needs them
    raise SystemExit(f'the command line needs the [cli] extra: pip install "datadog-dora-incidents[cli]" ({e})')

run()
