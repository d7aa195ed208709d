-- core_energy.dim_series: the database refuses a model_col that the wide view cannot take as a column name.
--
-- model_col becomes a column of core_energy.v_series_wide, whose own first column is `date` (the observation
-- date). A series named `date` used to pass every rule, be committed, and only then make the view's rebuild
-- fail: dim_series and the view disagreed. series-import refuses such a file (with its line); this refuses the
-- same name in a SQL edit. The trigger gives the clear message; the constraint holds even where triggers are
-- skipped (session_replication_role = replica, as some restores set it).

create or replace function core_energy.dim_series_model_col_guard() returns trigger language plpgsql as $$
begin
    if new.model_col = 'date' then
        raise exception 'model_col % is refused: core_energy.v_series_wide has a column of that name itself '
                        '(the observation date), so the view could not be rebuilt', quote_literal(new.model_col)
            using errcode = 'check_violation', schema = 'core_energy', table = 'dim_series', column = 'model_col',
                  constraint = 'dim_series_model_col_not_view_column',
                  hint = 'choose another name: lower snake_case (^[a-z][a-z0-9_]*$), at most 63 bytes, not date';
    end if;
    return new;
end
$$;
comment on function core_energy.dim_series_model_col_guard() is
    'Refuses a dim_series.model_col that is a column of core_energy.v_series_wide itself (date)';

drop trigger if exists dim_series_model_col_guard on core_energy.dim_series;
create trigger dim_series_model_col_guard before insert or update on core_energy.dim_series
    for each row execute function core_energy.dim_series_model_col_guard();

-- NOT VALID first, so that a database already holding such a row still migrates (and starts): new rows and
-- every update are checked at once; the existing rows are validated only when none breaks the rule. The check
-- model_col_valid reports the offending row until it is renamed.
alter table core_energy.dim_series drop constraint if exists dim_series_model_col_not_view_column;
alter table core_energy.dim_series
    add constraint dim_series_model_col_not_view_column check (model_col <> 'date') not valid;

do $$
begin
    if exists (select from core_energy.dim_series where model_col = 'date') then
        raise warning 'core_energy.dim_series has a series with model_col ''date'', which core_energy.v_series_wide '
                      'cannot show: rename it (insert it under another name and delete it, in one transaction)';
    else
        alter table core_energy.dim_series validate constraint dim_series_model_col_not_view_column;
    end if;
end
$$;
