"""Dagster's instance storage in the platform's PostgreSQL, found the way the platform finds its own
database, so that `dagster dev`, `dagster definitions validate` and `dg` work in the project root with
no environment set (the embedded server is started on demand)."""

from dagster._config.config_schema import UserConfigSchema
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage

from trading_assets.io.database import instance_storage_url


class PlatformStorage(DagsterPostgresStorage):
    """Runs, events and schedules in the `dagster` database beside the platform's own (DAGSTER_PG_URL
    overrides it). Configured in dagster.yaml with no fields: the URL, which may hold a password, is never
    written into the instance's configuration."""

    def __init__(self, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(instance_storage_url(), inst_data=inst_data)

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {}

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: object
    ) -> "PlatformStorage":
        return cls(inst_data=inst_data)
