/** Parses a docker --env-file (Buffer or string) into [name, value] pairs in file order. */
export declare function parseDockerEnvFile(content: Buffer | string): Array<[string, string]>;
