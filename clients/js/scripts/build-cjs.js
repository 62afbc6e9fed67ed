// Writes the CommonJS build, dist/herald.cjs (from src/herald.js, with esbuild), and its
// typings, dist/herald.d.cts (a copy of src/herald.d.ts). Both are committed; a test
// (test/package.test.js) checks they are current. Run: npm run build.
import { build } from 'esbuild';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The two files' contents, as the build makes them: `{cjs, dts}`. */
export async function outputs() {
  const result = await build({
    entryPoints: [join(root, 'src/herald.js')],
    format: 'cjs',
    platform: 'neutral',
    target: 'es2022',
    write: false,
    logLevel: 'silent',
  });
  const banner = '// Generated from src/herald.js by scripts/build-cjs.js: do not edit.\n';
  return { cjs: banner + result.outputFiles[0].text, dts: readFileSync(join(root, 'src/herald.d.ts'), 'utf8') };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { cjs, dts } = await outputs();
  mkdirSync(join(root, 'dist'), { recursive: true });
  writeFileSync(join(root, 'dist/herald.cjs'), cjs);
  writeFileSync(join(root, 'dist/herald.d.cts'), dts);
  console.log('wrote dist/herald.cjs and dist/herald.d.cts');
}
