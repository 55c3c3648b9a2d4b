/** Names shared by the program and its tests. Pure. */

/** The APIs the program needs; it enables them itself (and never disables them). */
export const REQUIRED_APIS = [
  'compute.googleapis.com',
  'sqladmin.googleapis.com',
  'servicenetworking.googleapis.com',
  'artifactregistry.googleapis.com',
  'secretmanager.googleapis.com',
  'iap.googleapis.com',
  'logging.googleapis.com',
  'iam.googleapis.com',
  'cloudresourcemanager.googleapis.com',
] as const;

/** The APIs for this configuration: the backlog metric also needs Cloud Monitoring. */
export function requiredApis(options: { backlogScaling: boolean }): string[] {
  return options.backlogScaling ? [...REQUIRED_APIS, 'monitoring.googleapis.com'] : [...REQUIRED_APIS];
}

/**
 * A prefix for names that must be unique in the project (service account id, repository id), derived from
 * the stack so two stacks can share a project: lower-case, starting with a letter, at most 20 characters.
 */
export function physicalPrefix(stack: string): string {
  const cleaned = stack
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return `pgq-${cleaned || 'stack'}`.slice(0, 20).replace(/-+$/, '');
}
