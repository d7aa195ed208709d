-- Compression of cold and wide data. TimescaleDB (hypertables with compression segmented by exchange) is not
-- obtainable here, and its hypertables cannot be declaratively partitioned tables: its presence is recorded, the
-- partitioned layout stays, and retention's zstd parquet archives are the compression of cold data. Where the
-- server was built with lz4, the columns that can outgrow a page's TOAST threshold (about 2 kB: the JSONB feature
-- dict, the VIX curve) use it, faster to compress and read than pglz at a similar size. The other rows (bars,
-- packed EMA arrays of a few periods) stay far below that threshold, where compression never applies. The
-- choice is written to ops.maintenance_log.
do $$
declare
    v_lz4 boolean;
begin
    begin
        perform set_config('default_toast_compression', 'lz4', true);
        v_lz4 := true;
    exception when invalid_parameter_value then
        v_lz4 := false;
    end;
    if v_lz4 then
        alter table trading.ml_features alter column features set compression lz4;
        alter table trading.vix_term_structure alter column curve set compression lz4;
    end if;
    insert into ops.maintenance_log (task, target, started_at, finished_at, outcome, detail)
    values ('compression', 'toast', now(), now(), case when v_lz4 then 'done' else 'skipped' end,
            jsonb_build_object(
                'lz4', v_lz4,
                'timescaledb_available', exists (select from pg_available_extensions where name = 'timescaledb')));
end
$$;
