"""`dora-incidents`: the check outside the Agent. Needs the `[cli]` extra (click, rich); the check never imports it."""

import sys

from ..__about__ import __version__

MISSING = (
    'dora-incidents: the command line needs the [cli] extra (click, rich and what the check needs outside the '
    'Agent), which the Agent does not ship. In another Python: '
    f"pip install 'datadog_dora_incidents-{__version__}-py3-none-any.whl[cli]'"
)


def run():
    """Console-script entry point. Installed into the Agent's Python, where click is absent: one line, no traceback."""
    try:
        from .app import run as run_app
    except ImportError as e:
        if e.name not in ('click', 'rich'):
            raise
        print(MISSING, file=sys.stderr)
        raise SystemExit(2) from None
    run_app()
