import { describe, expect, it } from 'vitest';
import { backoffMs } from '../worker/backoff.ts';
import { describeError, isTransient } from '../worker/errors.ts';

describe('backoff', () => {
  it('doubles from the base and stops at the cap', () => {
    const waits = [1, 2, 3, 4, 5, 6, 7, 8].map((attempt) => backoffMs(attempt, { baseMs: 100, maxMs: 5_000 }));
    expect(waits).toEqual([100, 200, 400, 800, 1600, 3200, 5000, 5000]);
  });

  it('jitters to 50-100 % of the figure when given randomness', () => {
    expect(backoffMs(3, { baseMs: 1_000, maxMs: 60_000, random: () => 0 })).toBe(2_000);
    expect(backoffMs(3, { baseMs: 1_000, maxMs: 60_000, random: () => 1 })).toBe(4_000);
    expect(backoffMs(3, { baseMs: 1_000, maxMs: 60_000, random: () => 0.5 })).toBe(3_000);
  });

  it('stays finite for absurd attempt numbers and treats attempt < 1 as the first', () => {
    expect(backoffMs(1e9, { baseMs: 1, maxMs: 7_000 })).toBe(7_000);
    expect(backoffMs(0, { baseMs: 250, maxMs: 7_000 })).toBe(250);
  });
});

describe('transient errors', () => {
  const coded = (code: string, message = 'x') => Object.assign(new Error(message), { code });

  it.each([
    ['serialization failure', coded('40001')],
    ['deadlock', coded('40P01')],
    ['admin shutdown', coded('57P01')],
    ['crash shutdown', coded('57P02')],
    ['cannot connect now', coded('57P03')],
    ['too many connections', coded('53300')],
    ['connection failure', coded('08006')],
    ['connection refused', coded('ECONNREFUSED')],
    ['connection reset', coded('ECONNRESET')],
    ['timed out socket', coded('ETIMEDOUT')],
    ['dropped connection (node-postgres)', new Error('Connection terminated unexpectedly')],
    ['pool connect timeout', new Error('timeout exceeded when trying to connect')],
    ['wrapped', new Error('claim failed', { cause: coded('57P01') })],
  ])('%s is transient', (_name, error) => {
    expect(isTransient(error)).toBe(true);
  });

  it.each([
    ['unique violation', coded('23505')],
    ['invalid JSON text', coded('22P02')],
    ['untranslatable character', coded('22P05')],
    ['syntax error', coded('42601')],
    ['undefined table', coded('42P01')],
    ['a plain bug', new TypeError('cannot read properties of undefined')],
    ['not an Error', 'boom'],
  ])('%s is not transient', (_name, error) => {
    expect(isTransient(error)).toBe(false);
  });

  it('describes errors in one line, with their class unless plain', () => {
    expect(describeError(new TypeError('bad'))).toBe('TypeError: bad');
    expect(describeError(new Error('plain'))).toBe('plain');
    expect(describeError(42)).toBe('non-error thrown: 42');
  });
});
