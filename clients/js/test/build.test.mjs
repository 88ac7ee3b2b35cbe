// The UMD build is generated from index.mjs and must match it; it loads as
// CommonJS and exports the same API as the ES module.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import * as esm from '../index.mjs';
import { buildUMD, OUT } from '../build.mjs';

const require = createRequire(import.meta.url);

test('dist/herald-resume.js is up to date with index.mjs', () => {
  const src = readFileSync(fileURLToPath(new URL('../index.mjs', import.meta.url)), 'utf8');
  assert.equal(readFileSync(OUT, 'utf8'), buildUMD(src), 'run `npm run build` in clients/js');
});

test('the UMD build exports what the ES module exports', () => {
  const cjs = require('../dist/herald-resume.js');
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  assert.equal(typeof cjs.withResume, 'function');
  assert.equal(cjs.VERSION, esm.VERSION);
});

test('the package resolves to both builds', () => {
  const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../package.json', import.meta.url)), 'utf8'));
  assert.equal(pkg.exports['.'].import, './index.mjs');
  assert.equal(pkg.exports['.'].require, './dist/herald-resume.js');
  assert.equal(require.resolve('../dist/herald-resume.js'), OUT);
});
