"""Generates the configuration reference of docs/configuration.md from assets/configuration/spec.yaml.

python scripts/config_reference.py          # print it
python scripts/config_reference.py --write  # replace the section of docs/configuration.md between the markers
"""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / 'docs' / 'configuration.md'
START, END = '<!-- config-reference:start -->', '<!-- config-reference:end -->'


def instance_options() -> list[dict]:
    spec = yaml.safe_load((ROOT / 'assets/configuration/spec.yaml').read_text())
    [file] = spec['files']
    instances = next(section for section in file['options'] if section.get('template') == 'instances')
    return [option for option in instances['options'] if 'name' in option]


def reference() -> str:
    rows = ['| option | type | default | description |', '|---|---|---|---|']
    for option in instance_options():
        value = option['value']
        kind = value['type'] + (f' of {value["items"]["type"]}' if value['type'] == 'array' else '')
        if option.get('required'):
            default = '**required**'
        elif 'display_default' in value:
            shown = value['display_default']
            default = 'none' if shown is None else f'`{str(shown).lower() if isinstance(shown, bool) else shown}`'
        else:
            default = 'none'
        description = ' '.join(option['description'].split())
        rows.append(f'| `{option["name"]}` | {kind} | {default} | {description} |')
    rows.append(
        '\nPlus the options every Agent check has (`tags`, `min_collection_interval`, `service`, '
        '`disable_generic_tags`, ...) and the standard HTTP options (`timeout`, `proxy`, `skip_proxy`, '
        '`tls_verify`, `tls_ca_cert`, `headers`, ...): see '
        '[`conf.yaml.example`](../datadog_checks/dora_incidents/data/conf.yaml.example).'
    )
    return '\n'.join(rows)


def page_with_reference(page: str) -> str:
    section = f'{START}\n{reference()}\n{END}'
    return re.sub(re.escape(START) + '.*?' + re.escape(END), lambda _: section, page, flags=re.S)


if __name__ == '__main__':
    if '--write' in sys.argv:
        PAGE.write_text(page_with_reference(PAGE.read_text()))
    else:
        print(reference())
