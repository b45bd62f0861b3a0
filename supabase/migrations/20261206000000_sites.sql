-- Sites: several venues (each its own gfx-sync agent, GFX_SYNC_SITE) write one target, and
-- every venue has a PC01. Each row carries its site, first in every key:
--   gfx_sessions (site_id, gfx_pc_id, session_id), the hand tables likewise prefixed,
--   sync_events.site_id, pc_status one row per (site, PC), site_stats one row per site.
-- A single-site install keeps writing site 'default' (the column default).
-- Idempotent: safe to apply again on any Postgres (plain, embedded or Supabase).
--
-- Upgrading in place, in one transaction:
-- * the new columns have a constant default, which PostgreSQL records in the catalog without
--   rewriting a row (raw_json is not touched); every existing row is site 'default';
-- * the site_id checks and the new foreign keys are added NOT VALID: they hold for every new
--   row, and the existing rows are the 'default' rows this file's default gave them and rows
--   that satisfied the old foreign keys (a scan of every hand row would only lengthen the lock);
-- * the new primary keys are plain index builds (CREATE INDEX CONCURRENTLY cannot run in a
--   transaction); the hand tables, the big ones, are re-keyed first, while gfx_sessions and
--   sync_events are only locked against writes (SHARE: readers, such as dashboards and the
--   console, go on); gfx_sessions is locked against readers only for the short rest.
-- Bench scenario `site_migration` measures both locks (README, "Per-site writer").

-- The site name's rules (gfx_sync.settings.SITE_PATTERN; tests/test_sites_data.py compares
-- the two), quoted once and used by every site_id check below.
create or replace function public.gfx_sync_site_pattern() returns text
language sql immutable parallel safe as $$ select '^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$'::text $$;

-- Writers wait from here to the commit (a sink's upsert derives hands, which are re-keyed
-- below); taken first, in one order, so no writer can hold one table while waiting for another.
lock table public.gfx_sessions, public.sync_events in share mode;

-- Adds the site_id column and its check to a table (unless it has them).
create or replace function pg_temp.gfx_sync_add_site_id(p_table text) returns void
language plpgsql as $$
begin
    execute format('alter table public.%I add column if not exists site_id text not null '
                   'default %L', p_table, 'default');
    if not exists (select 1 from pg_constraint c
                    where c.conrelid = format('public.%I', p_table)::regclass
                      and c.conname = p_table || '_site_id_check') then
        execute format('alter table public.%I add constraint %I '
                       'check (site_id ~ public.gfx_sync_site_pattern()) not valid',
                       p_table, p_table || '_site_id_check');
    end if;
end;
$$;

-- Replaces the table's primary key by `p_columns` unless it starts with site_id already.
create or replace function pg_temp.gfx_sync_rekey(p_table text, p_columns text) returns void
language plpgsql as $$
declare
    key_name text;
    key_first text;
begin
    select c.conname, a.attname into key_name, key_first
      from pg_constraint c
      join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]
     where c.conrelid = format('public.%I', p_table)::regclass and c.contype = 'p';
    if key_first is distinct from 'site_id' then
        execute format('alter table public.%I drop constraint %I, add primary key (%s)',
                       p_table, key_name, p_columns);
    end if;
end;
$$;

-- The hand tables first (the bulk of the rows), while gfx_sessions can still be read.
select pg_temp.gfx_sync_add_site_id('gfx_hands');
select pg_temp.gfx_sync_add_site_id('gfx_hand_players');
select pg_temp.gfx_sync_add_site_id('gfx_hand_actions');
select pg_temp.gfx_sync_add_site_id('gfx_hand_derivations');
select pg_temp.gfx_sync_rekey('gfx_hands', 'site_id, gfx_pc_id, session_id, hand_idx');
select pg_temp.gfx_sync_rekey('gfx_hand_players',
                              'site_id, gfx_pc_id, session_id, hand_idx, player_num');
select pg_temp.gfx_sync_rekey('gfx_hand_actions', 'site_id, gfx_pc_id, session_id, hand_idx, seq');
select pg_temp.gfx_sync_rekey('gfx_hand_derivations', 'site_id, gfx_pc_id, session_id');
select pg_temp.gfx_sync_add_site_id('sync_events');
select pg_temp.gfx_sync_add_site_id('gfx_sessions');  -- readers of gfx_sessions wait from here

-- gfx_sessions' key, and the foreign keys to it (which depend on its key's index).
do $$
declare
    old_fkey record;
    key_name text;
begin
    for old_fkey in
        select c.conrelid::regclass as on_table, c.conname
          from pg_constraint c
          join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]
         where c.contype = 'f' and c.confrelid = 'public.gfx_sessions'::regclass
           and a.attname <> 'site_id'
    loop
        execute format('alter table %s drop constraint %I', old_fkey.on_table, old_fkey.conname);
    end loop;

    perform pg_temp.gfx_sync_rekey('gfx_sessions', 'site_id, gfx_pc_id, session_id');

    foreach key_name in array array['gfx_hands', 'gfx_hand_derivations'] loop
        if not exists (select 1 from pg_constraint c
                        where c.conrelid = format('public.%I', key_name)::regclass
                          and c.contype = 'f'
                          and c.confrelid = 'public.gfx_sessions'::regclass) then
            execute format('alter table public.%I add constraint %I '
                           'foreign key (site_id, gfx_pc_id, session_id) '
                           'references public.gfx_sessions (site_id, gfx_pc_id, session_id) '
                           'on delete cascade on update cascade not valid',
                           key_name, key_name || '_site_session_fkey');
        end if;
    end loop;
end;
$$;

drop function pg_temp.gfx_sync_add_site_id(text);
drop function pg_temp.gfx_sync_rekey(text, text);

drop index if exists public.sync_events_pc_idx;
create index if not exists sync_events_site_pc_idx
    on public.sync_events (site_id, gfx_pc_id, occurred_at desc);

-- The children-keeping triggers of the hand tables (20261205000000_hand_tables.sql), on the
-- full key.
create or replace function public.gfx_hands_delete_children() returns trigger
language plpgsql as $$
begin
    if exists (select 1 from gone_hands) then
        delete from public.gfx_hand_players p
         using gone_hands g
         where p.site_id = g.site_id and p.gfx_pc_id = g.gfx_pc_id
           and p.session_id = g.session_id and p.hand_idx = g.hand_idx;
        delete from public.gfx_hand_actions a
         using gone_hands g
         where a.site_id = g.site_id and a.gfx_pc_id = g.gfx_pc_id
           and a.session_id = g.session_id and a.hand_idx = g.hand_idx;
    end if;
    return null;
end;
$$;

create or replace function public.gfx_hands_move_children() returns trigger
language plpgsql as $$
begin
    update public.gfx_hand_players p
       set site_id = new.site_id, gfx_pc_id = new.gfx_pc_id, session_id = new.session_id,
           hand_idx = new.hand_idx
     where p.site_id = old.site_id and p.gfx_pc_id = old.gfx_pc_id
       and p.session_id = old.session_id and p.hand_idx = old.hand_idx;
    update public.gfx_hand_actions a
       set site_id = new.site_id, gfx_pc_id = new.gfx_pc_id, session_id = new.session_id,
           hand_idx = new.hand_idx
     where a.site_id = old.site_id and a.gfx_pc_id = old.gfx_pc_id
       and a.session_id = old.session_id and a.hand_idx = old.hand_idx;
    return null;
end;
$$;

drop trigger if exists gfx_hands_move_children on public.gfx_hands;
create trigger gfx_hands_move_children
    after update of site_id, gfx_pc_id, session_id, hand_idx on public.gfx_hands
    for each row
    when ((old.site_id, old.gfx_pc_id, old.session_id, old.hand_idx)
          is distinct from (new.site_id, new.gfx_pc_id, new.session_id, new.hand_idx))
    execute function public.gfx_hands_move_children();

-- The newest-wins trigger (gfx_sessions_keep_newest) compares a row with its own older self:
-- the upsert finds that row by the full key, so it needs no change.

-- The hand derivation, keyed on the site: as in 20261205000000_hand_tables.sql with p_site_id
-- in front of every (p_gfx_pc_id, p_session_id). The site-less signatures are dropped below.
create or replace function public.gfx_hands_write(
    p_site_id text, p_gfx_pc_id text, p_session_id bigint, p_idx integer[], p_hand jsonb[], p_hash text[]
) returns void
language plpgsql as $$
begin
    insert into public.gfx_hands (
        site_id, gfx_pc_id, session_id, hand_idx, hand_num, started_at, duration_seconds,
        recording_offset, recording_offset_seconds, game_variant, game_class, bet_structure,
        ante_amt, blind_level, small_blind_amt, big_blind_amt, third_blind_amt, button_seat,
        small_blind_seat, big_blind_seat, third_blind_seat, num_boards, run_it_times,
        board_cards, final_pot, player_count, action_count, hand_hash, derived_at)
    select p_site_id, p_gfx_pc_id, p_session_id, h.idx,
           public.gfx_hands_int(h.hand, 'HandNum', ''),
           public.gfx_hands_timestamp(h.hand, 'StartDateTimeUTC', ''),
           public.gfx_hands_duration(h.hand, 'Duration', ''),
           public.gfx_hands_text(h.hand, 'RecordingOffsetStart', ''),
           public.gfx_hands_duration(h.hand, 'RecordingOffsetStart', ''),
           public.gfx_hands_text(h.hand, 'GameVariant', ''),
           public.gfx_hands_text(h.hand, 'GameClass', ''),
           public.gfx_hands_text(h.hand, 'BetStructure', ''),
           public.gfx_hands_bigint(h.hand, 'AnteAmt', ''),
           public.gfx_hands_int(b.blinds, 'BlindLevel', 'FlopDrawBlinds.'),
           public.gfx_hands_bigint(b.blinds, 'SmallBlindAmt', 'FlopDrawBlinds.'),
           public.gfx_hands_bigint(b.blinds, 'BigBlindAmt', 'FlopDrawBlinds.'),
           public.gfx_hands_bigint(b.blinds, 'ThirdBlindAmt', 'FlopDrawBlinds.'),
           public.gfx_hands_int(b.blinds, 'ButtonPlayerNum', 'FlopDrawBlinds.'),
           public.gfx_hands_int(b.blinds, 'SmallBlindPlayerNum', 'FlopDrawBlinds.'),
           public.gfx_hands_int(b.blinds, 'BigBlindPlayerNum', 'FlopDrawBlinds.'),
           public.gfx_hands_int(b.blinds, 'ThirdBlindPlayerNum', 'FlopDrawBlinds.'),
           public.gfx_hands_int(h.hand, 'NumBoards', ''),
           public.gfx_hands_int(h.hand, 'RunItNumTimes', ''),
           coalesce(ev.board_cards, '{}'),
           ev.final_pot,
           jsonb_array_length(public.gfx_hands_list(h.hand, 'Players', '')),
           coalesce(ev.events, 0),
           h.hash,
           now()
      from (select u.idx, public.gfx_hands_element(u.hand, 'hand') as hand, u.hash
              from unnest(p_idx, p_hand, p_hash) as u(idx, hand, hash)
            offset 0) as h
      cross join lateral (
          select public.gfx_hands_object(h.hand, 'FlopDrawBlinds', '') as blinds) as b
      left join lateral (
          with event as materialized (
              select (x.o - 1)::integer as seq,
                     public.gfx_hands_element(x.event, 'Events[' || (x.o - 1) || ']') as event,
                     'Events[' || (x.o - 1) || '].' as at
                from jsonb_array_elements(public.gfx_hands_list(h.hand, 'Events', ''))
                     with ordinality as x(event, o)
          ), typed as (
              select e.seq,
                     public.gfx_hands_text(e.event, 'EventType', e.at) as event_type,
                     public.gfx_hands_bigint(e.event, 'Pot', e.at) as pot,
                     public.gfx_hands_int(e.event, 'BoardNum', e.at) as board_num,
                     public.gfx_hands_text(e.event, 'BoardCards', e.at) as board_card
                from event e
          )
          select (select count(*) from typed)::integer as events,
                 (select max(t.pot) from typed t) as final_pot,
                 (select array_agg(boards.cards order by boards.board_num)
                    from (select t.board_num, string_agg(t.board_card, ' ' order by t.seq) as cards
                            from typed t
                           where t.event_type = 'BOARD CARD'
                           group by t.board_num) as boards) as board_cards
      ) as ev on true;

    insert into public.gfx_hand_players (
        site_id, gfx_pc_id, session_id, hand_idx, player_num, name, long_name, hole_card_1, hole_card_2,
        start_stack, end_stack, net, cumulative_winnings, straddle_amt, sitting_out,
        elimination_rank, vpip_percent, pfr_percent, aggression_percent,
        went_to_showdown_percent)
    select p_site_id, p_gfx_pc_id, p_session_id, p.idx,
           coalesce(public.gfx_hands_int(p.player, 'PlayerNum', p.at),
                    public.gfx_hands_bad(p.at || 'PlayerNum', 'a seat number', null)::integer),
           public.gfx_hands_text(p.player, 'Name', p.at),
           public.gfx_hands_text(p.player, 'LongName', p.at),
           c.cards[1], c.cards[2],
           public.gfx_hands_bigint(p.player, 'StartStackAmt', p.at),
           public.gfx_hands_bigint(p.player, 'EndStackAmt', p.at),
           public.gfx_hands_bigint(p.player, 'EndStackAmt', p.at)
               - public.gfx_hands_bigint(p.player, 'StartStackAmt', p.at),
           public.gfx_hands_bigint(p.player, 'CumulativeWinningsAmt', p.at),
           public.gfx_hands_bigint(p.player, 'BlindBetStraddleAmt', p.at),
           public.gfx_hands_bool(p.player, 'SittingOut', p.at),
           public.gfx_hands_int(p.player, 'EliminationRank', p.at),
           public.gfx_hands_numeric(p.player, 'VPIPPercent', p.at),
           public.gfx_hands_numeric(p.player, 'PreFlopRaisePercent', p.at),
           public.gfx_hands_numeric(p.player, 'AggressionFrequencyPercent', p.at),
           public.gfx_hands_numeric(p.player, 'WentToShowDownPercent', p.at)
      from (select u.idx, 'Players[' || (x.o - 1) || '].' as at,
                   public.gfx_hands_element(x.player, 'Players[' || (x.o - 1) || ']') as player
              from unnest(p_idx, p_hand) as u(idx, hand)
              cross join lateral jsonb_array_elements(public.gfx_hands_list(u.hand, 'Players', ''))
                   with ordinality as x(player, o)
            offset 0) as p
      cross join lateral (select public.gfx_hands_cards(p.player, 'HoleCards', p.at) as cards) as c;

    -- street: from the BOARD CARD events seen so far; a BOARD CARD event counts itself (it
    -- belongs to the street it opens) and counts on its own board; any other event takes the
    -- most cards any board has shown so far. 0 preflop, 1-3 flop, 4 turn, 5+ river.
    insert into public.gfx_hand_actions (
        site_id, gfx_pc_id, session_id, hand_idx, seq, event_type, player_num, bet_amt, pot, board_num,
        board_card, num_cards_drawn, street)
    select p_site_id, p_gfx_pc_id, p_session_id, s.idx, s.seq, s.event_type, s.player_num, s.bet_amt,
           s.pot, s.board_num, s.board_card, s.num_cards_drawn,
           case
               when s.cards_seen = 0 then 'preflop'
               when s.cards_seen <= 3 then 'flop'
               when s.cards_seen = 4 then 'turn'
               else 'river'
           end
      from (select c.*,
                   coalesce(c.on_board,
                            max(c.on_board) over (partition by c.idx order by c.seq),
                            0) as cards_seen
              from (select t.*,
                           case when t.event_type = 'BOARD CARD' then
                               count(*) filter (where t.event_type = 'BOARD CARD')
                                   over (partition by t.idx, t.board_num order by t.seq)
                           end as on_board
                      from (select e.idx, e.seq,
                                   public.gfx_hands_text(e.event, 'EventType', e.at) as event_type,
                                   public.gfx_hands_int(e.event, 'PlayerNum', e.at) as player_num,
                                   public.gfx_hands_bigint(e.event, 'BetAmt', e.at) as bet_amt,
                                   public.gfx_hands_bigint(e.event, 'Pot', e.at) as pot,
                                   public.gfx_hands_int(e.event, 'BoardNum', e.at) as board_num,
                                   public.gfx_hands_text(e.event, 'BoardCards', e.at) as board_card,
                                   public.gfx_hands_int(e.event, 'NumCardsDrawn', e.at)
                                       as num_cards_drawn
                              from (select u.idx, (x.o - 1)::integer as seq,
                                           'Events[' || (x.o - 1) || '].' as at,
                                           public.gfx_hands_element(
                                               x.event, 'Events[' || (x.o - 1) || ']') as event
                                      from unnest(p_idx, p_hand) as u(idx, hand)
                                      cross join lateral jsonb_array_elements(
                                               public.gfx_hands_list(u.hand, 'Events', ''))
                                           with ordinality as x(event, o)
                                    offset 0) as e) as t) as c) as s;
end;
$$;


create or replace function public.gfx_hands_write_fast(
    p_site_id text, p_gfx_pc_id text, p_session_id bigint, p_idx integer[], p_hand jsonb[], p_hash text[]
) returns void
language plpgsql as $$
begin
    insert into public.gfx_hands (
        site_id, gfx_pc_id, session_id, hand_idx, hand_num, started_at, duration_seconds,
        recording_offset, recording_offset_seconds, game_variant, game_class, bet_structure,
        ante_amt, blind_level, small_blind_amt, big_blind_amt, third_blind_amt, button_seat,
        small_blind_seat, big_blind_seat, third_blind_seat, num_boards, run_it_times,
        board_cards, final_pot, player_count, action_count, hand_hash, derived_at)
    select p_site_id, p_gfx_pc_id, p_session_id, h.idx, h."HandNum",
           case
               when h."StartDateTimeUTC" is null then null
               when h."StartDateTimeUTC"
                    ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d(:?\d\d)?)?$'
                   then (case when h."StartDateTimeUTC" ~ '(Z|[+-]\d\d(:?\d\d)?)$'
                              then h."StartDateTimeUTC"
                              else h."StartDateTimeUTC" || 'Z' end)::timestamptz
               else public.gfx_hands_bad('StartDateTimeUTC', 'a UTC date and time',
                                         to_jsonb(h."StartDateTimeUTC"))::timestamptz
           end,
           public.gfx_hands_seconds(h."Duration", 'Duration'),
           h."RecordingOffsetStart",
           public.gfx_hands_seconds(h."RecordingOffsetStart", 'RecordingOffsetStart'),
           h."GameVariant", h."GameClass", h."BetStructure", h."AnteAmt", b."BlindLevel",
           b."SmallBlindAmt", b."BigBlindAmt", b."ThirdBlindAmt", b."ButtonPlayerNum",
           b."SmallBlindPlayerNum", b."BigBlindPlayerNum", b."ThirdBlindPlayerNum",
           h."NumBoards", h."RunItNumTimes", coalesce(ev.board_cards, '{}'), ev.final_pot,
           coalesce(jsonb_array_length(h."Players"), 0), ev.events, h.hash, now()
      from (select u.idx, u.hash, r.*
              from unnest(p_idx, p_hand, p_hash) as u(idx, hand, hash)
              cross join lateral jsonb_to_record(u.hand) as r(
                  "HandNum" integer, "StartDateTimeUTC" text, "Duration" text,
                  "RecordingOffsetStart" text, "GameVariant" text, "GameClass" text,
                  "BetStructure" text, "AnteAmt" bigint, "NumBoards" integer,
                  "RunItNumTimes" integer, "FlopDrawBlinds" jsonb, "Players" jsonb,
                  "Events" jsonb)
            offset 0) as h
      cross join lateral jsonb_to_record(h."FlopDrawBlinds") as b(
          "BlindLevel" integer, "SmallBlindAmt" bigint, "BigBlindAmt" bigint,
          "ThirdBlindAmt" bigint, "ButtonPlayerNum" integer, "SmallBlindPlayerNum" integer,
          "BigBlindPlayerNum" integer, "ThirdBlindPlayerNum" integer)
      cross join lateral (
          with typed as materialized (
              select (e.o - 1)::integer as seq, e."EventType", e."Pot", e."BoardNum",
                     e."BoardCards"
                from rows from (jsonb_to_recordset(h."Events") as (
                         "EventType" text, "Pot" bigint, "BoardNum" integer, "BoardCards" text))
                     with ordinality as e("EventType", "Pot", "BoardNum", "BoardCards", o)
          )
          select (select count(*) from typed)::integer as events,
                 (select max(t."Pot") from typed t) as final_pot,
                 (select array_agg(boards.cards order by boards.board_num)
                    from (select t."BoardNum" as board_num,
                                 string_agg(t."BoardCards", ' ' order by t.seq) as cards
                            from typed t
                           where t."EventType" = 'BOARD CARD'
                           group by t."BoardNum") as boards) as board_cards
      ) as ev;

    insert into public.gfx_hand_players (
        site_id, gfx_pc_id, session_id, hand_idx, player_num, name, long_name, hole_card_1, hole_card_2,
        start_stack, end_stack, net, cumulative_winnings, straddle_amt, sitting_out,
        elimination_rank, vpip_percent, pfr_percent, aggression_percent,
        went_to_showdown_percent)
    select p_site_id, p_gfx_pc_id, p_session_id, p.idx, p."PlayerNum", p."Name", p."LongName",
           p.cards[1], p.cards[2], p."StartStackAmt", p."EndStackAmt",
           p."EndStackAmt" - p."StartStackAmt", p."CumulativeWinningsAmt",
           p."BlindBetStraddleAmt", p."SittingOut", p."EliminationRank", p."VPIPPercent",
           p."PreFlopRaisePercent", p."AggressionFrequencyPercent", p."WentToShowDownPercent"
      from (select u.idx, r.*,
                   case
                       when nullif(btrim(c.joined), '') is null then '{}'::text[]
                       else regexp_split_to_array(btrim(c.joined), '\s+')
                   end as cards
              from unnest(p_idx, p_hand) as u(idx, hand)
              cross join lateral jsonb_to_recordset(nullif(u.hand -> 'Players', 'null'))
                   as r("PlayerNum" integer, "Name" text, "LongName" text, "HoleCards" jsonb,
                        "StartStackAmt" bigint, "EndStackAmt" bigint,
                        "CumulativeWinningsAmt" bigint, "BlindBetStraddleAmt" bigint,
                        "SittingOut" boolean, "EliminationRank" integer, "VPIPPercent" numeric,
                        "PreFlopRaisePercent" numeric, "AggressionFrequencyPercent" numeric,
                        "WentToShowDownPercent" numeric)
              cross join lateral (
                  select case
                             when jsonb_array_length(r."HoleCards") = 1 then r."HoleCards" ->> 0
                             else (select string_agg(x.card, ' ')
                                     from jsonb_array_elements_text(r."HoleCards") as x(card))
                         end as joined) as c
            offset 0) as p;

    -- street: as in gfx_hands_write.
    insert into public.gfx_hand_actions (
        site_id, gfx_pc_id, session_id, hand_idx, seq, event_type, player_num, bet_amt, pot, board_num,
        board_card, num_cards_drawn, street)
    select p_site_id, p_gfx_pc_id, p_session_id, s.idx, s.seq, s."EventType", s."PlayerNum", s."BetAmt",
           s."Pot", s."BoardNum", s."BoardCards", s."NumCardsDrawn",
           case
               when s.cards_seen = 0 then 'preflop'
               when s.cards_seen <= 3 then 'flop'
               when s.cards_seen = 4 then 'turn'
               else 'river'
           end
      from (select c.*,
                   coalesce(c.on_board,
                            max(c.on_board) over (partition by c.idx order by c.seq),
                            0) as cards_seen
              from (select t.*,
                           case when t."EventType" = 'BOARD CARD' then
                               count(*) filter (where t."EventType" = 'BOARD CARD')
                                   over (partition by t.idx, t."BoardNum" order by t.seq)
                           end as on_board
                      from (select u.idx, (e.o - 1)::integer as seq, e."EventType",
                                   e."PlayerNum", e."BetAmt", e."Pot", e."BoardNum",
                                   e."BoardCards", e."NumCardsDrawn"
                              from unnest(p_idx, p_hand) as u(idx, hand)
                              cross join lateral rows from (
                                       jsonb_to_recordset(nullif(u.hand -> 'Events', 'null'))
                                       as ("EventType" text, "PlayerNum" integer,
                                           "BetAmt" bigint, "Pot" bigint, "BoardNum" integer,
                                           "BoardCards" text, "NumCardsDrawn" integer))
                                   with ordinality as e("EventType", "PlayerNum", "BetAmt",
                                        "Pot", "BoardNum", "BoardCards", "NumCardsDrawn", o)
                           ) as t) as c) as s;
end;
$$;

-- Records a derivation error as a sync_events 'error' row. Best effort: a failing insert
-- (events refused) must not cost the session row.
create or replace function public.gfx_hands_report(
    p_site_id text, p_gfx_pc_id text, p_session_id bigint, p_file_path text, p_hand_idx integer,
    p_hand_num text, p_field text, p_message text
) returns void
language plpgsql as $$
declare
    message text := case when p_hand_idx is null then p_message
                         else format('hand %s (HandNum %s): %s', p_hand_idx,
                                     coalesce(p_hand_num, '?'), p_message) end;
begin
    begin
        insert into public.sync_events (site_id, event_type, gfx_pc_id, file_path, session_id, error,
                                        details)
        values (p_site_id, 'error', p_gfx_pc_id, p_file_path, p_session_id,
                format('%s: hand tables: %s', p_file_path, message),
                jsonb_build_object('source', 'derive_hands', 'hand_idx', p_hand_idx,
                                   'hand_num', p_hand_num, 'field', p_field,
                                   'message', message));
    exception when others then
        raise warning 'gfx_derive_hands could not record an error event: %', sqlerrm;
    end;
end;
$$;

-- Derives the hand rows of one stored session from its raw_json; returns how many hands it
-- wrote or replaced (0 when all were current). A hand whose hash (and the derivation version)
-- is unchanged is not touched; a changed hand is replaced whole (players and actions too);
-- positions beyond the snapshot's length are deleted; then gfx_hand_derivations is upserted.
-- p_previous_hands / p_previous_file_hash: the snapshot this one replaces (the trigger's OLD
-- row), or nulls. When the stored rows reflect that snapshot (gfx_hand_derivations says so,
-- at the current version), a hand byte-for-byte identical to its previous self (the same
-- jsonb image, hence the same text and md5) keeps its stored hash without hashing it again:
-- a growth step hashes only the hands that are new or differ.
create or replace function public.gfx_hands_derive(
    p_site_id text, p_gfx_pc_id text, p_session_id bigint, p_previous_hands jsonb, p_previous_file_hash text
) returns integer
language plpgsql as $$
declare
    current_version integer := public.gfx_hands_derivation_version();
    previous_snapshot text;
    compare_previous boolean;
    session_raw jsonb;
    session_path text;
    snapshot_hash text;
    hand_list jsonb := '[]';
    hand_total integer;
    previous_version integer;
    previous_errors text[];
    changed_idx integer[];
    changed_hand jsonb[];
    changed_hash text[];
    changed_fast boolean[];
    known_bad text[] := '{}';
    error_hashes text[] := '{}';
    fast_done boolean := false;
    written integer := 0;
    failed_message text;
    failed_field text;
begin
    -- The session row locked, as an upsert locks it: a rebuild and a new snapshot of one
    -- session never derive at once (in the trigger, this transaction holds the lock already).
    select s.raw_json, s.file_path, s.file_hash into session_raw, session_path, snapshot_hash
      from public.gfx_sessions s
     where s.site_id = p_site_id and s.gfx_pc_id = p_gfx_pc_id and s.session_id = p_session_id
       for no key update;
    if not found then
        return 0;  -- no such session: its hand rows went with it (ON DELETE CASCADE)
    end if;

    if jsonb_typeof(session_raw -> 'Hands') = 'array' then
        hand_list := session_raw -> 'Hands';
    elsif jsonb_typeof(session_raw -> 'Hands') <> 'null' then
        perform public.gfx_hands_report(p_site_id, p_gfx_pc_id, p_session_id, session_path, null, null,
            'Hands', format('field Hands: expected a list, got %s',
                            left((session_raw -> 'Hands')::text, 60)));
    end if;
    hand_total := jsonb_array_length(hand_list);

    select d.version, d.error_hashes, d.file_hash
      into previous_version, previous_errors, previous_snapshot
      from public.gfx_hand_derivations d
     where d.site_id = p_site_id and d.gfx_pc_id = p_gfx_pc_id and d.session_id = p_session_id;
    if previous_version = current_version then
        known_bad := previous_errors;  -- reported already: skipped without a new report
    end if;

    delete from public.gfx_hands g
     where g.site_id = p_site_id and g.gfx_pc_id = p_gfx_pc_id and g.session_id = p_session_id
       and g.hand_idx >= hand_total;

    compare_previous := previous_snapshot = p_previous_file_hash
                        and previous_version = current_version
                        and jsonb_typeof(p_previous_hands) = 'array';
    select array_agg(n.idx order by n.idx), array_agg(n.hand order by n.idx),
           array_agg(n.hash order by n.idx),
           array_agg(not n.hash = any(known_bad) and not public.gfx_hands_suspect(n.hand)
                     order by n.idx)
      into changed_idx, changed_hand, changed_hash, changed_fast
      from (select x.idx, x.hand, g.hand_hash as stored_hash,
                   case when compare_previous and g.hand_hash is not null
                             and record_image_eq(row(x.hand, 0),
                                                 row(p_previous_hands -> x.idx, 0))
                        then g.hand_hash
                        else md5(x.hand::text)
                   end as hash
              from (select (e.o - 1)::integer as idx, e.hand
                      from jsonb_array_elements(hand_list) with ordinality as e(hand, o)) as x
              left join public.gfx_hands g
                on g.site_id = p_site_id and g.gfx_pc_id = p_gfx_pc_id and g.session_id = p_session_id
               and g.hand_idx = x.idx) as n
     where n.stored_hash is distinct from n.hash
        or previous_version is distinct from current_version;

    if changed_idx is not null then
        delete from public.gfx_hands g
         where g.site_id = p_site_id and g.gfx_pc_id = p_gfx_pc_id and g.session_id = p_session_id
           and g.hand_idx = any(changed_idx);
        -- The hands of the expected types in one go on the fast path; the others (all of
        -- them should the fast path raise) hand by hand on the precise path, which keeps the
        -- good ones and names the bad field.
        if true = any(changed_fast) then
            begin
                perform public.gfx_hands_write_fast(
                    p_site_id, p_gfx_pc_id, p_session_id,
                    array(select changed_idx[i] from generate_subscripts(changed_idx, 1) as i
                           where changed_fast[i] order by i),
                    array(select changed_hand[i] from generate_subscripts(changed_idx, 1) as i
                           where changed_fast[i] order by i),
                    array(select changed_hash[i] from generate_subscripts(changed_idx, 1) as i
                           where changed_fast[i] order by i));
                written := cardinality(array_positions(changed_fast, true));
                fast_done := true;
            exception when data_exception or integrity_constraint_violation then
                fast_done := false;
            end;
        end if;
        if not fast_done or false = any(changed_fast) then
            for i in 1 .. cardinality(changed_idx) loop
                if fast_done and changed_fast[i] then
                    continue;
                end if;
                if changed_hash[i] = any(known_bad) then
                    error_hashes := error_hashes || changed_hash[i];
                    continue;
                end if;
                begin
                    perform public.gfx_hands_write(p_site_id, p_gfx_pc_id, p_session_id,
                        array[changed_idx[i]], array[changed_hand[i]], array[changed_hash[i]]);
                    written := written + 1;
                exception when data_exception or integrity_constraint_violation then
                    get stacked diagnostics failed_message = message_text,
                                            failed_field = pg_exception_detail;
                    error_hashes := error_hashes || changed_hash[i];
                    perform public.gfx_hands_report(
                        p_site_id, p_gfx_pc_id, p_session_id, session_path, changed_idx[i],
                        case when jsonb_typeof(changed_hand[i]) = 'object'
                             then changed_hand[i] ->> 'HandNum' end,
                        nullif(failed_field, ''), failed_message);
                end;
            end loop;
        end if;
    end if;

    insert into public.gfx_hand_derivations as d (
        site_id, gfx_pc_id, session_id, file_hash, version, hands, errors, error_hashes, derived_at)
    values (p_site_id, p_gfx_pc_id, p_session_id, snapshot_hash, current_version, hand_total,
            cardinality(error_hashes), error_hashes, now())
    on conflict (site_id, gfx_pc_id, session_id) do update
       set file_hash = excluded.file_hash, version = excluded.version,
           hands = excluded.hands, errors = excluded.errors,
           error_hashes = excluded.error_hashes, derived_at = excluded.derived_at;
    return written;
end;
$$;

-- The derivation as the rebuild (gfx-derive) and RPC callers run it: from what is stored.
create or replace function public.gfx_derive_hands(
    p_site_id text, p_gfx_pc_id text, p_session_id bigint
)
returns integer
language sql as $$
    select public.gfx_hands_derive(p_site_id, p_gfx_pc_id, p_session_id, null, null)
$$;

create or replace function public.gfx_sessions_derive_hands() returns trigger
language plpgsql as $$
begin
    if tg_op = 'UPDATE' then
        perform public.gfx_hands_derive(new.site_id, new.gfx_pc_id, new.session_id,
                                        old.raw_json -> 'Hands', old.file_hash);
    else
        perform public.gfx_hands_derive(new.site_id, new.gfx_pc_id, new.session_id, null, null);
    end if;
    return null;
end;
$$;

drop trigger if exists gfx_sessions_derive_hands on public.gfx_sessions;
create trigger gfx_sessions_derive_hands
    after insert or update on public.gfx_sessions
    for each row execute function public.gfx_sessions_derive_hands();

-- The site-less call, as single-site installs and earlier callers make it: the default site's
-- session.
create or replace function public.gfx_derive_hands(p_gfx_pc_id text, p_session_id bigint)
returns integer
language sql as $$
    select public.gfx_hands_derive('default', p_gfx_pc_id, p_session_id, null, null)
$$;

drop function if exists public.gfx_hands_derive(text, bigint, jsonb, text);
drop function if exists public.gfx_hands_report(text, bigint, text, integer, text, text, text);
drop function if exists public.gfx_hands_write_fast(text, bigint, integer[], jsonb[], text[]);
drop function if exists public.gfx_hands_write(text, bigint, integer[], jsonb[], text[]);

-- Views: site_id first. pc_status is one row per (site, PC); sync_stats stays one row for
-- the whole target; site_stats is sync_stats per site.
drop view if exists public.pc_status;
create view public.pc_status as
with pcs as (
    select site_id, gfx_pc_id from public.gfx_sessions
    union
    select site_id, gfx_pc_id from public.sync_events where gfx_pc_id is not null
), sessions as (
    select site_id, gfx_pc_id, count(*) as session_count, max(updated_at) as last_sync,
           sum(hand_count) as hand_count
    from public.gfx_sessions group by site_id, gfx_pc_id
), errors as (
    select site_id, gfx_pc_id,
           count(*) filter (where occurred_at > now() - interval '1 hour') as errors_last_hour,
           max(occurred_at) as last_error_at
    from public.sync_events where event_type in ('error', 'quarantined')
    group by site_id, gfx_pc_id
)
select pcs.site_id,
       pcs.gfx_pc_id,
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
left join sessions using (site_id, gfx_pc_id)
left join errors using (site_id, gfx_pc_id);

create or replace view public.sync_stats as
select
    (select count(*) from public.gfx_sessions) as total_sessions,
    (select coalesce(sum(hand_count), 0) from public.gfx_sessions) as total_hands,
    (select count(distinct (site_id, gfx_pc_id)) from public.gfx_sessions) as total_pcs,
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
    (select max(updated_at) from public.gfx_sessions) as last_sync,
    (select count(*) from (select site_id from public.gfx_sessions
                           union select site_id from public.sync_events) as s) as total_sites;

drop view if exists public.site_stats;
create view public.site_stats as
with sites as (
    select site_id from public.gfx_sessions
    union
    select site_id from public.sync_events
), sessions as (
    select site_id, count(*) as total_sessions, sum(hand_count) as total_hands,
           count(distinct gfx_pc_id) as total_pcs,
           count(*) filter (where updated_at > now() - interval '1 hour')
               as sessions_updated_last_hour,
           count(*) filter (where updated_at > now() - interval '1 day')
               as sessions_updated_last_day,
           max(updated_at) as last_sync
      from public.gfx_sessions group by site_id
), events as (
    select site_id,
           sum(file_count) filter (where event_type = 'batch'
                                     and occurred_at > now() - interval '1 hour')
               as files_synced_last_hour,
           sum(file_count) filter (where event_type = 'batch'
                                     and occurred_at > now() - interval '1 day')
               as files_synced_last_day,
           count(*) filter (where event_type in ('error', 'quarantined')
                              and occurred_at > now() - interval '1 hour') as errors_last_hour,
           count(*) filter (where event_type in ('error', 'quarantined')
                              and occurred_at > now() - interval '1 day') as errors_last_day
      from public.sync_events
     where occurred_at > now() - interval '1 day'
     group by site_id
)
select sites.site_id,
       coalesce(sessions.total_sessions, 0) as total_sessions,
       coalesce(sessions.total_hands, 0) as total_hands,
       coalesce(sessions.total_pcs, 0) as total_pcs,
       coalesce(sessions.sessions_updated_last_hour, 0) as sessions_updated_last_hour,
       coalesce(sessions.sessions_updated_last_day, 0) as sessions_updated_last_day,
       coalesce(events.files_synced_last_hour, 0) as files_synced_last_hour,
       coalesce(events.files_synced_last_day, 0) as files_synced_last_day,
       coalesce(events.errors_last_hour, 0) as errors_last_hour,
       coalesce(events.errors_last_day, 0) as errors_last_day,
       sessions.last_sync
  from sites
  left join sessions using (site_id)
  left join events using (site_id);

drop view if exists public.gfx_player_session_stats;
create view public.gfx_player_session_stats as
with voluntary as (
    select distinct a.site_id, a.gfx_pc_id, a.session_id, a.hand_idx, a.player_num
      from public.gfx_hand_actions a
     where a.street = 'preflop' and a.event_type in ('BET', 'CALL', 'ALL IN')
)
select p.site_id,
       p.gfx_pc_id,
       p.session_id,
       p.name,
       max(p.long_name) as long_name,
       count(*) filter (where p.sitting_out is not true) as hands,
       count(v.player_num) as vpip_hands,
       round(100.0 * count(v.player_num)
             / nullif(count(*) filter (where p.sitting_out is not true), 0), 1) as vpip_percent,
       (array_agg(p.vpip_percent order by p.hand_idx desc))[1] as pokergfx_vpip_percent,
       sum(p.net) as net,
       max(h.final_pot) filter (where p.net > 0) as biggest_pot_won
  from public.gfx_hand_players p
  join public.gfx_hands h using (site_id, gfx_pc_id, session_id, hand_idx)
  left join voluntary v using (site_id, gfx_pc_id, session_id, hand_idx, player_num)
 group by p.site_id, p.gfx_pc_id, p.session_id, p.name;

drop view if exists public.gfx_chip_counts;
create view public.gfx_chip_counts as
select h.site_id,
       h.gfx_pc_id,
       h.session_id,
       h.hand_idx,
       h.hand_num,
       h.started_at,
       p.player_num,
       p.name,
       p.long_name,
       p.start_stack,
       p.end_stack,
       p.net,
       p.sitting_out,
       p.elimination_rank,
       rank() over (partition by h.site_id, h.gfx_pc_id, h.session_id, h.hand_idx
                    order by p.end_stack desc nulls last) as chip_rank
  from public.gfx_hands h
  join public.gfx_hand_players p using (site_id, gfx_pc_id, session_id, hand_idx);

drop view if exists public.gfx_notable_hands;
create view public.gfx_notable_hands as
with remaining as (
    select p.site_id, p.gfx_pc_id, p.session_id, p.hand_idx, count(*) as players_at_end
      from public.gfx_hand_players p
     where p.sitting_out is not true
       and not exists (select 1 from public.gfx_hand_actions a
                        where a.site_id = p.site_id and a.gfx_pc_id = p.gfx_pc_id
                          and a.session_id = p.session_id and a.hand_idx = p.hand_idx
                          and a.player_num = p.player_num and a.event_type = 'FOLD')
     group by p.site_id, p.gfx_pc_id, p.session_id, p.hand_idx
)
select h.site_id,
       h.gfx_pc_id,
       h.session_id,
       h.hand_idx,
       h.hand_num,
       h.started_at,
       h.final_pot,
       h.duration_seconds,
       h.recording_offset,
       h.recording_offset_seconds,
       h.board_cards,
       h.player_count,
       h.action_count,
       coalesce(r.players_at_end, 0) as players_at_end,
       h.action_count > 0 and coalesce(r.players_at_end, 0) >= 2 as showdown,
       rank() over (partition by h.site_id, h.gfx_pc_id, h.session_id
                    order by h.final_pot desc nulls last) as pot_rank,
       rank() over (partition by h.site_id, h.gfx_pc_id, h.session_id
                    order by h.duration_seconds desc nulls last) as duration_rank
  from public.gfx_hands h
  left join remaining r using (site_id, gfx_pc_id, session_id, hand_idx);

do $$
begin
    if current_setting('server_version_num')::int >= 150000 then
        execute 'alter view public.pc_status set (security_invoker = true)';
        execute 'alter view public.sync_stats set (security_invoker = true)';
        execute 'alter view public.site_stats set (security_invoker = true)';
        execute 'alter view public.gfx_player_session_stats set (security_invoker = true)';
        execute 'alter view public.gfx_chip_counts set (security_invoker = true)';
        execute 'alter view public.gfx_notable_hands set (security_invoker = true)';
    end if;
end;
$$;

-- Per-site writers ----------------------------------------------------------------------------
--   gfx_sync_writer       (20261127000000_row_level_security.sql) the ALL-SITES writer: any
--                         site's rows, as before; what a single-site install uses.
--   gfx_sync_site_writer  NOLOGIN; the same table rights, but its policies let a member write
--                         (insert, update, and read for the upsert) only the rows of the sites
--                         gfx_sync_site_writers grants it. A login made for site A is a member
--                         of this role, NOT of gfx_sync_writer (policies of both would add up),
--                         with one gfx_sync_site_writers row (README, "Per-site writer").
-- A member of gfx_sync_site_writer without a row may write nothing.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'gfx_sync_site_writer') then
        begin
            create role gfx_sync_site_writer nologin;
        exception when duplicate_object or unique_violation then
            null;  -- another database of this cluster created it meanwhile
        end;
    end if;
end;
$$;

create table if not exists public.gfx_sync_site_writers (
    role_name  name        not null,
    site_id    text        not null check (site_id ~ public.gfx_sync_site_pattern()),
    created_at timestamptz not null default now(),
    primary key (role_name, site_id)
);
alter table public.gfx_sync_site_writers enable row level security;
revoke all on table public.gfx_sync_site_writers
    from public, anon, authenticated, gfx_sync_writer, gfx_sync_site_writer;
grant select on table public.gfx_sync_site_writers to gfx_sync_site_writer;
grant select, insert, update, delete on table public.gfx_sync_site_writers to service_role;
drop policy if exists gfx_sync_site_writers_service_role_all on public.gfx_sync_site_writers;
create policy gfx_sync_site_writers_service_role_all on public.gfx_sync_site_writers
    for all to service_role using (true) with check (true);
drop policy if exists gfx_sync_site_writers_own on public.gfx_sync_site_writers;
create policy gfx_sync_site_writers_own on public.gfx_sync_site_writers
    for select to gfx_sync_site_writer
    using (exists (select 1 from pg_catalog.pg_roles r
                    where r.rolname = role_name and pg_catalog.pg_has_role(r.oid, 'member')));

-- True when the current role (or a role it is a member of) is granted `p_site_id` in
-- gfx_sync_site_writers. A row naming a role that does not exist (dropped) grants nothing.
create or replace function public.gfx_sync_may_write(p_site_id text) returns boolean
language sql stable as $$
    select exists (
        select 1
          from public.gfx_sync_site_writers w
          join pg_catalog.pg_roles r on r.rolname = w.role_name
         where w.site_id = p_site_id and pg_catalog.pg_has_role(r.oid, 'member'))
$$;

revoke all on table public.gfx_sessions, public.sync_events, public.gfx_hands,
    public.gfx_hand_players, public.gfx_hand_actions, public.gfx_hand_derivations
    from gfx_sync_site_writer;
grant select, insert, update on table public.gfx_sessions to gfx_sync_site_writer;
grant insert on table public.sync_events to gfx_sync_site_writer;
grant select, insert, update, delete on table public.gfx_hands, public.gfx_hand_players,
    public.gfx_hand_actions, public.gfx_hand_derivations to gfx_sync_site_writer;
grant usage on schema public to gfx_sync_site_writer;
do $$
begin
    execute format('grant temporary on database %I to gfx_sync_site_writer', current_database());
    if to_regclass('public.gfx_sync_migrations') is not null then
        execute 'grant select on table public.gfx_sync_migrations to gfx_sync_site_writer';
        execute 'drop policy if exists gfx_sync_migrations_site_writer_read '
                'on public.gfx_sync_migrations';
        execute 'create policy gfx_sync_migrations_site_writer_read '
                'on public.gfx_sync_migrations for select to gfx_sync_site_writer using (true)';
    end if;
end;
$$;

drop policy if exists gfx_sessions_site_writer_select on public.gfx_sessions;
create policy gfx_sessions_site_writer_select on public.gfx_sessions
    for select to gfx_sync_site_writer using (public.gfx_sync_may_write(site_id));
drop policy if exists gfx_sessions_site_writer_insert on public.gfx_sessions;
create policy gfx_sessions_site_writer_insert on public.gfx_sessions
    for insert to gfx_sync_site_writer with check (public.gfx_sync_may_write(site_id));
drop policy if exists gfx_sessions_site_writer_update on public.gfx_sessions;
create policy gfx_sessions_site_writer_update on public.gfx_sessions
    for update to gfx_sync_site_writer
    using (public.gfx_sync_may_write(site_id)) with check (public.gfx_sync_may_write(site_id));
drop policy if exists sync_events_site_writer_insert on public.sync_events;
create policy sync_events_site_writer_insert on public.sync_events
    for insert to gfx_sync_site_writer with check (public.gfx_sync_may_write(site_id));
do $$
declare
    hand_table text;
begin
    foreach hand_table in array array['gfx_hands', 'gfx_hand_players', 'gfx_hand_actions',
                                      'gfx_hand_derivations'] loop
        execute format('drop policy if exists %I on public.%I',
                       hand_table || '_site_writer_all', hand_table);
        execute format('create policy %I on public.%I for all to gfx_sync_site_writer '
                       'using (public.gfx_sync_may_write(site_id)) '
                       'with check (public.gfx_sync_may_write(site_id))',
                       hand_table || '_site_writer_all', hand_table);
    end loop;
end;
$$;

-- Privileges of what this file (re)created.
revoke all on table public.pc_status, public.sync_stats, public.site_stats,
    public.gfx_player_session_stats, public.gfx_chip_counts, public.gfx_notable_hands
    from public, anon, authenticated, gfx_sync_writer, gfx_sync_site_writer;
grant select on table public.pc_status, public.sync_stats, public.site_stats,
    public.gfx_player_session_stats, public.gfx_chip_counts, public.gfx_notable_hands
    to authenticated, service_role;

revoke all on function
    public.gfx_hands_write(text, text, bigint, integer[], jsonb[], text[]),
    public.gfx_hands_write_fast(text, text, bigint, integer[], jsonb[], text[]),
    public.gfx_hands_report(text, text, bigint, text, integer, text, text, text),
    public.gfx_hands_derive(text, text, bigint, jsonb, text),
    public.gfx_derive_hands(text, text, bigint),
    public.gfx_derive_hands(text, bigint),
    public.gfx_sessions_derive_hands(),
    public.gfx_hands_delete_children(),
    public.gfx_hands_move_children(),
    public.gfx_sync_may_write(text)
    from public, anon, authenticated;
grant execute on function
    public.gfx_hands_write(text, text, bigint, integer[], jsonb[], text[]),
    public.gfx_hands_write_fast(text, text, bigint, integer[], jsonb[], text[]),
    public.gfx_hands_report(text, text, bigint, text, integer, text, text, text),
    public.gfx_hands_derive(text, text, bigint, jsonb, text),
    public.gfx_derive_hands(text, text, bigint),
    public.gfx_derive_hands(text, bigint)
    to gfx_sync_writer, gfx_sync_site_writer, service_role;
grant execute on function public.gfx_sync_may_write(text)
    to gfx_sync_writer, gfx_sync_site_writer, service_role;
-- Every writer evaluates the site_id checks, which call it.
grant execute on function public.gfx_sync_site_pattern()
    to gfx_sync_writer, gfx_sync_site_writer, service_role, authenticated;
grant execute on function
    public.gfx_hands_bad(text, text, jsonb),
    public.gfx_hands_bigint(jsonb, text, text),
    public.gfx_hands_int(jsonb, text, text),
    public.gfx_hands_numeric(jsonb, text, text),
    public.gfx_hands_text(jsonb, text, text),
    public.gfx_hands_bool(jsonb, text, text),
    public.gfx_hands_object(jsonb, text, text),
    public.gfx_hands_list(jsonb, text, text),
    public.gfx_hands_element(jsonb, text),
    public.gfx_hands_duration(jsonb, text, text),
    public.gfx_hands_timestamp(jsonb, text, text),
    public.gfx_hands_cards(jsonb, text, text),
    public.gfx_hands_suspect(jsonb),
    public.gfx_hands_seconds(text, text),
    public.gfx_hands_derivation_version()
    to gfx_sync_site_writer;
