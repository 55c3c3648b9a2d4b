/**
 * The backlog signal for the autoscaler: names shared by the program (autoscaler, IAM, worker environment)
 * and the worker's publisher (worker/monitoring/backlog-publisher.ts reads the same variables). Pure.
 *
 * Why a per-group metric with a single-instance assignment: the backlog is one number for the whole group,
 * and the autoscaler should run backlog / jobsPerVm VMs. Google's current autoscaler documentation lists no
 * regional restriction for per-group metrics (older versions of the page did; see the README's checklist).
 * A per-instance metric would need every VM to report a share of the backlog, and averaging a total that
 * every VM reports never scales in.
 */

/** The custom metric the workers write: jobs queued and due now, a GAUGE of INT64. */
export const BACKLOG_METRIC_TYPE = 'custom.googleapis.com/pgqueue/jobs_due';
/** The metric label that tells apart deployments (stacks) sharing a project. */
export const BACKLOG_DEPLOYMENT_LABEL = 'deployment';
/** Role the workers' service account needs to write time series; granted only with backlog scaling on. */
export const METRIC_WRITER_ROLE = 'roles/monitoring.metricWriter';

/**
 * The autoscaler's filter: the series of this deployment on the `global` monitored resource. A resource type
 * other than gce_instance is what makes the autoscaler treat the metric as per-group.
 */
export function backlogMetricFilter(deployment: string): string {
  return `resource.type = "global" AND metric.labels.${BACKLOG_DEPLOYMENT_LABEL} = "${deployment}"`;
}

/** The worker environment that turns the publisher on. */
export function backlogWorkerEnv(input: { project: string; deployment: string; intervalSeconds: number }): Record<string, string> {
  return {
    BACKLOG_METRIC: 'true',
    BACKLOG_METRIC_PROJECT: input.project,
    BACKLOG_METRIC_TYPE,
    BACKLOG_METRIC_DEPLOYMENT: input.deployment,
    BACKLOG_METRIC_INTERVAL_S: String(input.intervalSeconds),
  };
}
