"""Configuration is read once and rejects malformed values with the variable's name."""

import pytest

from wspush.settings import MAX_CONNECTION_LIFETIME_SECONDS, Settings, SettingsError

BASE = {"WSPUSH_TABLE_NAME": "t", "AWS_REGION": "eu-west-1"}


def test_defaults_and_platform_list() -> None:
    settings = Settings.from_env({**BASE, "WSPUSH_ALLOWED_PLATFORMS": " pc, mobile ,,"})
    assert settings.region == "eu-west-1"
    assert settings.allowed_platforms == frozenset({"pc", "mobile"})
    assert settings.connection_ttl_seconds > MAX_CONNECTION_LIFETIME_SECONDS
    assert settings.page_size is None


def test_missing_table_name_is_an_error() -> None:
    with pytest.raises(SettingsError, match="WSPUSH_TABLE_NAME"):
        Settings.from_env({})


@pytest.mark.parametrize("value", ["many", "0", "-3"])
def test_bad_concurrency_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="WSPUSH_DELIVERY_CONCURRENCY"):
        Settings.from_env({**BASE, "WSPUSH_DELIVERY_CONCURRENCY": value})
