"""Running the check outside the Agent: configuration from conf.yaml, the cursor in a state file.

The Agent gives a check its persistent cache; here datadog-checks-base's stand-in for the Agent is
pointed at a JSON state file instead (or, read-only, at the Agent's own cache files on this host), so
the same cursor code runs unchanged.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml

from datadog_checks.base.stubs import aggregator, datadog_agent

from ..check import DoraIncidentsCheck
from ..datadog import DORA_PATH, DatadogApi
from ..datadog.client import DatadogAnswer

# The check's `dora.*` metrics carry `service` and `env` like Datadog's own; the stand-in aggregator
# refuses such tags unless told otherwise (the Agent accepts them).
os.environ.setdefault('DDEV_SKIP_GENERIC_TAGS_CHECK', '1')

AGENT_RUN_PATH = Path('/opt/datadog-agent/run')
AGENT_CONFIG = Path('/etc/datadog-agent/datadog.yaml')
# What the check reads from the Agent's configuration (`datadog_agent.get_config`): its Datadog keys and site.
AGENT_SETTINGS = ('api_key', 'app_key', 'site', 'dd_url')


class CliError(Exception):
    """A problem the user can fix, shown as one line."""


def default_state_path() -> Path:
    base = os.environ.get('XDG_STATE_HOME') or Path.home() / '.local' / 'state'
    return Path(base) / 'dora-incidents' / 'state.json'


def load_instance(config_path: Path, index: int, secrets_allowed: bool = False) -> tuple[dict, dict]:
    """(init_config, instance). Agent secrets (`ENC[...]`) cannot be resolved here: refused, or, when
    `secrets_allowed` (reading the Agent's cache needs no credential), replaced by a placeholder."""
    config = _read_yaml(config_path)
    instances = config.get('instances') if isinstance(config, dict) else None
    if not isinstance(instances, list) or not instances:
        raise CliError(f'{config_path} has no `instances` list')
    if not 0 <= index < len(instances):
        raise CliError(f'{config_path} has {len(instances)} instance(s); --instance must be 0..{len(instances) - 1}')
    instance = dict(instances[index])
    for option, value in instance.items():
        if isinstance(value, str) and value.startswith('ENC['):
            if not secrets_allowed:
                raise CliError(
                    f'`{option}` is an Agent secret ({value.split("]")[0]}]); outside the Agent, give the value'
                )
            instance[option] = SECRET_PLACEHOLDER
    return config.get('init_config') or {}, instance


SECRET_PLACEHOLDER = 'agent-secret-not-resolved-here'


def load_agent_settings(path: Path) -> dict:
    """The Agent's own settings the check reads (`api_key`, `app_key`, `site`, `dd_url`) from its datadog.yaml.

    An `ENC[]` key becomes a placeholder: the cursor's scope holds the Agent's site, never the Agent's keys.
    """
    if not Path(path).is_file():
        raise CliError(f'--agent-config {path}: no such file (the Agent\'s datadog.yaml; give its path)')
    config = _read_yaml(path)
    if not isinstance(config, dict):
        raise CliError(f'{path} is not a YAML mapping of Agent settings')
    settings = {name: config[name] for name in AGENT_SETTINGS if isinstance(config.get(name), str) and config[name]}
    return {name: SECRET_PLACEHOLDER if value.startswith('ENC[') else value.strip() for name, value in settings.items()}


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise CliError(f'cannot read {path}: {e.strerror}') from None
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark else ''
        raise CliError(f'{path} is not valid YAML{where}: {getattr(e, "problem", None) or "parse error"}') from None


def has_secrets(instance: dict) -> bool:
    return SECRET_PLACEHOLDER in instance.values()


class StateFile:
    """The persistent cache of CLI runs: one JSON object, replaced atomically on save."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.values = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (OSError, ValueError) as e:
            raise CliError(f'state file {self.path} is unreadable ({e}); move it away to start over') from None

    def read(self, key: str) -> str:
        return self.values.get(key, '')

    def write(self, key: str, value: str) -> None:
        self.values[key] = value

    def forget(self, prefix: str) -> int:
        keys = [key for key in self.values if key.startswith(prefix)]
        for key in keys:
            del self.values[key]
        return len(keys)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile('w', dir=self.path.parent, delete=False) as tmp:
            json.dump(self.values, tmp)
        os.replace(tmp.name, self.path)


class AgentCache:
    """The Agent's own persistent cache files on this host, read-only."""

    def __init__(self, run_path: Path):
        self.run_path = Path(run_path)
        if not self.run_path.is_dir():
            raise CliError(f'--run-path {self.run_path}: no such directory (the Agent\'s run path; give its path)')

    def read(self, key: str) -> str:
        # Agents have stored a key as `<run>/<key, ':' as '_'>` and as `<run>/<check>/<rest of key>`.
        check, _, rest = key.partition(':')
        for path in (self.run_path / key.replace(':', '_'), self.run_path / check / rest):
            if path.is_file():
                return path.read_text()
        return ''

    def write(self, key: str, value: str) -> None:
        raise CliError('the Agent cache is read-only here')

    def cursor_prefixes(self) -> list[str]:
        """Every dora_incidents cursor on this host, as the cache key prefix of its instance."""
        found = set()
        for path in self.run_path.glob('dora_incidents*'):
            for file in [path] if path.is_file() else path.iterdir():
                name = file.name.replace('dora_incidents_', '', 1)
                for slot in ('_cursor_a', '_cursor_b'):
                    if name.endswith(slot):
                        found.add(f'dora_incidents:{name[: -len(slot)]}_')
        return sorted(found)


class RecordingHttp:
    """Datadog's HTTP client for the dry run of `check`: reads go to Datadog (what was already sent, the
    deployments to mark), writes are recorded instead of sent."""

    def __init__(self, real):
        self._real = real
        self.failures: list[dict] = []
        self.markings: list[tuple[str, dict]] = []  # (PATCH path, body)

    def send(self, method, path, body, app_key=False) -> DatadogAnswer:
        if method == 'POST' and path == DORA_PATH:
            self.failures.append(body)
        elif method != 'POST':  # markings are PATCHes; every POST but a failure is a list
            self.markings.append((path, body))
        else:
            return self._real.send(method, path, body, app_key)
        return DatadogAnswer(202, 'dry run: not sent', {}, {'data': None})

    def close(self) -> None:
        self._real.close()


class RecordingDatadogApi(DatadogApi):
    """The check's own Datadog client with its writes recorded instead of sent: the dry run of `check` finds
    the deployments it would mark, and sends nothing."""

    def __init__(self, check, real: DatadogApi):
        self.recording = RecordingHttp(real.http)
        super().__init__(check, '', '', http=self.recording)
        # The writes queued by earlier runs stay queued: the recorder would take them as delivered.
        self.outbox.due = lambda: []
        self.outbox.save = lambda: None
        self.has_app_key = real.has_app_key
        self.failures, self.markings = self.recording.failures, self.recording.markings


class DryRunCheck(DoraIncidentsCheck):
    """The real check, except that Datadog writes are recorded in `recording` instead of sent."""

    recording: RecordingDatadogApi | None = None

    def _dora_api(self):
        real = super()._dora_api()  # the real client's checks first: a missing key, a site without DORA
        if real is None:
            return None
        self.recording = RecordingDatadogApi(self, real)
        return self.recording


def make_check(
    init_config: dict, instance: dict, cache, dry_run: bool = False, agent_settings: dict | None = None
) -> DoraIncidentsCheck:
    """The real check over `cache` (a StateFile or AgentCache), set up as the Agent would, with the Agent's
    `agent_settings` (see load_agent_settings) when given."""
    datadog_agent.read_persistent_cache = cache.read
    datadog_agent.write_persistent_cache = cache.write
    if agent_settings is not None:
        datadog_agent._config = {**datadog_agent.get_default_config(), **agent_settings}
    aggregator.reset()
    check = (DryRunCheck if dry_run else DoraIncidentsCheck)('dora_incidents', init_config, [instance])
    check.check_id = 'dora_incidents:cli'
    try:
        check.run_check_initializations()
    except Exception as e:  # a ConfigurationError, shown as the Agent would show it
        raise CliError(check.sanitize(str(e)).replace('\n', ' ')) from None
    return check
