// The official openai SDK, connected to llmd's Unix socket the way an app would connect it.
//
// The test files import this module; run.mjs sets its environment:
//   LLMD_SOCKET           llmd's socket
//   LLMD_COMPAT_MODULES   the node_modules folder install.sh filled (outside the source tree)
//   LLMD_COMPAT_SDK       which SDK: "openai4" (v4, node-fetch underneath) or "openai" (the latest major,
//                         fetch underneath)
// The SDK is loaded from LLMD_COMPAT_MODULES by path, through its package's own ESM entry, so that the
// test files can stay in the source tree while the packages live in the cache.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

function required_env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests through run.mjs (see tests/README.md)`);
  return value;
}

export const socketPath = required_env('LLMD_SOCKET');
export const modulesDir = required_env('LLMD_COMPAT_MODULES');
export const sdkName = required_env('LLMD_COMPAT_SDK');
if (sdkName !== 'openai4' && sdkName !== 'openai') throw new Error(`LLMD_COMPAT_SDK: unknown SDK ${sdkName}`);

const requireFromCache = createRequire(path.join(modulesDir, '..', 'resolve-from-here.cjs'));

// The package's ESM entry (exports["."] for an import), as an app's `import ... from 'openai'` gets it.
async function import_package(name) {
  const dir = path.join(modulesDir, name);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const dot = pkg.exports?.['.'];
  const pick = (e) => (typeof e === 'string' ? e : e?.import ? pick(e.import) : e?.default ? pick(e.default) : undefined);
  const entry = pick(dot) ?? pkg.module ?? pkg.main ?? 'index.js';
  return { module: await import(pathToFileURL(path.join(dir, entry)).href), version: pkg.version };
}

const sdk = await import_package(sdkName);
export const OpenAI = sdk.module.OpenAI ?? sdk.module.default;
export const sdkVersion = sdk.version;
export const sdkMajor = Number(sdk.version.split('.')[0]);
export const Ajv = requireFromCache('ajv').default;

// The host part of the URL is never resolved: every connection goes to the socket.
const baseURL = 'http://llmd/v1';

function make_client() {
  const common = { apiKey: 'llmd-needs-no-key', baseURL, maxRetries: 0, timeout: 120_000 };
  if (sdkMajor < 5) {
    // v4 sends through node-fetch, which takes an http.Agent: one whose connections are the socket.
    const agent = new http.Agent({ keepAlive: true });
    agent.createConnection = () => net.createConnection({ path: socketPath });
    return new OpenAI({ ...common, httpAgent: agent });
  }
  // v5 and later send through fetch; undici's own fetch with a dispatcher that connects to the socket
  // (node's built-in fetch bundles a different undici, which need not accept this one's Agent).
  const undici = requireFromCache('undici');
  const dispatcher = new undici.Agent({ connect: { socketPath } });
  return new OpenAI({ ...common, fetch: undici.fetch, fetchOptions: { dispatcher } });
}

export const client = make_client();

// A request without the SDK (what it would refuse to send, or to read the raw answer): JSON over the
// socket. Returns { status, body } with body parsed when it is JSON.
export function raw_request(method, urlPath, body) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request(
      {
        socketPath,
        method,
        path: urlPath,
        headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => {
          let parsed = text;
          try {
            parsed = JSON.parse(text);
          } catch {}
          resolve({ status: res.statusCode, body: parsed, text });
        });
      },
    );
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

// The one served model (the first of models.list()).
let modelCache;
export async function served_model() {
  if (!modelCache) {
    const page = await client.models.list();
    if (!page.data?.length) throw new Error('models.list() returned no model');
    modelCache = page.data[0];
  }
  return modelCache;
}

export const FINISH_REASONS = ['stop', 'length', 'tool_calls', 'content_filter', 'function_call'];

export function check_usage(usage) {
  assert.ok(usage, 'usage is present');
  for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens']) {
    assert.ok(Number.isInteger(usage[k]) && usage[k] >= 0, `usage.${k} is a non-negative integer (${usage[k]})`);
  }
  assert.ok(usage.prompt_tokens > 0, 'prompt_tokens > 0');
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, 'total = prompt + completion');
}

// Collects an SDK stream: its chunks, the concatenated content, the last finish_reason seen.
export async function collect_chat_stream(stream) {
  const chunks = [];
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    chunks.push(chunk);
    for (const c of chunk.choices ?? []) {
      if (typeof c.delta?.content === 'string') text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { chunks, text, finish };
}

export const PROMPT = [
  { role: 'system', content: 'You tell short stories.' },
  { role: 'user', content: 'Once upon a time there was a little girl' },
];
