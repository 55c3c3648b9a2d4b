import { defineConfig } from 'vitest/config';

// PGQ_CANARY=1 runs only the test that must fail (.ci/run checks that the command then fails).
const canary = process.env.PGQ_CANARY === '1';

export default defineConfig({
  test: {
    include: canary ? ['test/canary/*.test.ts'] : ['test/**/*.test.ts'],
    exclude: canary ? [] : ['test/canary/**', '**/node_modules/**'],
    globalSetup: ['test/global-setup.ts'],
    // Two cores: more files at once only makes the process-level tests (crash, drain) fight for CPU.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
