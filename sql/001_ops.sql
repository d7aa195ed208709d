-- Operational bookkeeping shared by every domain. ops.schema_migrations itself is created by the
-- migration runner before any file runs, so that this file can be recorded like every other.
create schema if not exists ops;

comment on schema ops is 'trading_assets operations: migrations, maintenance, backups, alerts';
