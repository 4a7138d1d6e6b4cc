#!/usr/bin/env bash
# Runs Datadog's own validators (`ddev validate ...`) on this integration the way integrations-extras CI runs them.
#
#   bash scripts/ddev_validate.sh                 # every validator below; exits 1 if any fails, naming them
#   bash scripts/ddev_validate.sh models readmes  # only those
#   bash scripts/ddev_validate.sh --sync          # let ddev write conf.yaml.example and config_models/ (not
#                                                 # validators.py) and copy them back here (scripts/sync_config.py)
#   bash scripts/ddev_validate.sh --test          # the validators, then `ddev test dora_incidents` (needs PyPI)
#   bash scripts/ddev_validate.sh --keep ...      # keep the scratch extras tree and print where it is
#
# ddev 20.x needs Python 3.13: DDEV_PYTHON, else pyenv's 3.13.x, else python3.13. ddev lives in a cached
# virtualenv, .venv-ddev/ (DDEV_VENV), reinstalled only when DDEV_VERSION changes. Only PyPI is reached.
# ddev validates integrations inside an integrations-extras checkout, so this builds one in a scratch folder:
# this repository's files (tracked, plus new files git does not ignore) in dora_incidents/, .github/CODEOWNERS,
# .github/workflows/test-all.yml (written by `ddev validate ci --sync`, as an extras contributor does), extras' root
# pyproject.toml as it is (scripts/ddev/integrations-extras-pyproject.toml), one commit, and a ddev config
# (repo = "extras") passed through DDEV_CONFIG with a HOME of its own.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHECK=dora_incidents
DDEV_VERSION=${DDEV_VERSION:-20.1.0}
VENV=${DDEV_VENV:-$ROOT/.venv-ddev}
CODEOWNER=${DDEV_CODEOWNER:-@DataDog/agent-integrations}
# What integrations-extras' validate.yml enables (ci ... codeowners), plus dashboards, service-checks and manifest.
# ddev 20 has no `validate manifest` command any more (Datadog checks manifests server-side, through an API that
# needs keys): `manifest` here runs datadog-checks-dev's offline manifest validators, as the old command did without
# the API call, plus the server-side rules known to us (see check_manifest below).
# `lint` is what `ddev test --lint` checks, with ddev's own ruff and the tree's root settings, without a hatch env.
ALL_VALIDATORS=(ci config imports integration-style jmx-metrics legacy-signature metadata models package readmes
  codeowners dashboards service-checks manifest lint)

SYNC=0 TEST=0 KEEP=0 VALIDATORS=()
for arg in "$@"; do
  case "$arg" in
    --sync) SYNC=1 ;;
    --test) TEST=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) VALIDATORS+=("$arg") ;;
  esac
done
[ ${#VALIDATORS[@]} -gt 0 ] || VALIDATORS=("${ALL_VALIDATORS[@]}")
[ "$SYNC" = 0 ] || VALIDATORS=()

log() { echo "== $*" >&2; }

# -- ddev, in a cached Python 3.13 virtualenv ------------------------------------------------------------------------
find_python313() {
  local candidate
  for candidate in "${DDEV_PYTHON:-}" \
      "$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python" \
      $(ls -d "$(pyenv root 2>/dev/null)"/versions/3.13.*/bin/python 2>/dev/null | sort -rV) \
      python3.13 python3; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; then
      command -v "$candidate" 2>/dev/null || echo "$candidate"
      return 0
    fi
  done
  return 1
}

if [ "$("$VENV/bin/ddev" --version 2>/dev/null)" != "ddev, version $DDEV_VERSION" ]; then
  PY313=$(find_python313) || { echo "error: ddev $DDEV_VERSION needs Python 3.13; set DDEV_PYTHON" >&2; exit 1; }
  log "installing ddev $DDEV_VERSION into $VENV ($("$PY313" --version))"
  rm -rf "$VENV"
  "$PY313" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "ddev==$DDEV_VERSION"
fi
DDEV="$VENV/bin/ddev"

# -- an integrations-extras-shaped tree ------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ddev-validate.XXXXXX")
if [ "$KEEP" = 1 ]; then
  trap 'log "scratch extras tree kept: $WORK/extras"' EXIT
else
  trap 'rm -rf "$WORK"' EXIT
fi
TREE="$WORK/extras"
mkdir -p "$TREE/$CHECK" "$TREE/.github/workflows" "$WORK/home"

# The files git would commit (tracked and not deleted, plus untracked ones it does not ignore): no venvs, caches,
# build output. Symlinks (the root conf.yaml.example) are copied as links.
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' path; do [ -e "$path" ] || [ -L "$path" ] && printf '%s\0' "$path"; done \
  | sort -zu | tar --null --no-recursion -T - -cf -) | tar -xf - -C "$TREE/$CHECK"

printf '/%s/    %s\n' "$CHECK" "$CODEOWNER" > "$TREE/.github/CODEOWNERS"

# integrations-extras' root pyproject.toml as it is (a kept copy): ddev formats the generated config models with its
# settings, and its ruff excludes them, so a model ruff would format differently fails here as it would there.
cp "$ROOT/scripts/ddev/integrations-extras-pyproject.toml" "$TREE/pyproject.toml"

# The hand-written part of integrations-extras' .github/workflows/test-all.yml; `ddev validate ci --sync` adds the jobs.
cat > "$TREE/.github/workflows/test-all.yml" <<'EOF'
name: Test all

on:
  workflow_call:
    inputs:
      repo:
        required: true
        type: string
      python-version:
        required: false
        default: "3.13"
        type: string
      latest:
        required: false
        default: false
        type: boolean
      test-py2:
        required: false
        default: false
        type: boolean
      test-py3:
        required: false
        default: true
        type: boolean
      agent-image:
        required: false
        default: ""
        type: string
      agent-image-py2:
        required: false
        default: ""
        type: string
      agent-image-windows:
        required: false
        default: ""
        type: string
      agent-image-windows-py2:
        required: false
        default: ""
        type: string
      setup-env-vars:
        required: false
        default: ""
        type: string

jobs:
EOF

cat > "$WORK/config.toml" <<EOF
repo = "extras"
agent = "dev"
org = "default"

[repos]
extras = "$TREE"

[orgs.default]
api_key = ""
app_key = ""
site = "datadoghq.com"
dd_url = "https://app.datadoghq.com"
EOF

export DDEV_CONFIG="$WORK/config.toml" HOME="$WORK/home" NO_COLOR=1 TERM=dumb COLUMNS=200 \
  XDG_CONFIG_HOME="$WORK/home/.config" XDG_DATA_HOME="$WORK/home/.local/share" \
  GIT_AUTHOR_NAME=ddev-validate GIT_AUTHOR_EMAIL=ddev-validate@localhost \
  GIT_COMMITTER_NAME=ddev-validate GIT_COMMITTER_EMAIL=ddev-validate@localhost
# Keep package caches (uv, pip) across runs: `ddev test` builds its environment with them.
export XDG_CACHE_HOME="$VENV/cache"
unset VIRTUAL_ENV PYTHONPATH

cd "$TREE"
ddev() { "$DDEV" "$@" </dev/null; }
ddev validate ci --sync >/dev/null
git init -q -b master .
git add -A
git -c commit.gpgsign=false commit -q --no-verify -m "Add $CHECK"

# -- --sync: let ddev write the generated files, copy them back -------------------------------------------------------
if [ "$SYNC" = 1 ]; then
  PACKAGE="$CHECK/datadog_checks/$CHECK"
  ddev validate config -s "$CHECK"
  ddev validate models -s "$CHECK"
  cp "$PACKAGE/data/conf.yaml.example" "$ROOT/datadog_checks/$CHECK/data/conf.yaml.example"
  for file in "$PACKAGE"/config_models/*.py; do
    name=$(basename "$file")
    case "$name" in
      validators.py|deprecations.py|discovery_strategies.py|discovery_overrides.py)
        [ -e "$ROOT/datadog_checks/$CHECK/config_models/$name" ] && continue ;;  # written once, then by hand
    esac
    cp "$file" "$ROOT/datadog_checks/$CHECK/config_models/$name"
  done
  log "conf.yaml.example and config_models/ are now as ddev $DDEV_VERSION renders them"
  exit 0
fi

# -- the validators ---------------------------------------------------------------------------------------------------
check_manifest() {
  "$VENV/bin/python" - "$TREE" "$CHECK" <<'PY'
import json, re, sys
from pathlib import Path

from datadog_checks.dev.tooling.constants import set_root
from datadog_checks.dev.tooling.datastructures import JSONDict
from datadog_checks.dev.tooling.manifest_validator.v2.validator import get_v2_validators

tree, check = sys.argv[1:]
set_root(tree)
folder = Path(tree) / check
manifest = JSONDict(json.loads((folder / 'manifest.json').read_text()))
failures = []
# What `ddev validate manifest` ran, less the schema check that posts the manifest to Datadog's API.
for validator in get_v2_validators(None, is_extras=True, is_marketplace=False, ignore_schema=True):
    validator.validate(check, manifest, False)
    name = type(validator).__name__
    failures += [f'{name}: {message.strip()}' for message in validator.result.messages['failure']]
    for message in validator.result.messages['warning']:
        print(f'warning: {name}: {message.strip()}')
# Datadog's server-side checks that we know of.
headings = {
    re.sub(r'[^a-z0-9 _-]', '', line.lstrip('#').strip().lower()).replace(' ', '-')
    for line in (folder / 'README.md').read_text().splitlines()
    if line.startswith('#')
}
for key in ('overview', 'configuration', 'support'):
    target = manifest['tile'].get(key, '')
    path, _, anchor = target.partition('#')
    if path != 'README.md' or anchor.lower() not in headings:
        failures.append(f'tile.{key} = {target!r}: no such section in README.md')
if not isinstance(manifest.get('owner'), str) or not manifest['owner'].strip():
    failures.append('`owner` (the owning team) is missing')
if not isinstance(manifest['assets']['integration'].get('source_type_id'), int):
    failures.append('assets.integration.source_type_id (an integer) is missing')
for failure in failures:
    print(f'{check}: {failure}')
print(f'{check}: manifest.json is valid' if not failures else f'Errors: {len(failures)}')
sys.exit(1 if failures else 0)
PY
}

FAILED=() PASSED=()
for validator in "${VALIDATORS[@]}"; do
  case "$validator" in
    ci|codeowners) args=() ;;  # whole-repository validators
    *) args=("$CHECK") ;;
  esac
  if [ "$validator" = lint ]; then
    echo "== lint (ruff check and ruff format --check, as ddev test --lint)"
    if "$VENV/bin/ruff" check "$CHECK" && "$VENV/bin/ruff" format --check "$CHECK"; then
      PASSED+=("$validator")
    else
      FAILED+=("$validator")
    fi
    continue
  fi
  if [ "$validator" = manifest ]; then
    echo "== manifest (offline validators of datadog-checks-dev, and the server-side rules known to us)"
    if check_manifest; then PASSED+=("$validator"); else FAILED+=("$validator"); fi
    continue
  fi
  echo "== ddev validate $validator ${args[*]:-}"
  if ddev validate "$validator" "${args[@]}"; then PASSED+=("$validator"); else FAILED+=("$validator"); fi
done

TEST_STATUS=0
if [ "$TEST" = 1 ]; then
  # hatch looks for python3.13 on PATH; without one it would try to download a Python, off PyPI.
  PY313=$(find_python313) || { echo "error: ddev test needs Python 3.13; set DDEV_PYTHON" >&2; exit 1; }
  PATH="$(dirname "$PY313"):$VENV/bin:$PATH"
  echo "== ddev test $CHECK"
  ddev test "$CHECK" || TEST_STATUS=$?
fi

echo
echo "ddev $DDEV_VERSION: ${#PASSED[@]} validators passed${PASSED[*]:+ (${PASSED[*]})}"
[ "$TEST" = 0 ] || { [ "$TEST_STATUS" = 0 ] && echo "ddev test $CHECK: passed" || echo "ddev test $CHECK: FAILED"; }
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED validators: ${FAILED[*]}"
  exit 1
fi
exit "$TEST_STATUS"
