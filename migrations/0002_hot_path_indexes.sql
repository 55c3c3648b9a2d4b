-- Every claim wrote an entry into jobs_running_worker for each job it took, and every settle
-- removed one: index maintenance on the hottest path, for a lookup that only the rescuer needs,
-- and only when a worker has died. The rescuer now looks up the jobs of the workers it has just
-- found dead (a scan of the hot table, rare), and sweeps for other orphans once a minute.
drop index pgq.jobs_running_worker;

-- Heartbeats ask for the worker's jobs whose cancellation was requested: a handful of rows at most.
create index jobs_cancel_requested on pgq.jobs (worker_id) where cancel_requested;

-- finished_at only grows, in insertion order: a BRIN index (one summary per 32 pages) answers
-- "finished before X" (pruning) and "finished in the last minute" (observe) nearly as well as a
-- btree, at a fraction of the cost of a btree entry per settled job.
drop index pgq.finished_jobs_finished_at;
create index finished_jobs_finished_at on pgq.finished_jobs using brin (finished_at) with (pages_per_range = 32);
