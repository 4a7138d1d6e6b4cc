"""`dora-incidents`: the check outside the Agent. Needs the `[cli]` extra (click, rich); the check never imports it."""

import sys

MISSING = (
    'dora-incidents: the command line needs the [cli] extra (click, rich), which the Agent does not ship. '
    'Install it in another Python: pip install "datadog-dora-incidents[cli]"'
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
