import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { childOptions } from './options.ts';

/** Where Google's health checkers connect from (documented ranges for HTTP health checks). */
export const HEALTH_CHECK_RANGES = ['35.191.0.0/16', '130.211.0.0/22'] as const;
/** Where IAP TCP forwarding (operator SSH tunnels) connects from. */
export const IAP_RANGE = '35.235.240.0/20';
/** Network tag of the worker VMs; the firewall rules target only it. */
export const WORKER_TAG = 'pgqueue-worker';

export interface NetworkArgs {
  readonly region: pulumi.Input<string>;
  /** Primary range of the workers' subnet. */
  readonly subnetCidr: pulumi.Input<string>;
  /** Port of the worker's /healthz, the only port opened to Google's health checkers. */
  readonly healthPort: number;
  /** Prefix length of the range reserved for private services access (Cloud SQL's private IP). */
  readonly privateServicesPrefixLength: number;
}

/**
 * A private network for the workers: a custom VPC, one subnet with Private Google Access (Artifact
 * Registry, Secret Manager and Logging without public IPs), Cloud NAT for everything else on the internet,
 * private services access for Cloud SQL, and ingress only from health checkers and IAP.
 */
export class Network extends pulumi.ComponentResource {
  readonly networkId: pulumi.Output<string>;
  readonly networkSelfLink: pulumi.Output<string>;
  readonly networkName: pulumi.Output<string>;
  readonly subnetSelfLink: pulumi.Output<string>;
  /** Resolves once the service-networking peering exists; Cloud SQL's private IP depends on it. */
  readonly privateServicesConnection: gcp.servicenetworking.Connection;

  constructor(name: string, args: NetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    super('gcpmig-pgqueue:infra:Network', name, {}, opts);
    const child = childOptions(this, opts);

    const network = new gcp.compute.Network(
      `${name}-vpc`,
      { autoCreateSubnetworks: false, routingMode: 'REGIONAL', description: 'gcpmig-pgqueue workers' },
      child,
    );

    const subnet = new gcp.compute.Subnetwork(
      `${name}-subnet`,
      {
        network: network.id,
        region: args.region,
        ipCidrRange: args.subnetCidr,
        // Without external IPs this is the only way to reach Artifact Registry and Secret Manager.
        privateIpGoogleAccess: true,
      },
      child,
    );

    const router = new gcp.compute.Router(`${name}-router`, { network: network.id, region: args.region }, child);
    new gcp.compute.RouterNat(
      `${name}-nat`,
      {
        router: router.name,
        region: args.region,
        natIpAllocateOption: 'AUTO_ONLY',
        sourceSubnetworkIpRangesToNat: 'LIST_OF_SUBNETWORKS',
        subnetworks: [{ name: subnet.id, sourceIpRangesToNats: ['ALL_IP_RANGES'] }],
        logConfig: { enable: true, filter: 'ERRORS_ONLY' },
      },
      child,
    );

    new gcp.compute.Firewall(
      `${name}-allow-health-checks`,
      {
        network: network.id,
        direction: 'INGRESS',
        description: "Google's health checkers to the worker's /healthz port only",
        sourceRanges: [...HEALTH_CHECK_RANGES],
        targetTags: [WORKER_TAG],
        allows: [{ protocol: 'tcp', ports: [String(args.healthPort)] }],
      },
      child,
    );
    new gcp.compute.Firewall(
      `${name}-allow-iap-ssh`,
      {
        network: network.id,
        direction: 'INGRESS',
        description: 'SSH through Identity-Aware Proxy only (operator tunnels); no SSH from the internet',
        sourceRanges: [IAP_RANGE],
        targetTags: [WORKER_TAG],
        allows: [{ protocol: 'tcp', ports: ['22'] }],
      },
      child,
    );

    const privateServicesRange = new gcp.compute.GlobalAddress(
      `${name}-private-services`,
      {
        network: network.id,
        purpose: 'VPC_PEERING',
        addressType: 'INTERNAL',
        prefixLength: args.privateServicesPrefixLength,
      },
      child,
    );
    this.privateServicesConnection = new gcp.servicenetworking.Connection(
      `${name}-private-services`,
      {
        network: network.id,
        service: 'servicenetworking.googleapis.com',
        reservedPeeringRanges: [privateServicesRange.name],
        // Cloud SQL keeps its side of the peering for days after the instance is deleted, so deleting the
        // connection fails; abandoning it lets `pulumi destroy` go on (the README's Destroy section covers the peering).
        deletionPolicy: 'ABANDON',
      },
      child,
    );

    this.networkId = network.id;
    this.networkSelfLink = network.selfLink;
    this.networkName = network.name;
    this.subnetSelfLink = subnet.selfLink;
    this.registerOutputs({
      networkId: this.networkId,
      networkSelfLink: this.networkSelfLink,
      networkName: this.networkName,
      subnetSelfLink: this.subnetSelfLink,
    });
  }
}
