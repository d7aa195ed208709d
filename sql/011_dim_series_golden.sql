-- core_energy.dim_series is the golden table: operators edit it with SQL, everything else follows it.
-- The database records each change of its content (a version counter that Dagster observes as the table's
-- data version) and refuses writes to map_model_series other than its refresh.

-- One row: the content version of dim_series, bumped once by every transaction that changes a row (in that
-- transaction, so a rolled-back edit leaves no trace). Version 0 means the table never held a row (a new
-- database): only then is it seeded from the configured file.
create table if not exists core_energy.dim_series_state (
    singleton boolean primary key default true check (singleton),
    version bigint not null default 0 check (version >= 0),
    changed_at timestamptz,
    changed_by text,
    changed_xact xid8
);
insert into core_energy.dim_series_state (version, changed_at, changed_by)
select case when exists (select 1 from core_energy.dim_series) then 1 else 0 end,
       (select max(updated_at) from core_energy.dim_series), null
on conflict do nothing;
comment on table core_energy.dim_series_state is
    'Content version of core_energy.dim_series (bumped by its triggers); Dagster observes it as the data version';

-- A statement that changes no content (an update to the same values, a delete of nothing) is not a change:
-- it would otherwise rebuild the map, the view and the backup for nothing.
create or replace function core_energy.dim_series_changed() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        if not exists (select 1 from new_rows) then
            return null;
        end if;
    elsif tg_op = 'DELETE' then
        if not exists (select 1 from old_rows) then
            return null;
        end if;
    elsif tg_op = 'UPDATE' then
        if not exists (select model_col, series_code, unit, freq, description, tags from new_rows
                       except
                       select model_col, series_code, unit, freq, description, tags from old_rows) then
            return null;
        end if;
    end if;
    -- One version per transaction: an import (deletes, updates and inserts) or a psql session's several
    -- statements are one change.
    update core_energy.dim_series_state
       set version = version + case when changed_xact = pg_current_xact_id() then 0 else 1 end,
           changed_at = now(), changed_by = current_user, changed_xact = pg_current_xact_id();
    return null;
end
$$;

-- Transition tables allow one event per trigger.
drop trigger if exists dim_series_inserted on core_energy.dim_series;
create trigger dim_series_inserted after insert on core_energy.dim_series
    referencing new table as new_rows
    for each statement execute function core_energy.dim_series_changed();
drop trigger if exists dim_series_updated on core_energy.dim_series;
create trigger dim_series_updated after update on core_energy.dim_series
    referencing old table as old_rows new table as new_rows
    for each statement execute function core_energy.dim_series_changed();
drop trigger if exists dim_series_deleted on core_energy.dim_series;
create trigger dim_series_deleted after delete on core_energy.dim_series
    referencing old table as old_rows
    for each statement execute function core_energy.dim_series_changed();
drop trigger if exists dim_series_truncated on core_energy.dim_series;
create trigger dim_series_truncated after truncate on core_energy.dim_series
    for each statement execute function core_energy.dim_series_changed();

-- updated_at says when a row's content last changed, whoever changed it (SQL or an import).
create or replace function core_energy.dim_series_touch() returns trigger language plpgsql as $$
begin
    if (new.model_col, new.series_code, new.unit, new.freq, new.description, new.tags)
       is distinct from (old.model_col, old.series_code, old.unit, old.freq, old.description, old.tags) then
        new.updated_at := now();
    end if;
    return new;
end
$$;
drop trigger if exists dim_series_touch on core_energy.dim_series;
create trigger dim_series_touch before update on core_energy.dim_series
    for each row execute function core_energy.dim_series_touch();

-- Deferrable so that one transaction can swap series codes between two model_cols (an import of a file that
-- does): a non-deferrable unique constraint is checked row by row.
alter table core_energy.dim_series drop constraint if exists dim_series_series_code_key;
alter table core_energy.dim_series
    add constraint dim_series_series_code_key unique (series_code) deferrable initially immediate;

-- map_model_series is derived: only its refresh writes it. The setting is local to the refresh function
-- (restored when it returns), so no other statement of the transaction inherits the permission.
create or replace function core_energy.guard_map_model_series() returns trigger language plpgsql as $$
begin
    if coalesce(current_setting('trading_assets.refreshing_map', true), '') <> 'on' then
        raise exception 'core_energy.map_model_series is derived from core_energy.dim_series and written only by '
                        'its refresh; edit core_energy.dim_series instead'
            using hint = 'map_model_series, v_series_wide and the dim_series backup follow a dim_series edit by '
                         'themselves (docs/metadata_maintenance_guide.txt)';
    end if;
    return null;
end
$$;
drop trigger if exists map_model_series_guard on core_energy.map_model_series;
create trigger map_model_series_guard before insert or update or delete or truncate on core_energy.map_model_series
    for each statement execute function core_energy.guard_map_model_series();

create or replace function core_energy.refresh_map_model_series() returns integer
language plpgsql
set trading_assets.refreshing_map = 'on'
as $$
declare
    written integer;
begin
    -- delete, not truncate: readers of v_series_wide keep seeing the old map until the commit.
    delete from core_energy.map_model_series;
    insert into core_energy.map_model_series (model_col, series_code)
    select model_col, series_code from core_energy.dim_series;
    get diagnostics written = row_count;
    return written;
end
$$;
comment on function core_energy.refresh_map_model_series() is
    'Derive core_energy.map_model_series from dim_series (the only allowed writer); returns its row count';

-- The wide view's columns come from map_model_series, the table it joins, so the view reads one input and
-- follows the map (never a dim_series edit the map has not followed yet).
create or replace function core_energy.refresh_v_series_wide() returns integer
language plpgsql
as $$
declare
    wide regclass := to_regclass('core_energy.v_series_wide');
    column_list text;
    dependent record;
    dependents jsonb := '[]'::jsonb;
    column_count integer;
begin
    if wide is not null then
        for dependent in
            with recursive chain(view_oid, depth) as (
                select distinct rw.ev_class, 1
                from pg_depend d
                join pg_rewrite rw on rw.oid = d.objid
                where d.refobjid = wide and rw.ev_class <> wide
                union all
                select distinct rw.ev_class, chain.depth + 1
                from chain
                join pg_depend d on d.refobjid = chain.view_oid
                join pg_rewrite rw on rw.oid = d.objid
                where rw.ev_class <> chain.view_oid
            )
            select c.oid, n.nspname, c.relname, c.relkind, max(chain.depth) as depth,
                   pg_get_viewdef(c.oid) as definition,
                   obj_description(c.oid, 'pg_class') as comment
            from chain
            join pg_class c on c.oid = chain.view_oid
            join pg_namespace n on n.oid = c.relnamespace
            group by c.oid, n.nspname, c.relname, c.relkind
            order by max(chain.depth)
        loop
            dependents := dependents || jsonb_build_object(
                'schema', dependent.nspname, 'name', dependent.relname, 'kind', dependent.relkind,
                'definition', dependent.definition, 'comment', dependent.comment);
        end loop;
        execute 'drop view core_energy.v_series_wide cascade';
    end if;

    select string_agg(
               format('max(f.value) filter (where m.model_col = %L) as %I', d.model_col, d.model_col),
               E',\n       ' order by d.model_col),
           count(*)
      into column_list, column_count
      from core_energy.map_model_series d;

    execute format(
        'create view core_energy.v_series_wide as
         select f.obs_date as date%s
         from core_energy.fact_series_value f
         join core_energy.map_model_series m on m.series_code = f.series_code
         group by f.obs_date',
        coalesce(E',\n       ' || column_list, ''));
    execute $c$comment on view core_energy.v_series_wide is
        'One row per observation date, one column per dim_series.model_col (built by refresh_v_series_wide)'$c$;

    for dependent in select * from jsonb_array_elements(dependents) as item(value) loop
        begin
            execute format(
                'create %s %I.%I as %s',
                case when dependent.value->>'kind' = 'm' then 'materialized view' else 'view' end,
                dependent.value->>'schema', dependent.value->>'name',
                case when exists (select 1 from core_energy.wide_view_followers f
                                  where f.view_schema = dependent.value->>'schema'
                                    and f.view_name = dependent.value->>'name')
                     then 'select * from core_energy.v_series_wide'
                     else rtrim(dependent.value->>'definition', ';') end);
        exception when others then
            raise exception 'view %.% depends on core_energy.v_series_wide and no longer compiles against it: %',
                dependent.value->>'schema', dependent.value->>'name', sqlerrm
                using hint = 'change or drop that view first; v_series_wide was left as it was';
        end;
        if dependent.value->>'comment' is not null then
            execute format('comment on %s %I.%I is %L',
                case when dependent.value->>'kind' = 'm' then 'materialized view' else 'view' end,
                dependent.value->>'schema', dependent.value->>'name', dependent.value->>'comment');
        end if;
    end loop;

    for dependent in
        select f.view_schema, f.view_name from core_energy.wide_view_followers f
        where to_regclass(format('%I.%I', f.view_schema, f.view_name)) is null
    loop
        execute format('create view %I.%I as select * from core_energy.v_series_wide',
                       dependent.view_schema, dependent.view_name);
    end loop;
    return column_count;
end;
$$;

comment on function core_energy.refresh_v_series_wide() is
    'Rebuild core_energy.v_series_wide with one column per map_model_series row; dependent views are recreated; '
    'returns the column count';
