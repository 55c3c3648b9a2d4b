-- pgq:compatible-from 2
-- (Additive: code that knows only up to 0002 ignores this table and keeps running beside newer code.)
-- What maintenance remembers between passes: when the last pass ran, and the fleet-wide grace
-- point. A pass that finds the previous one much further back than the rescue interval knows the
-- database or every worker was away: heartbeats could not arrive, so nobody's silence counts
-- from before that. The grace point moves to now, and every lease is measured from the later of
-- a worker's heartbeat and the grace point.
create table pgq.maintenance (
  singleton    boolean     primary key default true check (singleton),
  last_pass_at timestamptz not null default now(),
  grace_from   timestamptz not null default now()
);
insert into pgq.maintenance default values;
