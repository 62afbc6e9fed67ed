// The package as npm would ship it: typings that catch typos (tsc), the CommonJS build (current,
// and require()-able by the package's name), the bundle size, and the package.json fields.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import WebSocket from 'ws';
import { outputs } from '../scripts/build-cjs.js';
import { Server, eventually } from './server.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const SIZE_LIMIT = 8 * 1024;

let server;

before(async () => {
  server = await Server.start();
});

after(async () => {
  await server?.stop();
});

test('the typings accept an app and refuse misspelled event names (tsc --noEmit on test/types)', () => {
  const tsc = join(root, 'node_modules/typescript/bin/tsc');
  const result = spawnSync(process.execPath, [tsc, '--noEmit', '-p', join(root, 'test/types')], { encoding: 'utf8', cwd: root });
  assert.equal(result.status, 0, `tsc failed:\n${result.stdout}${result.stderr}`);
  // The check file does hold the typo lines that must not compile.
  const check = readFileSync(join(root, 'test/types/check.ts'), 'utf8');
  assert.match(check, /@ts-expect-error[^\n]*\n\s*herald\.on\('conected'/);
  assert.match(check, /@ts-expect-error[^\n]*\n\s*room\.on\('publikation'/);
});

test('dist/herald.cjs and dist/herald.d.cts are what scripts/build-cjs.js makes of src (run `npm run build`)', async () => {
  const { cjs, dts } = await outputs();
  assert.equal(readFileSync(join(root, 'dist/herald.cjs'), 'utf8'), cjs, 'dist/herald.cjs is stale: npm run build');
  assert.equal(readFileSync(join(root, 'dist/herald.d.cts'), 'utf8'), dts, 'dist/herald.d.cts is stale: npm run build');
});

test('require() of the package by its name gives the CommonJS build, which connects and receives', async () => {
  const require = createRequire(import.meta.url);
  assert.equal(require.resolve(pkg.name), join(root, 'dist/herald.cjs'));
  const cjs = require(pkg.name);
  for (const name of ['Herald', 'HeraldApi', 'HeraldError', 'Subscription', 'backoff', 'tokenExpiry', 'websocketUrl', 'STATE_EVENTS']) {
    assert.ok(cjs[name] !== undefined, `exports ${name}`);
  }
  const esm = await import(pkg.name);
  assert.equal(Object.keys(esm).sort().join(), Object.keys(cjs).filter((k) => k !== '__esModule').sort().join(), 'the same exports as the ESM build');
  assert.notEqual(esm.Herald, cjs.Herald, 'import resolves to src, require to dist');

  const herald = new cjs.Herald({ url: server.ws, WebSocket, token: server.token('cjs') });
  try {
    await herald.connect();
    const got = [];
    const feed = herald.subscription('feed:cjs');
    feed.on('publication', (m) => got.push(m.data));
    await feed.subscribe().ready(5000);
    await server.api.publish({ scope: 'topic', target: 'feed:cjs', type: 'n', data: { via: 'require' } });
    await eventually('the publication', () => got.length === 1);
    assert.deepEqual(got, [{ via: 'require' }]);
  } finally {
    herald.disconnect();
  }
});

test(`the minified, gzipped ESM bundle is under ${SIZE_LIMIT} bytes`, async () => {
  const result = await build({ entryPoints: [join(root, 'src/herald.js')], bundle: true, minify: true, format: 'esm', write: false, logLevel: 'silent' });
  const minified = result.outputFiles[0].contents;
  const gzipped = gzipSync(minified, { level: 9 }).length;
  console.log(`# herald.js: ${readFileSync(join(root, 'src/herald.js')).length} bytes source, ${minified.length} minified, ${gzipped} minified + gzip -9`);
  assert.ok(gzipped < SIZE_LIMIT, `${gzipped} bytes gzipped: over the ${SIZE_LIMIT} budget`);
});

test('package.json: a scoped name, MIT with its LICENSE, ws as an optional peer, import/require/types exports', () => {
  assert.equal(pkg.name, '@herald-rt/client');
  assert.equal(pkg.license, 'MIT');
  assert.match(readFileSync(join(root, 'LICENSE'), 'utf8'), /^MIT License/);
  assert.deepEqual(pkg.peerDependenciesMeta, { ws: { optional: true } });
  assert.ok(pkg.peerDependencies.ws);
  const entry = pkg.exports['.'];
  assert.deepEqual(entry.import, { types: './src/herald.d.ts', default: './src/herald.js' });
  assert.deepEqual(entry.require, { types: './dist/herald.d.cts', default: './dist/herald.cjs' });
  for (const file of [entry.import.types, entry.import.default, entry.require.types, entry.require.default]) assert.ok(existsSync(join(root, file)), file);
  for (const dir of ['src', 'dist', 'LICENSE']) assert.ok(pkg.files.includes(dir), `files has ${dir}`);
  assert.deepEqual(Object.keys(pkg.dependencies ?? {}), [], 'no runtime dependency');
});
