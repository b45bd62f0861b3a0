-- Hand-level tables derived from each session's raw_json, kept in step by a trigger.
-- Idempotent: safe to apply again on any Postgres (plain, embedded or Supabase).
--
-- The derivation runs in the database, in one definition (gfx_derive_hands), called by an
-- AFTER INSERT OR UPDATE trigger on gfx_sessions. gfx_sessions_keep_newest (BEFORE UPDATE)
-- drops an older or identical snapshot, so the derivation runs only for snapshots the
-- newest-wins rule lets in, in the same transaction, whichever client wrote them.
--
-- Positions are 0-based as in the file: hand_idx is the hand's index in Hands (HandNum
-- repeats inside real files), seq the event's index in the hand's Events.
-- Missing keys give nulls (an export that lacks a field); a value of an unexpected type skips
-- its hand and records a sync_events 'error' naming file, session, hand and field.
--
-- Two paths write the same rows: a fast one (gfx_hands_write_fast: one jsonb_to_record(set)
-- call per object list, all changed hands at once) for hands gfx_hands_suspect finds nothing
-- wrong with, and a precise one (gfx_hands_write: typed-extract helpers per value, hand by hand)
-- for the others and whenever the fast path raises; only the precise one reports errors.

create table if not exists public.gfx_hands (
    gfx_pc_id                text             not null,
    session_id               bigint           not null,
    hand_idx                 integer          not null,
    hand_num                 integer,
    started_at               timestamptz,
    duration_seconds         double precision,
    recording_offset         text,
    recording_offset_seconds double precision,
    game_variant             text,
    game_class               text,
    bet_structure            text,
    ante_amt                 bigint,
    blind_level              integer,
    small_blind_amt          bigint,
    big_blind_amt            bigint,
    third_blind_amt          bigint,
    button_seat              integer,
    small_blind_seat         integer,
    big_blind_seat           integer,
    third_blind_seat         integer,
    num_boards               integer,
    run_it_times             integer,
    board_cards              text[]           not null default '{}',
    final_pot                bigint,
    player_count             integer          not null,
    action_count             integer          not null,
    hand_hash                text             not null,
    derived_at               timestamptz      not null default now(),
    primary key (gfx_pc_id, session_id, hand_idx),
    foreign key (gfx_pc_id, session_id) references public.gfx_sessions (gfx_pc_id, session_id)
        on delete cascade on update cascade
);

create table if not exists public.gfx_hand_players (
    gfx_pc_id                text    not null,
    session_id               bigint  not null,
    hand_idx                 integer not null,
    player_num               integer not null,
    name                     text,
    long_name                text,
    hole_card_1              text,
    hole_card_2              text,
    start_stack              bigint,
    end_stack                bigint,
    net                      bigint,
    cumulative_winnings      bigint,
    straddle_amt             bigint,
    sitting_out              boolean,
    elimination_rank         integer,
    vpip_percent             numeric,
    pfr_percent              numeric,
    aggression_percent       numeric,
    went_to_showdown_percent numeric,
    primary key (gfx_pc_id, session_id, hand_idx, player_num)
);

create table if not exists public.gfx_hand_actions (
    gfx_pc_id       text    not null,
    session_id      bigint  not null,
    hand_idx        integer not null,
    seq             integer not null,
    event_type      text,
    player_num      integer,
    bet_amt         bigint,
    pot             bigint,
    board_num       integer,
    board_card      text,
    num_cards_drawn integer,
    street          text    not null check (street in ('preflop', 'flop', 'turn', 'river')),
    primary key (gfx_pc_id, session_id, hand_idx, seq)
);

-- A hand's players and actions belong to its gfx_hands row, without a foreign key: a key
-- check per inserted row (thousands for a long session) was the costliest part of the
-- derivation. The derivation (gfx_hands_derive) is their only writer and writes them only
-- with their hand, after deleting the hand's older row; the triggers below take them along
-- whenever hands go (replaced, deleted, cascaded from gfx_sessions, truncated) or change key
-- (cascaded from gfx_sessions). tests/test_hand_tables.py checks that none is left over.
alter table public.gfx_hand_players
    drop constraint if exists gfx_hand_players_gfx_pc_id_session_id_hand_idx_fkey;
alter table public.gfx_hand_actions
    drop constraint if exists gfx_hand_actions_gfx_pc_id_session_id_hand_idx_fkey;

create or replace function public.gfx_hands_delete_children() returns trigger
language plpgsql as $$
begin
    if exists (select 1 from gone_hands) then
        delete from public.gfx_hand_players p
         using gone_hands g
         where p.gfx_pc_id = g.gfx_pc_id and p.session_id = g.session_id
           and p.hand_idx = g.hand_idx;
        delete from public.gfx_hand_actions a
         using gone_hands g
         where a.gfx_pc_id = g.gfx_pc_id and a.session_id = g.session_id
           and a.hand_idx = g.hand_idx;
    end if;
    return null;
end;
$$;

create or replace function public.gfx_hands_move_children() returns trigger
language plpgsql as $$
begin
    update public.gfx_hand_players p
       set gfx_pc_id = new.gfx_pc_id, session_id = new.session_id, hand_idx = new.hand_idx
     where p.gfx_pc_id = old.gfx_pc_id and p.session_id = old.session_id
       and p.hand_idx = old.hand_idx;
    update public.gfx_hand_actions a
       set gfx_pc_id = new.gfx_pc_id, session_id = new.session_id, hand_idx = new.hand_idx
     where a.gfx_pc_id = old.gfx_pc_id and a.session_id = old.session_id
       and a.hand_idx = old.hand_idx;
    return null;
end;
$$;

create or replace function public.gfx_hands_truncate_children() returns trigger
language plpgsql as $$
begin
    truncate public.gfx_hand_players, public.gfx_hand_actions;
    return null;
end;
$$;

drop trigger if exists gfx_hands_delete_children on public.gfx_hands;
create trigger gfx_hands_delete_children
    after delete on public.gfx_hands
    referencing old table as gone_hands
    for each statement execute function public.gfx_hands_delete_children();

drop trigger if exists gfx_hands_move_children on public.gfx_hands;
create trigger gfx_hands_move_children
    after update of gfx_pc_id, session_id, hand_idx on public.gfx_hands
    for each row
    when ((old.gfx_pc_id, old.session_id, old.hand_idx)
          is distinct from (new.gfx_pc_id, new.session_id, new.hand_idx))
    execute function public.gfx_hands_move_children();

drop trigger if exists gfx_hands_truncate_children on public.gfx_hands;
create trigger gfx_hands_truncate_children
    after truncate on public.gfx_hands
    for each statement execute function public.gfx_hands_truncate_children();

-- Which snapshot (file_hash) and which derivation version the hand rows of a session reflect.
-- hands: hands in that snapshot; errors: those skipped for bad input (error_hashes: their
-- hand_hash, so a growing file does not report the same bad hand again at each growth step).
create table if not exists public.gfx_hand_derivations (
    gfx_pc_id    text        not null,
    session_id   bigint      not null,
    file_hash    text        not null,
    version      integer     not null,
    hands        integer     not null,
    errors       integer     not null default 0,
    error_hashes text[]      not null default '{}',
    derived_at   timestamptz not null default now(),
    primary key (gfx_pc_id, session_id),
    foreign key (gfx_pc_id, session_id) references public.gfx_sessions (gfx_pc_id, session_id)
        on delete cascade on update cascade
);

-- Bump whenever the derivation below changes what it writes: gfx_derive_hands then rewrites
-- every hand of a session, and the rebuild finds the sessions still at an older version.
create or replace function public.gfx_hands_derivation_version() returns integer
language sql immutable as $$ select 1 $$;

-- Typed extraction. Each returns the value of key p_key of object p_obj, null when the key is
-- missing or JSON null, and raises (SQLSTATE 22023, DETAIL = the field) for any other type.
-- p_where prefixes the field in the message ('Players[2].'). The SQL ones are inlined into
-- the derivation's statements; gfx_hands_bad is only reached on bad input.
create or replace function public.gfx_hands_bad(p_field text, p_expected text, p_found jsonb)
returns text
language plpgsql stable as $$
declare
    found_text text := coalesce(p_found::text, 'nothing');
begin
    if length(found_text) > 60 then
        found_text := left(found_text, 57) || '...';
    end if;
    raise exception 'field %: expected %, got %', p_field, p_expected, found_text
        using errcode = '22023', detail = p_field;
end;
$$;

create or replace function public.gfx_hands_bigint(p_obj jsonb, p_key text, p_where text)
returns bigint
language sql stable as $$
    select case
        when p_obj -> p_key is null or jsonb_typeof(p_obj -> p_key) = 'null' then null
        when jsonb_typeof(p_obj -> p_key) = 'number'
             and (p_obj -> p_key)::numeric = trunc((p_obj -> p_key)::numeric)
             and abs((p_obj -> p_key)::numeric) <= 9223372036854775807
            then (p_obj -> p_key)::bigint
        else public.gfx_hands_bad(p_where || p_key, 'a whole number', p_obj -> p_key)::bigint
    end
$$;

create or replace function public.gfx_hands_int(p_obj jsonb, p_key text, p_where text)
returns integer
language sql stable as $$
    select case
        when p_obj -> p_key is null or jsonb_typeof(p_obj -> p_key) = 'null' then null
        when jsonb_typeof(p_obj -> p_key) = 'number'
             and (p_obj -> p_key)::numeric = trunc((p_obj -> p_key)::numeric)
             and abs((p_obj -> p_key)::numeric) <= 2147483647
            then (p_obj -> p_key)::integer
        else public.gfx_hands_bad(p_where || p_key, 'a whole number', p_obj -> p_key)::integer
    end
$$;

create or replace function public.gfx_hands_numeric(p_obj jsonb, p_key text, p_where text)
returns numeric
language sql stable as $$
    select case
        when p_obj -> p_key is null or jsonb_typeof(p_obj -> p_key) = 'null' then null
        when jsonb_typeof(p_obj -> p_key) = 'number' then (p_obj -> p_key)::numeric
        else public.gfx_hands_bad(p_where || p_key, 'a number', p_obj -> p_key)::numeric
    end
$$;

create or replace function public.gfx_hands_text(p_obj jsonb, p_key text, p_where text)
returns text
language sql stable as $$
    select case
        when p_obj -> p_key is null or jsonb_typeof(p_obj -> p_key) = 'null' then null
        when jsonb_typeof(p_obj -> p_key) = 'string' then p_obj ->> p_key
        else public.gfx_hands_bad(p_where || p_key, 'a string', p_obj -> p_key)
    end
$$;

create or replace function public.gfx_hands_bool(p_obj jsonb, p_key text, p_where text)
returns boolean
language sql stable as $$
    select case
        when p_obj -> p_key is null or jsonb_typeof(p_obj -> p_key) = 'null' then null
        when jsonb_typeof(p_obj -> p_key) = 'boolean' then (p_obj -> p_key)::boolean
        else public.gfx_hands_bad(p_where || p_key, 'true or false', p_obj -> p_key)::boolean
    end
$$;

-- An object member that must itself be an object (null when missing).
create or replace function public.gfx_hands_object(p_obj jsonb, p_key text, p_where text)
returns jsonb
language sql stable as $$
    select case
        when p_obj -> p_key is null or jsonb_typeof(p_obj -> p_key) = 'null' then null
        when jsonb_typeof(p_obj -> p_key) = 'object' then p_obj -> p_key
        else public.gfx_hands_bad(p_where || p_key, 'an object', p_obj -> p_key)::jsonb
    end
$$;

-- An object member that must be a list ('[]' when missing).
create or replace function public.gfx_hands_list(p_obj jsonb, p_key text, p_where text)
returns jsonb
language sql stable as $$
    select case
        when p_obj -> p_key is null or jsonb_typeof(p_obj -> p_key) = 'null' then '[]'::jsonb
        when jsonb_typeof(p_obj -> p_key) = 'array' then p_obj -> p_key
        else public.gfx_hands_bad(p_where || p_key, 'a list', p_obj -> p_key)::jsonb
    end
$$;

-- A list element that must be an object.
create or replace function public.gfx_hands_element(p_value jsonb, p_field text)
returns jsonb
language sql stable as $$
    select case
        when jsonb_typeof(p_value) = 'object' then p_value
        else public.gfx_hands_bad(p_field, 'an object', p_value)::jsonb
    end
$$;

-- A .NET TimeSpan as ISO-8601 ("PT1M43.6794974S", "P739539DT13H37M1.4537919S", "-PT5S") in
-- seconds; null for null; raises (naming p_field) for any other text. The pattern is only
-- matched (no captures: a capturing regexp_match costs about as much as the rest of a
-- hand's row), then the matched text is cut at its designators: days before D, hours before
-- H, minutes before M (after T), seconds before S. Inlined: call it with a plain column.
create or replace function public.gfx_hands_seconds(p_text text, p_field text)
returns double precision
language sql stable as $$
    select case
        when p_text is null then null
        when p_text ~ '^-?P(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?$'
             and p_text ~ '\d'
            then ((case when left(p_text, 1) = '-' then -1 else 1 end)
                  * (coalesce(nullif(rtrim(ltrim(split_part(p_text, 'T', 1), '-P'), 'D'), '')
                                  ::numeric, 0) * 86400
                     + coalesce(case when strpos(split_part(p_text, 'T', 2), 'H') > 0
                                     then split_part(split_part(p_text, 'T', 2), 'H', 1)
                                end::numeric, 0) * 3600
                     + coalesce(case when strpos(split_part(p_text, 'T', 2), 'M') > 0
                                     then split_part(substr(split_part(p_text, 'T', 2),
                                              strpos(split_part(p_text, 'T', 2), 'H') + 1),
                                          'M', 1)
                                end::numeric, 0) * 60
                     + coalesce(nullif(rtrim(substr(split_part(p_text, 'T', 2),
                                           strpos(split_part(p_text, 'T', 2), 'H') + 1
                                           + strpos(substr(split_part(p_text, 'T', 2),
                                                      strpos(split_part(p_text, 'T', 2), 'H')
                                                      + 1), 'M')), 'S'), '')
                                  ::numeric, 0)))::double precision
        else public.gfx_hands_bad(p_field, 'an ISO-8601 duration', to_jsonb(p_text))
                 ::double precision
    end
$$;

create or replace function public.gfx_hands_duration(p_obj jsonb, p_key text, p_where text)
returns double precision
language plpgsql stable as $$
begin
    if p_obj -> p_key is null or jsonb_typeof(p_obj -> p_key) = 'null' then
        return null;
    end if;
    if jsonb_typeof(p_obj -> p_key) = 'string' then
        return public.gfx_hands_seconds(p_obj ->> p_key, p_where || p_key);
    end if;
    perform public.gfx_hands_bad(p_where || p_key, 'an ISO-8601 duration', p_obj -> p_key);
    return null;
end;
$$;

-- A UTC timestamp as PokerGFX writes it ("2025-10-16T09:37:01.4537919Z"; no zone means UTC).
create or replace function public.gfx_hands_timestamp(p_obj jsonb, p_key text, p_where text)
returns timestamptz
language plpgsql stable as $$
declare
    value text := p_obj ->> p_key;
begin
    if p_obj -> p_key is null or jsonb_typeof(p_obj -> p_key) = 'null' then
        return null;
    end if;
    if jsonb_typeof(p_obj -> p_key) = 'string'
       and value ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d(:?\d\d)?)?$' then
        begin
            if value !~ '(Z|[+-]\d\d(:?\d\d)?)$' then
                value := value || 'Z';
            end if;
            return value::timestamptz;
        exception when datetime_field_overflow or invalid_datetime_format then
            null;  -- e.g. month 13: reported below, naming the field
        end;
    end if;
    perform public.gfx_hands_bad(p_where || p_key, 'a UTC date and time', p_obj -> p_key);
    return null;
end;
$$;

-- HoleCards: a list of strings, PokerGFX writes ONE holding both cards (["10c 5c"]), [""]
-- when unknown. Returns the cards one by one ('{}' when unknown or missing).
create or replace function public.gfx_hands_cards(p_obj jsonb, p_key text, p_where text)
returns text[]
language plpgsql stable as $$
declare
    joined text;
begin
    if p_obj -> p_key is null or jsonb_typeof(p_obj -> p_key) = 'null' then
        return '{}';
    end if;
    if jsonb_typeof(p_obj -> p_key) <> 'array' then
        perform public.gfx_hands_bad(p_where || p_key, 'a list of strings', p_obj -> p_key);
    end if;
    if exists (select 1 from jsonb_array_elements(p_obj -> p_key) as e(card)
               where jsonb_typeof(e.card) <> 'string') then
        perform public.gfx_hands_bad(p_where || p_key, 'a list of strings', p_obj -> p_key);
    end if;
    select btrim(string_agg(e.card, ' '))
      into joined
      from jsonb_array_elements_text(p_obj -> p_key) as e(card);
    if joined is null or joined = '' then
        return '{}';
    end if;
    return regexp_split_to_array(joined, '\s+');
end;
$$;

-- Writes the given hands (0-based positions, hand objects, hashes) with their players and
-- actions, set-based. OFFSET 0 / MATERIALIZED keep each checked object a plain column, so the
-- typed-extract helpers are inlined (the planner does not inline a helper whose repeated
-- argument would be an expression). The caller has deleted any older rows of these positions. Raises on
-- bad input (SQLSTATE class 22 or 23): nothing of the call is then kept.
create or replace function public.gfx_hands_write(
    p_gfx_pc_id text, p_session_id bigint, p_idx integer[], p_hand jsonb[], p_hash text[]
) returns void
language plpgsql as $$
begin
    insert into public.gfx_hands (
        gfx_pc_id, session_id, hand_idx, hand_num, started_at, duration_seconds,
        recording_offset, recording_offset_seconds, game_variant, game_class, bet_structure,
        ante_amt, blind_level, small_blind_amt, big_blind_amt, third_blind_amt, button_seat,
        small_blind_seat, big_blind_seat, third_blind_seat, num_boards, run_it_times,
        board_cards, final_pot, player_count, action_count, hand_hash, derived_at)
    select p_gfx_pc_id, p_session_id, h.idx,
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
        gfx_pc_id, session_id, hand_idx, player_num, name, long_name, hole_card_1, hole_card_2,
        start_stack, end_stack, net, cumulative_winnings, straddle_amt, sitting_out,
        elimination_rank, vpip_percent, pfr_percent, aggression_percent,
        went_to_showdown_percent)
    select p_gfx_pc_id, p_session_id, p.idx,
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
        gfx_pc_id, session_id, hand_idx, seq, event_type, player_num, bet_amt, pot, board_num,
        board_card, num_cards_drawn, street)
    select p_gfx_pc_id, p_session_id, s.idx, s.seq, s.event_type, s.player_num, s.bet_amt,
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

-- True when the hand holds a value the typed fast path (gfx_hands_write_fast) would read
-- without complaint where the precise path raises: jsonb_to_record(set) reads "123" as a number,
-- 1 as true and any value as text, and takes -2^31 (-2^63) although the precise path's range is
-- symmetric. Strict mode, so a list is never unwrapped; a missing key flags nothing (missing
-- reads as null on both paths). Everything else the precise path rejects makes the fast path
-- raise: 5.5, 5.0 or 2^31 for an integer, an array or object where a number is expected, a
-- player or event that is not an object, lists that are not lists, a date or duration
-- that does not match its pattern (a number or list never does), a missing or duplicate
-- PlayerNum, an overflowing net. A hand that is not an object is flagged here.
-- tests/test_hand_tables.py has one hand for each term of the path.
create or replace function public.gfx_hands_suspect(p_hand jsonb) returns boolean
language sql immutable as $fn$
    select jsonb_typeof(p_hand) <> 'object'
        or jsonb_path_exists(p_hand, '
        strict $ ? (
            exists(@.HandNum ? (@.type() == "string" || @ < -2147483647))
            || exists(@.GameVariant ? (@.type() != "string" && @.type() != "null"))
            || exists(@.GameClass ? (@.type() != "string" && @.type() != "null"))
            || exists(@.BetStructure ? (@.type() != "string" && @.type() != "null"))
            || exists(@.AnteAmt ? (@.type() == "string" || @ < -9223372036854775807))
            || exists(@.NumBoards ? (@.type() == "string" || @ < -2147483647))
            || exists(@.RunItNumTimes ? (@.type() == "string" || @ < -2147483647))
            || exists(@.FlopDrawBlinds ? (
                exists(@.BlindLevel ? (@.type() == "string" || @ < -2147483647))
                || exists(@.SmallBlindAmt ? (@.type() == "string" || @ < -9223372036854775807))
                || exists(@.BigBlindAmt ? (@.type() == "string" || @ < -9223372036854775807))
                || exists(@.ThirdBlindAmt ? (@.type() == "string" || @ < -9223372036854775807))
                || exists(@.ButtonPlayerNum ? (@.type() == "string" || @ < -2147483647))
                || exists(@.SmallBlindPlayerNum ? (@.type() == "string" || @ < -2147483647))
                || exists(@.BigBlindPlayerNum ? (@.type() == "string" || @ < -2147483647))
                || exists(@.ThirdBlindPlayerNum ? (@.type() == "string" || @ < -2147483647))))
            || exists(@.Players[*] ? (
                exists(@.PlayerNum ? (@.type() == "string" || @ < -2147483647))
                || exists(@.Name ? (@.type() != "string" && @.type() != "null"))
                || exists(@.LongName ? (@.type() != "string" && @.type() != "null"))
                || exists(@.HoleCards[*] ? (@.type() != "string"))
                || exists(@.StartStackAmt ? (@.type() == "string" || @ < -9223372036854775807))
                || exists(@.EndStackAmt ? (@.type() == "string" || @ < -9223372036854775807))
                || exists(@.CumulativeWinningsAmt ? (@.type() == "string" || @ < -9223372036854775807))
                || exists(@.BlindBetStraddleAmt ? (@.type() == "string" || @ < -9223372036854775807))
                || exists(@.SittingOut ? (@.type() != "boolean" && @.type() != "null"))
                || exists(@.EliminationRank ? (@.type() == "string" || @ < -2147483647))
                || exists(@.VPIPPercent ? (@.type() == "string"))
                || exists(@.PreFlopRaisePercent ? (@.type() == "string"))
                || exists(@.AggressionFrequencyPercent ? (@.type() == "string"))
                || exists(@.WentToShowDownPercent ? (@.type() == "string"))))
            || exists(@.Events[*] ? (
                exists(@.EventType ? (@.type() != "string" && @.type() != "null"))
                || exists(@.PlayerNum ? (@.type() == "string" || @ < -2147483647))
                || exists(@.BetAmt ? (@.type() == "string" || @ < -9223372036854775807))
                || exists(@.Pot ? (@.type() == "string" || @ < -9223372036854775807))
                || exists(@.BoardNum ? (@.type() == "string" || @ < -2147483647))
                || exists(@.BoardCards ? (@.type() != "string" && @.type() != "null"))
                || exists(@.NumCardsDrawn ? (@.type() == "string" || @ < -2147483647)))))')
$fn$;

-- Left by an earlier draft of this file in databases that applied it; nothing calls it.
drop function if exists public.gfx_hands_parts_seconds(text, text[], text);

-- The same rows as gfx_hands_write for hands gfx_hands_suspect passed, each hand, blinds,
-- players and events object read by one jsonb_to_record(set) call, no helper per value.
-- Raises on anything else unexpected; the caller then takes the precise path, which names the
-- field. Dates, durations, hole cards and streets follow gfx_hands_timestamp,
-- gfx_hands_duration, gfx_hands_cards and gfx_hands_write exactly.
create or replace function public.gfx_hands_write_fast(
    p_gfx_pc_id text, p_session_id bigint, p_idx integer[], p_hand jsonb[], p_hash text[]
) returns void
language plpgsql as $$
begin
    insert into public.gfx_hands (
        gfx_pc_id, session_id, hand_idx, hand_num, started_at, duration_seconds,
        recording_offset, recording_offset_seconds, game_variant, game_class, bet_structure,
        ante_amt, blind_level, small_blind_amt, big_blind_amt, third_blind_amt, button_seat,
        small_blind_seat, big_blind_seat, third_blind_seat, num_boards, run_it_times,
        board_cards, final_pot, player_count, action_count, hand_hash, derived_at)
    select p_gfx_pc_id, p_session_id, h.idx, h."HandNum",
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
        gfx_pc_id, session_id, hand_idx, player_num, name, long_name, hole_card_1, hole_card_2,
        start_stack, end_stack, net, cumulative_winnings, straddle_amt, sitting_out,
        elimination_rank, vpip_percent, pfr_percent, aggression_percent,
        went_to_showdown_percent)
    select p_gfx_pc_id, p_session_id, p.idx, p."PlayerNum", p."Name", p."LongName",
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
        gfx_pc_id, session_id, hand_idx, seq, event_type, player_num, bet_amt, pot, board_num,
        board_card, num_cards_drawn, street)
    select p_gfx_pc_id, p_session_id, s.idx, s.seq, s."EventType", s."PlayerNum", s."BetAmt",
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
    p_gfx_pc_id text, p_session_id bigint, p_file_path text, p_hand_idx integer,
    p_hand_num text, p_field text, p_message text
) returns void
language plpgsql as $$
declare
    message text := case when p_hand_idx is null then p_message
                         else format('hand %s (HandNum %s): %s', p_hand_idx,
                                     coalesce(p_hand_num, '?'), p_message) end;
begin
    begin
        insert into public.sync_events (event_type, gfx_pc_id, file_path, session_id, error,
                                        details)
        values ('error', p_gfx_pc_id, p_file_path, p_session_id,
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
    p_gfx_pc_id text, p_session_id bigint, p_previous_hands jsonb, p_previous_file_hash text
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
     where s.gfx_pc_id = p_gfx_pc_id and s.session_id = p_session_id
       for no key update;
    if not found then
        return 0;  -- no such session: its hand rows went with it (ON DELETE CASCADE)
    end if;

    if jsonb_typeof(session_raw -> 'Hands') = 'array' then
        hand_list := session_raw -> 'Hands';
    elsif jsonb_typeof(session_raw -> 'Hands') <> 'null' then
        perform public.gfx_hands_report(p_gfx_pc_id, p_session_id, session_path, null, null,
            'Hands', format('field Hands: expected a list, got %s',
                            left((session_raw -> 'Hands')::text, 60)));
    end if;
    hand_total := jsonb_array_length(hand_list);

    select d.version, d.error_hashes, d.file_hash
      into previous_version, previous_errors, previous_snapshot
      from public.gfx_hand_derivations d
     where d.gfx_pc_id = p_gfx_pc_id and d.session_id = p_session_id;
    if previous_version = current_version then
        known_bad := previous_errors;  -- reported already: skipped without a new report
    end if;

    delete from public.gfx_hands g
     where g.gfx_pc_id = p_gfx_pc_id and g.session_id = p_session_id
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
                on g.gfx_pc_id = p_gfx_pc_id and g.session_id = p_session_id
               and g.hand_idx = x.idx) as n
     where n.stored_hash is distinct from n.hash
        or previous_version is distinct from current_version;

    if changed_idx is not null then
        delete from public.gfx_hands g
         where g.gfx_pc_id = p_gfx_pc_id and g.session_id = p_session_id
           and g.hand_idx = any(changed_idx);
        -- The hands of the expected types in one go on the fast path; the others (all of
        -- them should the fast path raise) hand by hand on the precise path, which keeps the
        -- good ones and names the bad field.
        if true = any(changed_fast) then
            begin
                perform public.gfx_hands_write_fast(
                    p_gfx_pc_id, p_session_id,
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
                    perform public.gfx_hands_write(p_gfx_pc_id, p_session_id,
                        array[changed_idx[i]], array[changed_hand[i]], array[changed_hash[i]]);
                    written := written + 1;
                exception when data_exception or integrity_constraint_violation then
                    get stacked diagnostics failed_message = message_text,
                                            failed_field = pg_exception_detail;
                    error_hashes := error_hashes || changed_hash[i];
                    perform public.gfx_hands_report(
                        p_gfx_pc_id, p_session_id, session_path, changed_idx[i],
                        case when jsonb_typeof(changed_hand[i]) = 'object'
                             then changed_hand[i] ->> 'HandNum' end,
                        nullif(failed_field, ''), failed_message);
                end;
            end loop;
        end if;
    end if;

    insert into public.gfx_hand_derivations as d (
        gfx_pc_id, session_id, file_hash, version, hands, errors, error_hashes, derived_at)
    values (p_gfx_pc_id, p_session_id, snapshot_hash, current_version, hand_total,
            cardinality(error_hashes), error_hashes, now())
    on conflict (gfx_pc_id, session_id) do update
       set file_hash = excluded.file_hash, version = excluded.version,
           hands = excluded.hands, errors = excluded.errors,
           error_hashes = excluded.error_hashes, derived_at = excluded.derived_at;
    return written;
end;
$$;

-- The derivation as the rebuild (gfx-derive) and RPC callers run it: from what is stored.
create or replace function public.gfx_derive_hands(p_gfx_pc_id text, p_session_id bigint)
returns integer
language sql as $$
    select public.gfx_hands_derive(p_gfx_pc_id, p_session_id, null, null)
$$;

create or replace function public.gfx_sessions_derive_hands() returns trigger
language plpgsql as $$
begin
    if tg_op = 'UPDATE' then
        perform public.gfx_hands_derive(new.gfx_pc_id, new.session_id,
                                        old.raw_json -> 'Hands', old.file_hash);
    else
        perform public.gfx_hands_derive(new.gfx_pc_id, new.session_id, null, null);
    end if;
    return null;
end;
$$;

drop trigger if exists gfx_sessions_derive_hands on public.gfx_sessions;
create trigger gfx_sessions_derive_hands
    after insert or update on public.gfx_sessions
    for each row execute function public.gfx_sessions_derive_hands();

-- Views -------------------------------------------------------------------------------------

-- Per player (by name) and session: hands dealt in, VPIP from the actions (a BET, CALL or
-- ALL IN before the flop) next to PokerGFX's own running figure from the player's latest
-- hand, net result, and the biggest pot of a hand the player ended up in profit.
create or replace view public.gfx_player_session_stats as
with voluntary as (
    select distinct a.gfx_pc_id, a.session_id, a.hand_idx, a.player_num
      from public.gfx_hand_actions a
     where a.street = 'preflop' and a.event_type in ('BET', 'CALL', 'ALL IN')
)
select p.gfx_pc_id,
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
  join public.gfx_hands h using (gfx_pc_id, session_id, hand_idx)
  left join voluntary v using (gfx_pc_id, session_id, hand_idx, player_num)
 group by p.gfx_pc_id, p.session_id, p.name;

-- After each hand, every player's stack (for on-air chip-count graphics), ranked.
create or replace view public.gfx_chip_counts as
select h.gfx_pc_id,
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
       rank() over (partition by h.gfx_pc_id, h.session_id, h.hand_idx
                    order by p.end_stack desc nulls last) as chip_rank
  from public.gfx_hands h
  join public.gfx_hand_players p using (gfx_pc_id, session_id, hand_idx);

-- Every hand with what makes it notable: its pot and duration ranks within the session, and
-- whether it went to showdown (two or more players dealt in never folded, in a hand with
-- events).
create or replace view public.gfx_notable_hands as
with remaining as (
    select p.gfx_pc_id, p.session_id, p.hand_idx, count(*) as players_at_end
      from public.gfx_hand_players p
     where p.sitting_out is not true
       and not exists (select 1 from public.gfx_hand_actions a
                        where a.gfx_pc_id = p.gfx_pc_id and a.session_id = p.session_id
                          and a.hand_idx = p.hand_idx and a.player_num = p.player_num
                          and a.event_type = 'FOLD')
     group by p.gfx_pc_id, p.session_id, p.hand_idx
)
select h.gfx_pc_id,
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
       rank() over (partition by h.gfx_pc_id, h.session_id
                    order by h.final_pot desc nulls last) as pot_rank,
       rank() over (partition by h.gfx_pc_id, h.session_id
                    order by h.duration_seconds desc nulls last) as duration_rank
  from public.gfx_hands h
  left join remaining r using (gfx_pc_id, session_id, hand_idx);

-- Row-level security, privileges, realtime ----------------------------------------------------
-- As 20261127000000_row_level_security.sql: anon nothing, authenticated reads, the writer role
-- writes (its sessions' trigger writes these rows as the writer), service_role all.

alter table public.gfx_hands enable row level security;
alter table public.gfx_hand_players enable row level security;
alter table public.gfx_hand_actions enable row level security;
alter table public.gfx_hand_derivations enable row level security;

revoke all on table public.gfx_hands, public.gfx_hand_players, public.gfx_hand_actions,
    public.gfx_hand_derivations from public, anon, authenticated, gfx_sync_writer;
grant select on table public.gfx_hands, public.gfx_hand_players, public.gfx_hand_actions,
    public.gfx_hand_derivations to authenticated;
grant select, insert, update, delete on table public.gfx_hands, public.gfx_hand_players,
    public.gfx_hand_actions, public.gfx_hand_derivations to gfx_sync_writer, service_role;

do $$
declare
    hand_table text;
begin
    foreach hand_table in array array['gfx_hands', 'gfx_hand_players', 'gfx_hand_actions',
                                      'gfx_hand_derivations'] loop
        execute format('drop policy if exists %I on public.%I',
                       hand_table || '_service_role_all', hand_table);
        execute format('create policy %I on public.%I for all to service_role '
                       'using (true) with check (true)', hand_table || '_service_role_all',
                       hand_table);
        execute format('drop policy if exists %I on public.%I',
                       hand_table || '_writer_all', hand_table);
        execute format('create policy %I on public.%I for all to gfx_sync_writer '
                       'using (true) with check (true)', hand_table || '_writer_all', hand_table);
        execute format('drop policy if exists %I on public.%I',
                       hand_table || '_authenticated_read', hand_table);
        execute format('create policy %I on public.%I for select to authenticated using (true)',
                       hand_table || '_authenticated_read', hand_table);
    end loop;
end;
$$;

do $$
begin
    if current_setting('server_version_num')::int >= 150000 then
        execute 'alter view public.gfx_player_session_stats set (security_invoker = true)';
        execute 'alter view public.gfx_chip_counts set (security_invoker = true)';
        execute 'alter view public.gfx_notable_hands set (security_invoker = true)';
    end if;
end;
$$;
revoke all on table public.gfx_player_session_stats, public.gfx_chip_counts,
    public.gfx_notable_hands from public, anon, authenticated, gfx_sync_writer;
grant select on table public.gfx_player_session_stats, public.gfx_chip_counts,
    public.gfx_notable_hands to authenticated, service_role;

-- Functions: the derivation runs as whoever writes gfx_sessions (the writer role, the service
-- role, the owner); nobody else calls it. The helpers are called from inside it.
revoke all on function
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
    public.gfx_hands_write(text, bigint, integer[], jsonb[], text[]),
    public.gfx_hands_suspect(jsonb),
    public.gfx_hands_seconds(text, text),
    public.gfx_hands_write_fast(text, bigint, integer[], jsonb[], text[]),
    public.gfx_hands_report(text, bigint, text, integer, text, text, text),
    public.gfx_derive_hands(text, bigint),
    public.gfx_hands_derive(text, bigint, jsonb, text),
    public.gfx_sessions_derive_hands(),
    public.gfx_hands_delete_children(),
    public.gfx_hands_move_children(),
    public.gfx_hands_truncate_children()
    from public, anon, authenticated;
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
    public.gfx_hands_write(text, bigint, integer[], jsonb[], text[]),
    public.gfx_hands_suspect(jsonb),
    public.gfx_hands_seconds(text, text),
    public.gfx_hands_write_fast(text, bigint, integer[], jsonb[], text[]),
    public.gfx_hands_report(text, bigint, text, integer, text, text, text),
    public.gfx_derive_hands(text, bigint),
    public.gfx_hands_derive(text, bigint, jsonb, text)
    to gfx_sync_writer, service_role;
revoke all on function public.gfx_hands_derivation_version() from public, anon;
grant execute on function public.gfx_hands_derivation_version()
    to authenticated, gfx_sync_writer, service_role;

-- Supabase Realtime: each new hand, its players and actions, where the publication exists.
do $$
declare
    hand_table text;
begin
    if exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
        foreach hand_table in array array['gfx_hands', 'gfx_hand_players', 'gfx_hand_actions']
        loop
            if not exists (select 1 from pg_publication_tables
                           where pubname = 'supabase_realtime'
                             and schemaname = 'public' and tablename = hand_table) then
                execute format('alter publication supabase_realtime add table public.%I',
                               hand_table);
            end if;
        end loop;
    end if;
end;
$$;
