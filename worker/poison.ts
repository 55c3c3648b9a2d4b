/**
 * Values Postgres refuses, caught before they reach a statement: a lone UTF-16 surrogate (a
 * string cut inside an emoji) or a NUL character. jsonb rejects both as escapes (`\ud83d`,
 * `\u0000`), text columns reject NUL. Caught at the edge, such a value fails its own job or its
 * own call with a clear error; it never reaches a batch it would fail for everyone in it.
 */

// JSON.stringify writes a lone surrogate as a \udXXX escape (a paired one stays a raw
// character) and NUL as \u0000. The escape counts only after an even run of backslashes:
// `\\u0000` is a backslash followed by the text "u0000", which is fine.
const REFUSED_JSON_ESCAPE = /(?<!\\)(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

/** Why Postgres's jsonb would refuse this JSON text from JSON.stringify, or undefined. */
export function jsonRefusal(json: string): string | undefined {
  const match = REFUSED_JSON_ESCAPE.exec(json);
  if (!match) return undefined;
  return match[0].toLowerCase().endsWith('\\u0000')
    ? 'contains a NUL character (\\u0000), which Postgres jsonb cannot store'
    : 'contains a lone UTF-16 surrogate (a string cut inside a character such as an emoji), which Postgres jsonb cannot store';
}

/** Why a Postgres text column would refuse this string, or undefined. */
export function textRefusal(text: string): string | undefined {
  if (text.includes('\0')) return 'contains a NUL character, which Postgres text cannot store';
  if (!text.isWellFormed()) return 'contains a lone UTF-16 surrogate (a string cut inside a character such as an emoji)';
  return undefined;
}

/** The text with whatever Postgres would refuse replaced by U+FFFD, for error messages we store. */
export function storableText(text: string): string {
  return text.toWellFormed().replaceAll('\0', '\uFFFD');
}
