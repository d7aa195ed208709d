-- v_series_wide: one column per dim_series.model_col, rebuilt by refresh_v_series_wide().

-- Views that always show every series: recreated as `select *` of the new v_series_wide on each
-- refresh. Any other view on v_series_wide is recreated from its own definition (its columns kept).
create table if not exists core_energy.wide_view_followers (
    view_schema text not null,
    view_name text not null,
    primary key (view_schema, view_name)
);

insert into core_energy.wide_view_followers values ('core_energy', 'v_model_wide') on conflict do nothing;

--
-- The view is dropped and created (not CREATE OR REPLACE, which cannot insert a column before existing
-- ones) inside the caller's transaction. Views that depend on it are captured first and recreated
-- afterwards in dependency order, so they are rebuilt rather than lost to the CASCADE; if one no longer
-- compiles (it used a dropped column) the whole refresh fails and nothing changes.
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
      from core_energy.dim_series d;

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
    'Rebuild core_energy.v_series_wide from dim_series; dependent views are recreated; returns the column count';
