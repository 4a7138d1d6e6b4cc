"""Unknown instance options stop the check: a typo'd filter (`severity:`) must not silently turn the filter off."""

from __future__ import annotations

import difflib

from datadog_checks.base import ConfigurationError

from .config_models.instance import InstanceConfig

# What every instance may hold beyond the config model (which the spec's templates already give `tags`, `service`,
# `min_collection_interval`, `empty_default_hostname`, `metric_patterns`, `disable_generic_tags` and the HTTP
# options): the Agent's reserved fields (its CommonInstanceConfig, and `loader`), and what datadog-checks-base's
# AgentCheck reads from any instance.
AGENT_OPTIONS = frozenset({'name', 'namespace', 'no_index', 'loader', 'check_tag_cardinality'})
BASE_OPTIONS = frozenset({'debug_metrics', 'max_returned_metrics', 'process_isolation', '__memory_profiling_tags'})


def known_options() -> frozenset[str]:
    """Every option the instance model declares (from assets/configuration/spec.yaml), by name and alias."""
    fields = InstanceConfig.model_fields
    return frozenset(fields) | {field.alias for field in fields.values() if field.alias} | AGENT_OPTIONS | BASE_OPTIONS


def reject_unknown(instance: dict) -> None:
    """A ConfigurationError naming every unknown option, with the nearest known one when there is one."""
    known = known_options()
    unknown = sorted(str(option) for option in instance if option not in known)
    if unknown:
        described = ', '.join(_with_nearest(option, known) for option in unknown)
        raise ConfigurationError(f'unknown option{"s" if len(unknown) > 1 else ""}: {described}')


def _with_nearest(option: str, known: frozenset[str]) -> str:
    nearest = difflib.get_close_matches(option, sorted(known), n=1, cutoff=0.75)
    return f'`{option}` (did you mean `{nearest[0]}`?)' if nearest else f'`{option}`'
