"""``partitions.count`` and ``partitions.lease_ttl_s``: accepted at their bounds, refused past
them with an error that names the key."""

import pytest

from runtime.config import ConfigError, load_config


@pytest.mark.parametrize("value", ["1", "256"])
def test_partition_count_at_the_bounds(value: str) -> None:
    assert load_config({"COURIER_PARTITIONS_COUNT": value}).partitions.count == int(value)


@pytest.mark.parametrize("value", ["1", "1.0", "120", "120.0"])
def test_lease_ttl_at_the_bounds(value: str) -> None:
    config = load_config({"COURIER_PARTITIONS_LEASE_TTL_S": value})
    assert config.partitions.lease_ttl_s == float(value)


@pytest.mark.parametrize(("key", "value"), [
    ("COURIER_PARTITIONS_COUNT", "0"), ("COURIER_PARTITIONS_COUNT", "-1"),
    ("COURIER_PARTITIONS_COUNT", "257"), ("COURIER_PARTITIONS_COUNT", "4.5"),
    ("COURIER_PARTITIONS_COUNT", "four"),
    ("COURIER_PARTITIONS_LEASE_TTL_S", "0.99"), ("COURIER_PARTITIONS_LEASE_TTL_S", "0"),
    ("COURIER_PARTITIONS_LEASE_TTL_S", "120.01"), ("COURIER_PARTITIONS_LEASE_TTL_S", "nan"),
    ("COURIER_PARTITIONS_LEASE_TTL_S", "soon"),
])
def test_partition_settings_past_the_bounds_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({key: value})
    assert key in str(info.value)
