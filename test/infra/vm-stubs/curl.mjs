#!/usr/bin/env node
// Stands in for curl on the simulated VM: the metadata server's token endpoint and Secret Manager's
// access endpoint, answering only requests made the way Google requires (headers, exact version name).
import fs from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
fs.appendFileSync(path.join(process.env.STUB_DIR, 'calls.jsonl'), `${JSON.stringify({ tool: 'curl', args })}\n`);
const headers = [];
let url;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '-H') headers.push(args[++i]);
  else if (!args[i].startsWith('-')) url = args[i];
}
const TOKEN = 'ya29.stub-token';
if (url === 'http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token') {
  if (!headers.includes('Metadata-Flavor: Google')) process.exit(22);
  process.stdout.write(`{"access_token":"${TOKEN}","expires_in":3599,"token_type":"Bearer"}`);
  process.exit(0);
}
if (url === `https://secretmanager.googleapis.com/v1/${process.env.STUB_SECRET_VERSION}:access`) {
  if (!headers.includes(`Authorization: Bearer ${TOKEN}`)) process.exit(22);
  // Pretty-printed, like the real API, with the crc field that must not be mistaken for the data.
  process.stdout.write(
    `{\n  "name": "${process.env.STUB_SECRET_VERSION}",\n  "payload": {\n    "data": "${process.env.STUB_PASSWORD_B64}",\n    "dataCrc32c": "123456"\n  }\n}\n`,
  );
  process.exit(0);
}
process.exit(22);
