-- gfx-sync schema: one row per PokerGFX table session, always its newest snapshot.
-- Idempotent: safe to apply again on any Postgres (plain, embedded or Supabase).

create table if not exists public.gfx_sessions (
    gfx_pc_id          text        not null,
    session_id         bigint      not null,
    file_name          text        not null,
    file_path          text        not null,
    file_hash          text        not null,
    file_size          bigint      not null,
    file_mtime         timestamptz not null,
    raw_json           jsonb       not null,
    table_type         text,
    event_title        text,
    software_version   text,
    hand_count         integer     not null,
    session_created_at timestamptz,
    sync_source        text        not null default 'manual',
    sync_status        text        not null default 'synced',
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    primary key (gfx_pc_id, session_id)
);

create index if not exists gfx_sessions_updated_at_idx on public.gfx_sessions (updated_at desc);
create index if not exists gfx_sessions_session_id_idx on public.gfx_sessions (session_id);

-- The upsert semantics, in one place for every writer (the Postgres sink's
-- INSERT ... ON CONFLICT and PostgREST's merge-duplicates upsert alike):
-- the newest snapshot wins (more hands, then later mtime, then hash as a tiebreak),
-- an older snapshot never overwrites a newer one, and an identical re-send writes nothing.
create or replace function public.gfx_sessions_keep_newest() returns trigger
language plpgsql as $$
begin
    if new.file_hash = old.file_hash
       or (new.hand_count, new.file_mtime, new.file_hash)
          <= (old.hand_count, old.file_mtime, old.file_hash) then
        return null;  -- skip this row: nothing is written, updated_at stays
    end if;
    new.created_at := old.created_at;
    new.updated_at := now();
    return new;
end;
$$;

drop trigger if exists gfx_sessions_keep_newest on public.gfx_sessions;
create trigger gfx_sessions_keep_newest
    before update on public.gfx_sessions
    for each row execute function public.gfx_sessions_keep_newest();

create table if not exists public.sync_events (
    id          bigint generated always as identity primary key,
    occurred_at timestamptz not null default now(),
    event_type  text        not null
                check (event_type in ('synced', 'batch', 'error', 'quarantined', 'recovery')),
    gfx_pc_id   text,
    file_path   text,
    session_id  bigint,
    file_count  integer     not null default 0,
    error       text,
    details     jsonb       not null default '{}'::jsonb
);

create index if not exists sync_events_occurred_at_idx on public.sync_events (occurred_at desc);
create index if not exists sync_events_pc_idx on public.sync_events (gfx_pc_id, occurred_at desc);

-- Per PC: sessions, last sync, recent errors, and online (synced in the last 5 minutes),
-- idle (in the last hour) or offline.
create or replace view public.pc_status as
with pcs as (
    select gfx_pc_id from public.gfx_sessions
    union
    select gfx_pc_id from public.sync_events where gfx_pc_id is not null
), sessions as (
    select gfx_pc_id, count(*) as session_count, max(updated_at) as last_sync,
           sum(hand_count) as hand_count
    from public.gfx_sessions group by gfx_pc_id
), errors as (
    select gfx_pc_id,
           count(*) filter (where occurred_at > now() - interval '1 hour') as errors_last_hour,
           max(occurred_at) as last_error_at
    from public.sync_events where event_type in ('error', 'quarantined') group by gfx_pc_id
)
select pcs.gfx_pc_id,
       coalesce(sessions.session_count, 0) as session_count,
       coalesce(sessions.hand_count, 0) as hand_count,
       sessions.last_sync,
       coalesce(errors.errors_last_hour, 0) as errors_last_hour,
       errors.last_error_at,
       case
           when sessions.last_sync > now() - interval '5 minutes' then 'online'
           when sessions.last_sync > now() - interval '1 hour' then 'idle'
           else 'offline'
       end as status
from pcs
left join sessions using (gfx_pc_id)
left join errors using (gfx_pc_id);

create or replace view public.sync_stats as
select
    (select count(*) from public.gfx_sessions) as total_sessions,
    (select coalesce(sum(hand_count), 0) from public.gfx_sessions) as total_hands,
    (select count(distinct gfx_pc_id) from public.gfx_sessions) as total_pcs,
    (select count(*) from public.gfx_sessions
      where updated_at > now() - interval '1 hour') as sessions_updated_last_hour,
    (select count(*) from public.gfx_sessions
      where updated_at > now() - interval '1 day') as sessions_updated_last_day,
    (select coalesce(sum(file_count), 0) from public.sync_events
      where event_type = 'batch' and occurred_at > now() - interval '1 hour') as files_synced_last_hour,
    (select coalesce(sum(file_count), 0) from public.sync_events
      where event_type = 'batch' and occurred_at > now() - interval '1 day') as files_synced_last_day,
    (select count(*) from public.sync_events
      where event_type in ('error', 'quarantined')
        and occurred_at > now() - interval '1 hour') as errors_last_hour,
    (select count(*) from public.sync_events
      where event_type in ('error', 'quarantined')
        and occurred_at > now() - interval '1 day') as errors_last_day,
    (select max(updated_at) from public.gfx_sessions) as last_sync;

-- Supabase Realtime: publish changes only where the publication exists (not on plain Postgres).
do $$
begin
    if exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
        if not exists (select 1 from pg_publication_tables
                       where pubname = 'supabase_realtime'
                         and schemaname = 'public' and tablename = 'gfx_sessions') then
            execute 'alter publication supabase_realtime add table public.gfx_sessions';
        end if;
        if not exists (select 1 from pg_publication_tables
                       where pubname = 'supabase_realtime'
                         and schemaname = 'public' and tablename = 'sync_events') then
            execute 'alter publication supabase_realtime add table public.sync_events';
        end if;
    end if;
end;
$$;
