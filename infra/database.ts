import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { caBundle } from './ca-bundle.ts';
import { childOptions } from './options.ts';

export interface DatabaseArgs {
  readonly region: pulumi.Input<string>;
  /** The VPC whose private services access range holds the instance's private IP. */
  readonly networkId: pulumi.Input<string>;
  /** The service-networking peering; the instance cannot get a private IP before it exists. */
  readonly privateServicesConnection: pulumi.Resource;
  /** Cloud SQL version, e.g. POSTGRES_17. */
  readonly databaseVersion: string;
  readonly tier: string;
  /** ENTERPRISE for shared-core and custom tiers (Postgres 16+ would otherwise default to ENTERPRISE_PLUS). */
  readonly edition: 'ENTERPRISE' | 'ENTERPRISE_PLUS';
  readonly diskSizeGb: number;
  /** REGIONAL availability (a standby in a second zone) when true. */
  readonly highAvailability: boolean;
  /** The max_connections flag; undefined keeps the tier's default. */
  readonly maxConnections?: number;
  readonly deletionProtection: boolean;
  /** Daily backup window start, HH:MM UTC. */
  readonly backupStartTime: string;
  readonly backupRetainedCount: number;
  readonly pointInTimeRecovery: boolean;
  readonly databaseName: string;
  readonly userName: string;
  /** The user's password; must be a Pulumi secret so state holds it encrypted. */
  readonly password: pulumi.Output<string>;
}

/**
 * Cloud SQL for PostgreSQL on a private IP only, TLS required, backed up; the queue's database and user;
 * the password in Secret Manager, where the workers read it at start.
 */
export class Database extends pulumi.ComponentResource {
  readonly instanceName: pulumi.Output<string>;
  readonly connectionName: pulumi.Output<string>;
  readonly privateIp: pulumi.Output<string>;
  /** PEM bundle of every CA the instance trusts (the current and any upcoming CA, see caBundle). */
  readonly serverCaPem: pulumi.Output<string>;
  readonly databaseName: pulumi.Output<string>;
  readonly userName: pulumi.Output<string>;
  /** Secret Manager secret holding the password (`projects/P/secrets/S`). */
  readonly passwordSecretId: pulumi.Output<string>;
  /** The exact secret version the workers read (`projects/P/secrets/S/versions/N`). */
  readonly passwordSecretVersion: pulumi.Output<string>;

  constructor(name: string, args: DatabaseArgs, opts?: pulumi.ComponentResourceOptions) {
    super('gcpmig-pgqueue:infra:Database', name, {}, opts);
    const child = childOptions(this, opts);

    const instance = new gcp.sql.DatabaseInstance(
      `${name}-pg`,
      {
        region: args.region,
        databaseVersion: args.databaseVersion,
        deletionProtection: args.deletionProtection,
        settings: {
          tier: args.tier,
          edition: args.edition,
          availabilityType: args.highAvailability ? 'REGIONAL' : 'ZONAL',
          diskType: 'PD_SSD',
          diskSize: args.diskSizeGb,
          diskAutoresize: true,
          deletionProtectionEnabled: args.deletionProtection,
          ipConfiguration: {
            ipv4Enabled: false,
            privateNetwork: args.networkId,
            sslMode: 'ENCRYPTED_ONLY',
            // The per-instance CA is what the workers pin with PGSSLROOTCERT (sslmode verify-ca).
            serverCaMode: 'GOOGLE_MANAGED_INTERNAL_CA',
          },
          backupConfiguration: {
            enabled: true,
            startTime: args.backupStartTime,
            pointInTimeRecoveryEnabled: args.pointInTimeRecovery,
            backupRetentionSettings: { retainedBackups: args.backupRetainedCount, retentionUnit: 'COUNT' },
          },
          databaseFlags:
            args.maxConnections === undefined ? [] : [{ name: 'max_connections', value: String(args.maxConnections) }],
          userLabels: { app: 'gcpmig-pgqueue' },
        },
      },
      // The private IP is allocated from the peered range: without this the create races the peering.
      childOptions(this, opts, args.privateServicesConnection),
    );

    const database = new gcp.sql.Database(
      `${name}-db`,
      {
        instance: instance.name,
        name: args.databaseName,
        // Deleting the instance removes it; dropping it first fails while a worker is connected.
        deletionPolicy: 'ABANDON',
      },
      child,
    );
    const user = new gcp.sql.User(
      `${name}-user`,
      {
        instance: instance.name,
        name: args.userName,
        password: pulumi.secret(args.password),
        // A Postgres role that owns the queue's tables cannot be dropped; the instance's deletion removes it.
        deletionPolicy: 'ABANDON',
      },
      child,
    );

    const secret = new gcp.secretmanager.Secret(
      `${name}-password`,
      { replication: { auto: {} }, labels: { app: 'gcpmig-pgqueue' } },
      child,
    );
    const version = new gcp.secretmanager.SecretVersion(
      `${name}-password`,
      { secret: secret.id, secretData: pulumi.secret(args.password) },
      // Workers read the secret as soon as it exists: the user must already have this password.
      childOptions(this, opts, user),
    );

    this.instanceName = instance.name;
    this.connectionName = instance.connectionName;
    this.privateIp = instance.privateIpAddress;
    this.serverCaPem = gcp.sql
      .getCaCertsOutput({ instance: instance.name }, { parent: this })
      .apply((result) => caBundle(result.certs));
    this.databaseName = database.name;
    this.userName = user.name;
    this.passwordSecretId = secret.id;
    this.passwordSecretVersion = version.name;
    this.registerOutputs({
      instanceName: this.instanceName,
      connectionName: this.connectionName,
      privateIp: this.privateIp,
      databaseName: this.databaseName,
      userName: this.userName,
      passwordSecretId: this.passwordSecretId,
      passwordSecretVersion: this.passwordSecretVersion,
    });
  }
}
