"""`dora-incidents assets`: the shipped dashboard and monitors, querying `<metric_namespace>.*` instead of `dora.*`.

Generic: every string of every asset is rewritten, so widgets and monitors added later follow without a change
here. Only the check's namespaced metrics move; its health metrics (`dora.check.*`) and Datadog's own DORA
metrics (`dora.deployments.count`) keep their names.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from ..change_failures import CHANGE_FAILURES_COUNT, RECOVERY_TIME, REWORK_COUNT
from ..deployments import DEPLOYMENTS_COUNT
from ..outputs import INCIDENTS_COUNT, TIME_TO_RESTORE
from .runtime import CliError

# What `metric_namespace` prefixes: every DORA metric the check emits (its health metrics stay `dora.check.*`).
NAMESPACED = (TIME_TO_RESTORE, INCIDENTS_COUNT, CHANGE_FAILURES_COUNT, RECOVERY_TIME, REWORK_COUNT, DEPLOYMENTS_COUNT)
DEFAULT_NAMESPACE = 'dora'
KINDS = ('dashboards', 'monitors')
_NAMESPACE = re.compile(r'[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*')  # as the config model validates it


def shipped_assets() -> Path:
    """The wheel bundles them under data/assets; a source checkout has them in assets/."""
    bundled = Path(str(resources.files('datadog_checks.dora_incidents').joinpath('data', 'assets')))
    if bundled.is_dir():
        return bundled
    return Path(__file__).resolve().parents[3] / 'assets'


def write_assets(namespace: str, out: Path, source: Path | None = None) -> list[Path]:
    """Write every dashboard and monitor under `out/<kind>/`, rewritten for `namespace`; returns the files."""
    if not _NAMESPACE.fullmatch(namespace):
        raise CliError(f'--metric-namespace {namespace!r}: use a Datadog metric prefix such as dora_incidents')
    source = source or shipped_assets()
    metric = re.compile(
        r'(?<![\w.])' + re.escape(DEFAULT_NAMESPACE) + r'\.(' + '|'.join(map(re.escape, NAMESPACED)) + r')\b'
    )
    written = []
    for kind in KINDS:
        for path in sorted((source / kind).glob('*.json')):
            document = _rewrite(json.loads(path.read_text()), lambda text: metric.sub(rf'{namespace}.\1', text))
            target = out / kind / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(document, indent=2, ensure_ascii=False) + '\n')
            written.append(target)
    if not written:
        raise CliError(f'no dashboard or monitor found under {source}')
    return written


def _rewrite(value, rewrite):
    if isinstance(value, str):
        return rewrite(value)
    if isinstance(value, list):
        return [_rewrite(item, rewrite) for item in value]
    if isinstance(value, dict):
        return {key: _rewrite(item, rewrite) for key, item in value.items()}
    return value
