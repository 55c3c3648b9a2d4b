// docker's --env-file rules, as the docker CLI applies them (opts/envfile.go + parse.go): the file must be
// UTF-8; it is read line by line (a CR before the LF is dropped); leading whitespace of a line is trimmed;
// empty lines and lines starting with '#' are skipped; the name ends at the first '=' and may not contain
// whitespace; the value is everything after that '=', verbatim: no quotes, escapes or expansion.

const WHITESPACE = /^[\s\u0085]+/u;

/** Parses an env file (Buffer or string) into [name, value] pairs in file order. Throws like docker. */
export function parseDockerEnvFile(content) {
  const text = typeof content === 'string' ? content : new TextDecoder('utf-8', { fatal: true }).decode(content);
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const pairs = [];
  for (const raw of lines) {
    const line = (raw.endsWith('\r') ? raw.slice(0, -1) : raw).replace(WHITESPACE, '');
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) throw new Error(`env file line without '=' (a pass-through name): ${line}`);
    const name = line.slice(0, eq);
    if (name === '') throw new Error('env file line with no variable name');
    if (/\s/u.test(name)) throw new Error(`variable '${name}' contains whitespaces`);
    pairs.push([name, line.slice(eq + 1)]);
  }
  return pairs;
}
