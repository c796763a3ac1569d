// Runs the openai SDK tests (node's test runner) against a running llmd, for each SDK major.
//
//   node run.mjs --socket PATH --modules DIR [--sdk openai4|openai|all] [--features]
//
// DIR is the node_modules folder install.sh printed. chat.test.mjs (the basics), features.test.mjs
// (tools, response_format, n, logprobs, penalties, logit_bias, include_usage, no silent drops) and
// responses.test.mjs (the Responses API) run; LLMD_COMPAT_FEATURES=0 (or --no-features) leaves the
// last two out. Exits non-zero when any test failed.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    socket: { type: 'string' },
    modules: { type: 'string' },
    sdk: { type: 'string', default: 'all' },
    features: { type: 'boolean', default: process.env.LLMD_COMPAT_FEATURES !== '0' },
  },
});
if (!values.socket || !values.modules) {
  console.error('usage: node run.mjs --socket PATH --modules DIR [--sdk openai4|openai|all] [--features]');
  process.exit(2);
}
const sdks = values.sdk === 'all' ? ['openai4', 'openai'] : [values.sdk];
const files = ['chat.test.mjs', ...(values.features ? ['features.test.mjs', 'responses.test.mjs'] : [])].map((f) => path.join(here, f));

let failed = 0;
for (const sdk of sdks) {
  console.log(`# ${sdk}: ${files.map((f) => path.basename(f)).join(' ')}`);
  const r = spawnSync(
    process.execPath,
    ['--test', '--test-concurrency=1', '--test-timeout=180000', '--test-reporter=spec', ...files],
    {
      stdio: 'inherit',
      env: { ...process.env, LLMD_SOCKET: values.socket, LLMD_COMPAT_MODULES: values.modules, LLMD_COMPAT_SDK: sdk },
    },
  );
  if (r.status !== 0) {
    console.log(`# ${sdk}: FAILED (exit ${r.status ?? r.signal})`);
    ++failed;
  }
}
process.exit(failed ? 1 : 0);
