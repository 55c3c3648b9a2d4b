import * as dockerBuild from '@pulumi/docker-build';
import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { childOptions } from './options.ts';

export interface WorkerImageArgs {
  readonly region: pulumi.Input<string>;
  /** Artifact Registry repository id (lower-case letters, digits, hyphens). */
  readonly repositoryId: string;
  /** Build context: the directory holding the Dockerfile, relative to the working directory or absolute. */
  readonly context: string;
  /** Image name inside the repository. Defaults to `worker`. */
  readonly imageName?: string;
  /** How many of the newest image versions the cleanup policy always keeps. */
  readonly retainCount: number;
}

/**
 * The worker image: an Artifact Registry repository that cleans up after itself, and the image built for
 * linux/amd64 and pushed by `pulumi up`. Consumers get it only by digest, so a new build means a new
 * instance template and an unchanged image means no change at all.
 */
export class WorkerImage extends pulumi.ComponentResource {
  /** `REGION-docker.pkg.dev/PROJECT/REPO/NAME@sha256:...` */
  readonly imageRef: pulumi.Output<string>;
  readonly digest: pulumi.Output<string>;
  /** The repository resource (for read grants). */
  readonly repository: gcp.artifactregistry.Repository;

  constructor(name: string, args: WorkerImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super('gcpmig-pgqueue:infra:WorkerImage', name, {}, opts);
    const child = childOptions(this, opts);
    const imageName = args.imageName ?? 'worker';

    this.repository = new gcp.artifactregistry.Repository(
      `${name}-repo`,
      {
        location: args.region,
        repositoryId: args.repositoryId,
        format: 'DOCKER',
        description: 'gcpmig-pgqueue worker images',
        cleanupPolicyDryRun: false,
        cleanupPolicies: [
          { id: 'keep-newest', action: 'KEEP', mostRecentVersions: { keepCount: args.retainCount } },
          // A day's grace so an image pushed by a `pulumi up` that is still rolling out is never collected.
          { id: 'delete-older', action: 'DELETE', condition: { tagState: 'ANY', olderThan: '86400s' } },
        ],
        labels: { app: 'gcpmig-pgqueue' },
      },
      child,
    );

    const repoUri = this.repository.registryUri;
    const client = gcp.organizations.getClientConfigOutput({ parent: this });
    const image = new dockerBuild.Image(
      `${name}-image`,
      {
        context: { location: args.context },
        dockerfile: { location: `${args.context}/Dockerfile` },
        platforms: [dockerBuild.Platform.Linux_amd64],
        push: true,
        tags: [pulumi.interpolate`${repoUri}/${imageName}:latest`],
        registries: [
          {
            address: pulumi.interpolate`${args.region}-docker.pkg.dev`,
            username: 'oauth2accesstoken',
            password: pulumi.secret(client.accessToken),
          },
        ],
      },
      child,
    );

    this.digest = image.digest;
    this.imageRef = pulumi.interpolate`${repoUri}/${imageName}@${image.digest}`;
    this.registerOutputs({ imageRef: this.imageRef, digest: this.digest });
  }
}
