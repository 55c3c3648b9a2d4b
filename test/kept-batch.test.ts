import { describe, expect, it } from 'vitest';
import { KeptBatch } from '../worker/loop/kept-batch.ts';
import type { Succeeded } from '../worker/loop/database.ts';

describe('KeptBatch', () => {
  it('gives back every field of the successes it packed, and no enqueue time where none was known', () => {
    const batch: Succeeded[] = [
      { id: '9007199254740993', attempt: 3, claimSeq: 41, createdAt: new Date(1_700_000_000_123), startedAt: new Date(1_700_000_001_456), resultJson: '{"n":12345678901234567890}' },
      { id: '7', attempt: 1, claimSeq: 42, startedAt: new Date(5), resultJson: 'null' },
    ];
    const kept = new KeptBatch(100, batch, 160);
    expect(kept.length).toBe(2);
    expect(kept.ids).toEqual(['9007199254740993', '7']);
    const back = kept.unpack();
    expect(back).toEqual(batch);
    expect('createdAt' in back[1]!).toBe(false);
  });
});
