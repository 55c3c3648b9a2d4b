-- pgq:compatible-from 2
-- (Additive: code that knows only up to 0002 or 0003 never reads these columns, leaves them null,
-- and keeps running beside newer code.)
-- Fencing tokens. A claim is the worker's claim number `claim_seq` under its incarnation
-- `worker_id`; together they are the token every statement that changes a running job matches,
-- so an outcome sent by a run that is no longer the job's current one changes nothing. The
-- history keeps the token of the run that ended the job, so a resend after a lost reply can be
-- told from a job taken away, and a late outcome can replace an "outcome unknown" record once.
alter table pgq.jobs add column claim_seq bigint;
alter table pgq.finished_jobs add column claim_seq bigint;
-- The token of the run that a retry ended: a retry sent again after its reply was lost finds
-- the job queued with its own token here, and knows it was recorded.
alter table pgq.jobs add column retried_by text;

-- Reconciliation and the rescuer look up one worker's running jobs by claim. Measured against
-- the drain benchmark (BENCHMARKS.md, "Ownership"): one entry per claimed job, removed with it.
create index jobs_running_worker on pgq.jobs (worker_id, claim_seq) where state = 'running';
