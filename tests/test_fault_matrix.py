"""The whole fault matrix (`python -m loopback.faults`): every cell loses nothing and duplicates nothing."""

from loopback.faults import run_matrix, table


def test_every_fault_at_every_page_ends_with_each_resolution_reported_once():
    rows = run_matrix()

    failed = [row for row in rows if not row.ok]
    assert not failed, '\n' + table(failed)
    assert len(rows) == 57
    assert all(row.counts['reported'] == row.counts['resolved'] for row in rows)
