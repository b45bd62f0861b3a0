-- Row-level security: only the service role and gfx-sync's writer role may write.
-- Idempotent, and runs on plain Postgres as on Supabase: the Supabase roles are created
-- (NOLOGIN, no rights of their own) where they do not exist, so the policies can name them.
--
--   service_role     Supabase's REST key role: writes (it has BYPASSRLS on Supabase; the
--                    policies below also let it through where it has not, e.g. plain Postgres)
--   gfx_sync_writer  NOLOGIN; for a direct connection make a LOGIN user a member of it
--                    (README, "Security"): upserts sessions, appends sync events, nothing else
--   authenticated    may read sessions, events and the status views (dashboards behind a login,
--                    Supabase Realtime subscriptions), never write
--   anon             nothing: the anon key ships in browsers, and hands hold player names
-- TRUNCATE is not subject to RLS, so table privileges are revoked as well, not only policed.

do $$
declare
    wanted text;
begin
    foreach wanted in array array['anon', 'authenticated', 'service_role', 'gfx_sync_writer'] loop
        if not exists (select 1 from pg_roles where rolname = wanted) then
            begin
                execute format('create role %I nologin', wanted);
            exception when duplicate_object or unique_violation then
                null;  -- another database of this cluster created it meanwhile
            end;
        end if;
    end loop;
end;
$$;

alter table public.gfx_sessions enable row level security;
alter table public.sync_events enable row level security;
-- gfx-sync's own migration ledger (gfx_sync/migrate.py) sits in `public` too: only the owner
-- writes it; the writer may read it, so gfx-sync started as the writer sees it is up to date.
do $$
begin
    if to_regclass('public.gfx_sync_migrations') is not null then
        execute 'alter table public.gfx_sync_migrations enable row level security';
        execute 'revoke all on table public.gfx_sync_migrations '
                'from public, anon, authenticated, gfx_sync_writer';
        execute 'grant select on table public.gfx_sync_migrations to gfx_sync_writer';
        execute 'drop policy if exists gfx_sync_migrations_writer_read '
                'on public.gfx_sync_migrations';
        execute 'create policy gfx_sync_migrations_writer_read on public.gfx_sync_migrations '
                'for select to gfx_sync_writer using (true)';
    end if;
end;
$$;

-- Table privileges: Supabase grants ALL on new public tables to anon and authenticated.
revoke all on table public.gfx_sessions, public.sync_events
    from public, anon, authenticated, gfx_sync_writer;
grant select on table public.gfx_sessions, public.sync_events to authenticated;
grant select, insert, update on table public.gfx_sessions to gfx_sync_writer;
grant insert on table public.sync_events to gfx_sync_writer;
grant select, insert, update, delete on table public.gfx_sessions, public.sync_events
    to service_role;
grant usage on schema public to anon, authenticated, service_role, gfx_sync_writer;
-- The Postgres sink COPYs each batch into a temporary table (dropped at commit).
do $$
begin
    execute format('grant temporary on database %I to gfx_sync_writer', current_database());
end;
$$;

-- Policies (a policy for a role applies to its members too).
drop policy if exists gfx_sessions_service_role_all on public.gfx_sessions;
create policy gfx_sessions_service_role_all on public.gfx_sessions
    for all to service_role using (true) with check (true);
drop policy if exists gfx_sessions_writer_select on public.gfx_sessions;
create policy gfx_sessions_writer_select on public.gfx_sessions
    for select to gfx_sync_writer using (true);  -- INSERT ... ON CONFLICT DO UPDATE reads the row
drop policy if exists gfx_sessions_writer_insert on public.gfx_sessions;
create policy gfx_sessions_writer_insert on public.gfx_sessions
    for insert to gfx_sync_writer with check (true);
drop policy if exists gfx_sessions_writer_update on public.gfx_sessions;
create policy gfx_sessions_writer_update on public.gfx_sessions
    for update to gfx_sync_writer using (true) with check (true);
drop policy if exists gfx_sessions_authenticated_read on public.gfx_sessions;
create policy gfx_sessions_authenticated_read on public.gfx_sessions
    for select to authenticated using (true);

drop policy if exists sync_events_service_role_all on public.sync_events;
create policy sync_events_service_role_all on public.sync_events
    for all to service_role using (true) with check (true);
drop policy if exists sync_events_writer_insert on public.sync_events;
create policy sync_events_writer_insert on public.sync_events
    for insert to gfx_sync_writer with check (true);
drop policy if exists sync_events_authenticated_read on public.sync_events;
create policy sync_events_authenticated_read on public.sync_events
    for select to authenticated using (true);

-- Views run with their owner's rights unless security_invoker is set (PostgreSQL 15+): without
-- it, anyone allowed to select from a view would read the tables past RLS.
do $$
begin
    if current_setting('server_version_num')::int >= 150000 then
        execute 'alter view public.pc_status set (security_invoker = true)';
        execute 'alter view public.sync_stats set (security_invoker = true)';
    end if;
end;
$$;
revoke all on table public.pc_status, public.sync_stats
    from public, anon, authenticated, gfx_sync_writer;
grant select on table public.pc_status, public.sync_stats to authenticated, service_role;

-- The trigger function is not an API: no one calls it directly.
revoke all on function public.gfx_sessions_keep_newest() from public, anon, authenticated;
