"""Derive the minimal vendor API descriptions the tests validate against (`loopback/specs/<vendor>.json`).

Run by hand, when a vendor's description changes or an operation is added to a source's `api_description`:

    .venv/bin/python scripts/derive_specs.py [--from DIR]... [VENDOR]...

Each DIR (default `../shared/specs` beside the repository) holds vendors' published descriptions; a vendor's
file is taken from the first DIR that has it. This script
is the only thing that reads them: tests and simulators read the derived files only, so a clone of the
repository is self-contained. A derived file is an OpenAPI 3.0 document with only the operations listed
below, every component they reach through `$ref`, and facts only (no descriptions, summaries, examples,
tags or `x-` extensions). Output is deterministic: a re-run over the same sources gives no diff.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import re
import sys
from pathlib import Path

# Not an incident source: the Datadog API the check writes to, for the loopback intake.
DATADOG_API = {
    'file': 'datadog-v2.openapi.yaml',
    'from': ('DataDog/datadog-api-client-python', '.generator/schemas/v2/openapi.yaml', '2026-04-14'),
    'operations': [
        ('POST', '/api/v2/dora/failure'),
        ('POST', '/api/v2/dora/deployments'),
        ('PATCH', '/api/v2/dora/deployments/{deployment_id}'),
        ('POST', '/api/v2/dora/failures'),
    ],
    'overlay': 'datadog_since_2026_04',
}

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
from datadog_checks.dora_incidents.sources import SOURCES, source_class  # noqa: E402

# vendor -> its description in DIR, where that file comes from (see DIR/README.md), the operations to keep:
# what each source declares (`Source.api_description`).
OPERATIONS = {**{name: source_class(name).api_description for name in SOURCES}, 'datadog': DATADOG_API}
DEFAULT_SOURCE = REPOSITORY.parent / 'shared' / 'specs'
TARGET = REPOSITORY / 'loopback' / 'specs'

# Keys that carry prose, not facts, wherever an object has keywords (not names) as keys.
PROSE = {'description', 'summary', 'example', 'examples', 'tags', 'externalDocs', 'title'}
# Keys whose value maps names (of properties, media types, status codes, ...) to objects: the names stay,
# even a property called `description` or `summary`.
NAME_MAPS = {
    'properties',
    'patternProperties',
    'content',
    'responses',
    'headers',
    'encoding',
    'variables',
    'schemas',
    'parameters',
    'requestBodies',
    'securitySchemes',
    'links',
    'callbacks',
}
# Keys whose value is data (enumerated values, defaults, required names), copied as is.
VERBATIM = {'enum', 'default', 'required', 'mapping', 'const', 'scopes'}
COMPONENT_REF = re.compile(r'^#/components/([^/]+)/([^/]+)')


def clean(node):
    """The same node without prose keys (`x-` extensions included), keeping names and data as they are."""
    if isinstance(node, list):
        return [clean(item) for item in node]
    if not isinstance(node, dict):
        return node
    kept = {}
    for key, value in node.items():
        if key in PROSE or key.startswith('x-'):
            continue
        if key in VERBATIM:
            kept[key] = value
        elif key in NAME_MAPS and isinstance(value, dict):
            kept[key] = {name: clean(item) for name, item in value.items()}
        else:
            kept[key] = clean(value)
    return kept


def refs(node):
    """Every local reference in a node: `$ref` values and discriminator mapping targets."""
    if isinstance(node, list):
        for item in node:
            yield from refs(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == '$ref' and isinstance(value, str):
                yield value
            elif key == 'mapping' and isinstance(value, dict):
                yield from (target for target in value.values() if isinstance(target, str))
            else:
                yield from refs(value)


def resolve(document, pointer: str):
    node = document
    for part in pointer.lstrip('#/').split('/'):
        part = part.replace('~1', '/').replace('~0', '~')
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def with_response_descriptions(responses: dict) -> dict:
    # OpenAPI 3.0 requires `description` on a Response object: keep the key, drop the prose.
    return {code: resp if '$ref' in resp else {**resp, 'description': ''} for code, resp in responses.items()}


def derive(source: dict, vendor: str, table: dict, sha256: str = '') -> dict:
    if not str(source.get('openapi', '')).startswith('3.0'):
        sys.exit(f'{vendor}: {table["file"]} is not OpenAPI 3.0 ({source.get("openapi") or source.get("swagger")})')
    paths: dict = {}
    for method, path in table['operations']:
        item = source['paths'].get(path)
        operation = (item or {}).get(method.lower())
        if operation is None:
            near = difflib.get_close_matches(path, list(source['paths']), n=8, cutoff=0.6)
            sys.exit(f'{vendor}: no {method} {path} in {table["file"]}; paths like it: {near}')
        operation = clean(operation)
        operation['responses'] = with_response_descriptions(operation.get('responses', {}))
        out = paths.setdefault(path, {})
        if item.get('parameters'):
            out['parameters'] = clean(item['parameters'])
        out[method.lower()] = operation
    document = {
        'openapi': source['openapi'],
        'info': {'title': source['info']['title'], 'version': str(source['info']['version'])},
        'servers': [{'url': server['url'].rstrip('/')} for server in source.get('servers', [])[:1]],
        'paths': paths,
    }
    if source.get('security'):
        document['security'] = source['security']
    components: dict = {}
    pending = list(refs(document))
    for requirement in [*document.get('security', []), *_operation_security(paths)]:
        pending += [f'#/components/securitySchemes/{name}' for name in requirement]
    seen = set()
    while pending:
        pointer = pending.pop()
        match = COMPONENT_REF.match(pointer)
        if not match:
            sys.exit(f'{vendor}: reference {pointer!r} is not to a component')
        section, name = match.groups()
        if (section, name) in seen:
            continue
        seen.add((section, name))
        component = clean(source['components'][section][name])
        if section == 'responses' and '$ref' not in component:
            component['description'] = ''
        components.setdefault(section, {})[name] = component
        pending.extend(refs(component))
    if components:
        document['components'] = components
    for pointer in refs(document):  # every reference resolves inside the derived document
        resolve(document, pointer)
    if table.get('overlay'):
        globals()[table['overlay']](document)
    repository, path, as_of = table['from']
    provenance = {'repository': repository, 'path': path, 'as_of': as_of, 'sha256': sha256}
    return {'x-derived-from': provenance, **document}


def datadog_since_2026_04(document: dict) -> None:
    """What Datadog's API does that its description of 2026-04 does not say yet, each from where it is known:

    - one concrete server (the description's is a template, `https://{subdomain}.{site}`);
    - list answers carry date-times, not integers (`datadog-api-client` 2.62's generated models, and the
      repository's HEAD of 2026-08);
    - a listed deployment carries Datadog's own marking: `change_failure` (may be null), `remediation`,
      `deployment_type`, `recovery_time_sec` (Datadog's DORA docs, gathered 2026-12);
    - the PATCH is answered 202 with `{"data": null}` (the recorded exchanges in Datadog's API clients).
    """
    document['servers'] = [{'url': 'https://api.datadoghq.com'}]
    schemas = document['components']['schemas']
    moment = {'type': 'string', 'format': 'date-time'}
    for name in ('DORADeploymentObjectAttributes', 'DORAIncidentObjectAttributes'):
        schemas[name]['properties'].update(started_at=moment, finished_at=moment)
    remediation = {
        'type': 'object',
        'nullable': True,
        'properties': {'id': {'type': 'string'}, 'type': {'type': 'string', 'enum': ['rollback', 'rollforward']}},
    }
    schemas['DORADeploymentObjectAttributes']['properties'].update(
        change_failure={'type': 'boolean', 'nullable': True},
        remediation=remediation,
        deployment_type={'type': 'string', 'enum': ['standard', 'rollback', 'rollforward']},
        recovery_time_sec={'type': 'integer', 'nullable': True},
    )
    accepted = document['paths']['/api/v2/dora/deployments/{deployment_id}']['patch']['responses']['202']
    null_data = {'type': 'object', 'properties': {'data': {'nullable': True}}, 'required': ['data']}
    accepted['content'] = {'application/json': {'schema': null_data}}


def statuspage_as_answered(document: dict) -> None:
    """What Statuspage's list answers that the description generated in 2024 does not say, from the recorded
    answers in faros-ai/airbyte-connectors (`sources/statuspage-source/test_files/incidents.json`) and
    Statuspage's API reference:

    - an incident carries `started_at` and, once its postmortem is published, the status `postmortem`;
    - times that are not set are null (`monitoring_at`, `resolved_at`, the scheduled ones, `postmortem_*`), and
      `postmortem_published_at` is a date-time, not a boolean;
    - `metadata` is an object (the description's type `Object` is no JSON Schema type);
    - errors are `{"error": "..."}` (e.g. 401 `Could not authenticate`), and a rate limit is answered 420 or 429.
    """
    schemas = document['components']['schemas']
    incident = schemas['Incident']['properties']
    incident['started_at'] = {'type': 'string', 'format': 'date-time'}
    incident['metadata'] = {'type': 'object'}
    incident['postmortem_published_at'] = {'type': 'string', 'format': 'date-time'}
    incident['status']['enum'] = [*incident['status']['enum'], 'postmortem']
    for schema in (incident, schemas['IncidentUpdate']['properties'], schemas['Component']['properties']):
        for field in schema.values():
            if field.get('type') in ('string', 'boolean', 'array', 'object') and '$ref' not in field:
                field['nullable'] = True
                if 'enum' in field:  # OpenAPI 3.0: a nullable enum lists null among its values
                    field['enum'] = [*field['enum'], None]
    schemas['ErrorEntity']['properties']['error'] = {'type': 'string'}
    responses = document['paths']['/pages/{page_id}/incidents']['get']['responses']
    for status in ('420', '429'):
        responses[status] = {**responses['401'], 'description': ''}
    responses['429']['headers'] = responses['420']['headers'] = {
        'Retry-After': {'schema': {'type': 'integer'}, 'required': True}
    }


def _operation_security(paths):
    for item in paths.values():
        for operation in item.values():
            if isinstance(operation, dict):
                yield from operation.get('security') or []


def load(path: Path) -> tuple[dict, str]:
    """The description in a file, and the file's sha256."""
    data = path.read_bytes()
    if path.suffix in ('.yaml', '.yml'):
        import yaml

        return yaml.load(data, Loader=getattr(yaml, 'CSafeLoader', yaml.SafeLoader)), hashlib.sha256(data).hexdigest()
    return json.loads(data), hashlib.sha256(data).hexdigest()


def _find(directories: list[Path], name: str) -> Path:
    """The first of the directories holding that file."""
    for directory in directories:
        if (directory / name).is_file():
            return directory / name
    sys.exit(f'{name} is in none of {", ".join(map(str, directories))}: pass its directory with --from')


def _sorted(node):
    if isinstance(node, dict):
        return {key: _sorted(node[key]) for key in sorted(node)}
    if isinstance(node, list):
        return [_sorted(item) for item in node]
    return node


def render(document: dict) -> str:
    """Keys sorted at every level, but where the file comes from first."""
    ordered = _sorted(document)
    ordered = {'x-derived-from': ordered.pop('x-derived-from'), **ordered}
    return json.dumps(ordered, indent=1, ensure_ascii=False) + '\n'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--from', dest='sources', type=Path, action='append', help=f'vendor descriptions (repeatable; {DEFAULT_SOURCE})'
    )
    # Vendors that publish no description we could find (ServiceNow, Jira) have one written by hand from their
    # API reference, named in its `x-derived-from`: never overwritten here.
    derived = sorted(vendor for vendor, table in OPERATIONS.items() if not table.get('hand_written'))
    parser.add_argument('vendors', nargs='*', default=derived, help='only these vendors')
    args = parser.parse_args(argv)
    TARGET.mkdir(parents=True, exist_ok=True)
    for vendor in args.vendors:
        table = OPERATIONS[vendor]
        if table.get('hand_written'):
            sys.exit(f'{vendor}: its description is written by hand (loopback/specs/{vendor}.json), not derived')
        source, sha256 = load(_find(args.sources or [DEFAULT_SOURCE], table['file']))
        text = render(derive(source, vendor, table, sha256))
        target = TARGET / f'{vendor}.json'
        changed = not target.is_file() or target.read_text() != text
        if changed:
            target.write_text(text)
        print(f'{target.relative_to(REPOSITORY)}: {len(text.encode()):,} bytes{"" if changed else " (unchanged)"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
