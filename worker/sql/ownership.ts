/**
 * Where the database and a worker disagree about what the worker holds: reconciliation, the
 * answers for outcomes that found no running job, and re-claiming after a failover.
 */
import type { RunRef } from './run.ts';
import { moveToHistory, notify, type Queryable } from './shared.ts';

export interface ReconcileRequest {
  /** Every claim numbered up to this one has had its reply or has been declared failed. */
  readonly lowWater: number;
  /** Claims that failed on this side (no reply): whatever they took never reached the worker. */
  readonly failedClaims: readonly number[];
  /** Every job the worker holds now: running, buffered, or with an outcome waiting or on its way. */
  readonly held: readonly string[];
}

export interface ReconcileResult {
  /** Taken by a failed claim: back in the queue with the attempt restored, whatever their delivery. */
  readonly released: string[];
  /** Received and no longer held (a lost commit): at-least-once jobs with attempts left, queued again. */
  readonly requeued: string[];
  /** Received and no longer held, and not to be run again: failed as "outcome lost". */
  readonly lost: string[];
  /** Their cancel was requested: ended `cancelled`. */
  readonly cancelled: string[];
}

/**
 * Settle every disagreement between the database and this worker about the jobs it runs. Only
 * claims up to the low-water mark are judged, plus the failed ones: a claim past the mark may
 * have committed with its reply still on the wire, and its jobs are the worker's. A job of a
 * judged claim that the worker does not hold either never reached it (its claim failed: given
 * back, the attempt restored) or reached it and is gone from its hands although the database
 * still has it running — a commit lost in a failover, or a bug. That one goes back to the queue
 * only if it is at-least-once with attempts left; any other is failed as "outcome lost", since
 * it may have run. Rows are matched on the worker's incarnation and claim numbers, so a job
 * taken by anyone else meanwhile is never touched.
 */
export async function reconcile(db: Queryable, workerId: string, request: ReconcileRequest): Promise<ReconcileResult> {
  const { rows } = await db.query<{ id: string; fate: 'released' | 'requeued' | 'lost' | 'cancelled' }>(
    `with mine as (
        select j.id, j.claim_seq = any($3::bigint[]) as unreceived,
               j.cancel_requested as cancel,
               (j.delivery = 'at_least_once' and j.attempts < j.max_attempts) as again
          from pgq.jobs j
         where j.worker_id = $1 and j.state = 'running'
           and (j.claim_seq = any($3::bigint[]) or (j.claim_seq <= $2 and j.id <> all($4::bigint[])))
         for update of j),
      done as (
        delete from pgq.jobs j using mine m
         where j.id = m.id and (m.cancel or not (m.unreceived or m.again))
        returning j.*, case when m.cancel then 'cancelled' else 'failed' end as final_state, null::jsonb as final_result,
                  case when m.cancel then 'cancelled; its worker never held it'
                       else 'outcome lost: worker ' || j.worker_id || ' received this job (claim ' || j.claim_seq
                            || ') and no longer holds it, yet it was still running; a commit was lost (failover?). It is not run again'
                  end as final_error,
                  null::timestamptz as final_started),
      moved as (${moveToHistory()}),
      back as (
        update pgq.jobs j
           set state = 'queued', worker_id = null, claim_seq = null, started_at = null, run_after = now(),
               attempts = case when m.unreceived then j.attempts - 1 else j.attempts end,
               last_error = case when m.unreceived then j.last_error
                                 else 'outcome lost: worker ' || j.worker_id || ' no longer holds this job (claim ' || j.claim_seq || '); run again' end
          from mine m
         where j.id = m.id and not m.cancel and (m.unreceived or m.again)
        returning j.id, m.unreceived)
      select id::text, case when unreceived then 'released' else 'requeued' end as fate from back
      union all
      select d.id::text, case when d.final_state = 'cancelled' then 'cancelled' else 'lost' end from done d`,
    [workerId, request.lowWater, request.failedClaims, request.held],
  );
  const of = (fate: string) => rows.filter((r) => r.fate === fate).map((r) => r.id);
  const result = { released: of('released'), requeued: of('requeued'), lost: of('lost'), cancelled: of('cancelled') };
  if (result.released.length + result.requeued.length > 0) await notify(db);
  return result;
}

/** A run's outcome sent again, or late: what to record if the history holds "outcome unknown" for it. */
export interface LateOutcome extends RunRef {
  readonly state: 'succeeded' | 'failed';
  /** The result as JSON, for a success. */
  readonly resultJson: string | null;
  readonly error: string | null;
}

/**
 * For outcomes whose statement found no running job under their token: which were recorded
 * already by that same token (a resend after a lost reply: `already`), and which found the
 * rescuer's "outcome unknown" record of their run, or reconciliation's "outcome lost", and
 * replaced it with what really happened (`replaced`, once: the replaced record no longer says
 * so). A failover can lose a settle and let a reconciliation reach the new server before the
 * worker notices the change; the resend that follows then still records the truth. Any other
 * was not this run's.
 */
export async function answerUnrecorded(
  db: Queryable,
  workerId: string,
  outcomes: readonly LateOutcome[],
): Promise<Map<string, 'already' | 'replaced'>> {
  const { rows } = await db.query<{ id: string; answer: 'already' | 'replaced' }>(
    `with r as (
        select * from unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[]) as r(id, claim_seq, state, result, error)),
      replaced as (
        update pgq.finished_jobs f
           set state = r.state, result = r.result::jsonb, error = r.error
          from r
         where f.id = r.id and f.worker_id = $1 and f.claim_seq = r.claim_seq
           and f.state = 'failed' and (f.error like 'outcome unknown:%' or f.error like 'outcome lost:%')
        returning f.id)
      -- The join reads the statement's snapshot: a replaced row is seen as it was before.
      select r.id::text, case when r.id in (select id from replaced) then 'replaced' else 'already' end as answer
        from r join pgq.finished_jobs f on f.id = r.id and f.worker_id = $1 and f.claim_seq = r.claim_seq`,
    [
      workerId,
      outcomes.map((o) => o.id),
      outcomes.map((o) => o.claimSeq),
      outcomes.map((o) => o.state),
      outcomes.map((o) => o.resultJson),
      outcomes.map((o) => o.error),
    ],
  );
  return new Map(rows.map((r) => [r.id, r.answer]));
}

export interface ReclaimResult {
  /** Back in the queue after the failover: taken again under their own tokens. */
  readonly taken: string[];
  /** Running under another token, or finished by another run: the lost window let them start again elsewhere. */
  readonly elsewhere: string[];
  /** Not in the database at all: their enqueue was in the lost window. */
  readonly gone: string[];
}

/**
 * After a failover that lost commits, runs this worker holds or recorded moments ago may be
 * back in the queue. Take each such job again under its own token (worker, claim) and attempt,
 * so nobody else starts it and its outcome can be recorded as the run it was. Jobs still
 * running under their token need nothing; the others are reported.
 */
export async function reclaimRuns(db: Queryable, workerId: string, runs: readonly RunRef[]): Promise<ReclaimResult> {
  // 'later': the job went on to a later attempt (this run's record survived, a retry ran): nothing to report.
  const { rows } = await db.query<{ id: string; fate: 'taken' | 'elsewhere' | 'gone' | 'mine' | 'later' }>(
    `with r as (select * from unnest($2::bigint[], $3::bigint[], $4::int[], $5::float8[]) as r(id, claim_seq, attempt, created_ms)),
      same as (
        -- The job itself, not another one given the same id after the promotion (ids repeat then).
        select j.id, j.state, j.attempts, j.worker_id, j.claim_seq from pgq.jobs j join r on j.id = r.id
         where r.created_ms is null or abs(extract(epoch from j.created_at) * 1000 - r.created_ms) < 1),
      same_done as (
        select f.id, f.attempts, f.worker_id, f.claim_seq from pgq.finished_jobs f join r on f.id = r.id
         where r.created_ms is null or abs(extract(epoch from f.created_at) * 1000 - r.created_ms) < 1),
      taken as (
        update pgq.jobs j
           set state = 'running', worker_id = $1, claim_seq = r.claim_seq, attempts = r.attempt, started_at = now()
          from r
         where j.id = r.id and j.id in (select id from same) and j.state = 'queued' and j.attempts < r.attempt
           and exists (select 1 from pgq.workers where id = $1)
        returning j.id)
      select r.id::text,
             case when r.id in (select id from taken) then 'taken'
                  when exists (select 1 from same j where j.id = r.id and j.worker_id = $1 and j.claim_seq = r.claim_seq) then 'mine'
                  when exists (select 1 from same_done f where f.id = r.id and f.worker_id = $1 and f.claim_seq = r.claim_seq) then 'mine'
                  when exists (select 1 from same j where j.id = r.id and j.attempts <= r.attempt)
                    or exists (select 1 from same_done f where f.id = r.id and f.attempts <= r.attempt) then 'elsewhere'
                  when exists (select 1 from same j where j.id = r.id) or exists (select 1 from same_done f where f.id = r.id) then 'later'
                  else 'gone' end as fate
        from r`,
    [workerId, runs.map((r) => r.id), runs.map((r) => r.claimSeq), runs.map((r) => r.attempt), runs.map((r) => r.createdAt?.getTime() ?? null)],
  );
  const of = (fate: string) => rows.filter((r) => r.fate === fate).map((r) => r.id);
  return { taken: of('taken'), elsewhere: of('elsewhere'), gone: of('gone') };
}
