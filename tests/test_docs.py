"""The documentation's links hold: every relative link in README.md, CONTRIBUTING.md and docs/**/*.md names a file or
folder of the repository, and every anchor a heading of the page it points to (GitHub's anchors)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md', ROOT / 'CONTRIBUTING.md', *sorted((ROOT / 'docs').rglob('*.md'))]
LINK = re.compile(r'\[[^\]\n]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'^\s*```.*?^\s*```', re.DOTALL | re.MULTILINE)
HEADING = re.compile(r'^#{1,6}\s+(.+?)\s*#*$', re.MULTILINE)


def prose(path: Path) -> str:
    """The page without its code blocks, where `[x](y)` is code, not a link."""
    return FENCE.sub('', path.read_text())


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens, `-1`, `-2`
    for repeats."""
    found: set[str] = set()
    for heading in HEADING.findall(prose(path)):
        slug = re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-')
        anchor, repeat = slug, 0
        while anchor in found:
            repeat += 1
            anchor = f'{slug}-{repeat}'
        found.add(anchor)
    return found


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(prose(path)) if not re.match(r'[a-z][a-z0-9+.-]*:', target)]


@pytest.mark.parametrize('page', PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_names_a_file_and_a_heading_of_it(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition('#')
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f'{target}: no such file')
        elif anchor and linked.suffix == '.md' and anchor not in anchors(linked):
            broken.append(f'{target}: no such heading in {linked.relative_to(ROOT)}')
    assert not broken, f'{page.relative_to(ROOT)}: broken links: {broken}'


def test_the_link_check_sees_links_anchors_and_code():
    readme = ROOT / 'README.md'
    assert 'docs/design.md#change-failures' in relative_links(readme)
    assert {'overview', 'setup', 'support', 'data-collected'} <= anchors(readme)
    assert 'rootly-source-rootly' in anchors(ROOT / 'docs' / 'sources' / 'rootly.md')
    assert not any(link.startswith('https:') for link in relative_links(readme))
