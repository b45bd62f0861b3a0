-- The operator console updates itself when something is committed: every commit of a
-- gfx-sync writer inserts sync_events rows in its transaction (a "batch" event, errors,
-- quarantines), and this trigger tells listeners (LISTEN gfx_sync_events) once per
-- statement, at commit. The payload is empty: listeners read what they need themselves.
-- Idempotent.

create or replace function public.gfx_sync_notify_event() returns trigger
language plpgsql as $$
begin
    perform pg_notify('gfx_sync_events', '');
    return null;
end;
$$;

drop trigger if exists sync_events_notify on public.sync_events;
create trigger sync_events_notify
    after insert on public.sync_events
    for each statement execute function public.gfx_sync_notify_event();

revoke all on function public.gfx_sync_notify_event() from public, anon, authenticated;
