"""State survives a write torn by a crash: the other slot still holds the previous document."""

import pytest

from datadog_checks.dora_incidents.durable import DurableJson


class Cache:
    """The Agent's persistent cache as the check sees it: strings by key, written in place."""

    def __init__(self):
        self.files = {}

    def read_persistent_cache(self, key):
        return self.files.get(key, '')

    def write_persistent_cache(self, key, value):
        self.files[key] = value


def store(cache):
    return DurableJson(cache, 'state', parse=lambda d: d['n'], dump=lambda n: {'n': n})


def test_reads_back_the_latest_save():
    cache = Cache()
    for n in range(5):
        store_ = store(cache)
        store_.load()
        store_.save(n)
    assert store(cache).load() == 4
    assert len(cache.files) == 2


@pytest.mark.parametrize('torn', ['', '{"sequence": 3, "docu', '\x00\x00\x00'])
def test_a_torn_latest_write_falls_back_to_the_previous_one(torn):
    cache = Cache()
    writer = store(cache)
    writer.save(1)  # slot a
    writer.save(2)  # slot b
    cache.files['state_b'] = torn  # the Agent died while writing it

    reader = store(cache)
    assert reader.load() == 1
    reader.save(3)  # overwrites the torn slot, keeps the good one
    assert store(cache).load() == 3


def test_everything_unreadable_raises_value_error_and_later_saves_win():
    cache = Cache()
    cache.files = {'state_a': '{"sequence": 7, "document": {}}', 'state_b': 'junk'}
    broken = store(cache)
    with pytest.raises(ValueError):
        broken.load()
    broken.save(5)
    assert store(cache).load() == 5


def test_nothing_saved_reads_none():
    assert store(Cache()).load() is None
