// The rest of the OpenAI chat surface (issue 16), through the official openai SDK: tool calls,
// response_format, n, logprobs, penalties and logit_bias, include_usage, strict fields with `param`,
// models.retrieve. Written to OpenAI's API reference; run.mjs runs it by default (LLMD_COMPAT_FEATURES=0
// leaves it out).
//
// The models are tiny story models: the checks are about structure and validity (arguments and
// answers parse and validate against their JSON Schemas with ajv), never about wording. Schemas are
// small and bounded (enums, maxLength, integer ranges) so that a grammar-constrained answer fits in
// max_tokens.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  Ajv,
  FINISH_REASONS,
  OpenAI,
  PROMPT,
  check_usage,
  client,
  collect_chat_stream,
  raw_request,
  sdkMajor,
  sdkName,
  sdkVersion,
  served_model,
} from './client.mjs';

const served = await served_model();
const model = served.id;
test.before(() => console.log(`# ${sdkName}@${sdkVersion} against model ${model} (features)`));

const ajv = new Ajv({ strict: false, allErrors: true });
function assert_valid(schema, value, what) {
  const validate = ajv.compile(schema);
  assert.ok(validate(value), `${what} ${JSON.stringify(value)} does not validate: ${ajv.errorsText(validate.errors)}`);
}
function parse_json(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    assert.fail(`${what} is not JSON (${e.message}): ${JSON.stringify(text)}`);
  }
}

// ---- tools -----------------------------------------------------------------------------------------
const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The current weather in a city.',
      parameters: {
        type: 'object',
        properties: {
          city: { type: 'string', maxLength: 16 },
          unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
        },
        required: ['city', 'unit'],
        additionalProperties: false,
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'get_time',
      description: 'The time of day in a time zone.',
      parameters: {
        type: 'object',
        properties: { zone: { type: 'string', enum: ['UTC', 'CET', 'PST'] }, hours24: { type: 'boolean' } },
        required: ['zone'],
        additionalProperties: false,
      },
    },
  },
];
const TOOL_PROMPT = [
  { role: 'system', content: 'You are a helpful assistant with tools.' },
  { role: 'user', content: 'What is the weather in Paris?' },
];
const toolBody = { model, messages: TOOL_PROMPT, tools: TOOLS, max_tokens: 300, temperature: 0 };

function check_tool_call(call, names = TOOLS.map((t) => t.function.name)) {
  assert.equal(call.type, 'function');
  assert.equal(typeof call.id, 'string');
  assert.ok(call.id.length > 0, 'a tool call has an id');
  assert.ok(names.includes(call.function.name), `function ${call.function.name} is one of ${names}`);
  assert.equal(typeof call.function.arguments, 'string', 'arguments are a JSON string');
  const args = parse_json(call.function.arguments, `${call.function.name}'s arguments`);
  const tool = TOOLS.find((t) => t.function.name === call.function.name);
  assert_valid(tool.function.parameters, args, `${call.function.name}'s arguments`);
  return args;
}

function check_tool_answer(r, names) {
  const c = r.choices[0];
  assert.equal(c.finish_reason, 'tool_calls');
  assert.equal(c.message.role, 'assistant');
  assert.ok(Array.isArray(c.message.tool_calls) && c.message.tool_calls.length >= 1, 'message.tool_calls');
  for (const call of c.message.tool_calls) check_tool_call(call, names);
  assert.equal(new Set(c.message.tool_calls.map((x) => x.id)).size, c.message.tool_calls.length, 'distinct ids');
  check_usage(r.usage);
  return c.message.tool_calls;
}

test('tools, tool_choice "required": a call whose arguments validate', async () => {
  const r = await client.chat.completions.create({ ...toolBody, tool_choice: 'required' });
  check_tool_answer(r);
});

test('tools, tool_choice naming a function: a call to that function', async () => {
  for (const name of ['get_time', 'get_weather']) {
    const r = await client.chat.completions.create({ ...toolBody, tool_choice: { type: 'function', function: { name } } });
    const calls = check_tool_answer(r, [name]);
    assert.equal(calls[0].function.name, name);
  }
});

test('tools, tool_choice "auto": either an answer or calls that validate', async () => {
  const r = await client.chat.completions.create({ ...toolBody, tool_choice: 'auto' });
  const c = r.choices[0];
  assert.ok(FINISH_REASONS.includes(c.finish_reason), `finish_reason ${c.finish_reason}`);
  if (c.message.tool_calls?.length) {
    check_tool_answer(r);
  } else {
    assert.equal(typeof c.message.content, 'string');
    assert.notEqual(c.finish_reason, 'tool_calls');
  }
});

test('tools, tool_choice "none": an answer, no calls', async () => {
  const r = await client.chat.completions.create({ ...toolBody, max_tokens: 24, tool_choice: 'none' });
  const c = r.choices[0];
  assert.ok(!c.message.tool_calls?.length, 'no tool_calls');
  assert.equal(typeof c.message.content, 'string');
  assert.ok(['stop', 'length'].includes(c.finish_reason));
});

test('tools streamed: deltas by index accumulate into calls that validate', async () => {
  const stream = await client.chat.completions.create({ ...toolBody, tool_choice: 'required', stream: true });
  const calls = [];
  let finish = null;
  let content = '';
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    for (const c of chunk.choices ?? []) {
      if (c.finish_reason) finish = c.finish_reason;
      if (typeof c.delta?.content === 'string') content += c.delta.content;
      for (const d of c.delta?.tool_calls ?? []) {
        assert.ok(Number.isInteger(d.index) && d.index >= 0, `delta.tool_calls[].index ${d.index}`);
        const slot = (calls[d.index] ??= { id: '', type: '', function: { name: '', arguments: '' } });
        if (d.id) slot.id = d.id;
        if (d.type) slot.type = d.type;
        if (d.function?.name) slot.function.name += d.function.name;
        if (d.function?.arguments) slot.function.arguments += d.function.arguments;
      }
    }
  }
  assert.equal(finish, 'tool_calls');
  assert.ok(calls.length >= 1, 'at least one streamed call');
  for (let i = 0; i < calls.length; ++i) {
    assert.ok(calls[i], `no gap at index ${i}`);
    check_tool_call(calls[i]);
  }
  assert.equal(content, '', 'no text beside a required call');
});

test("tools streamed through the SDK's own accumulator (chat.completions.stream)", async (t) => {
  const api = sdkMajor >= 5 ? client.chat.completions : client.beta?.chat?.completions;
  if (typeof api?.stream !== 'function') return t.skip(`${sdkName}@${sdkVersion} has no stream helper`);
  const runner = api.stream({ ...toolBody, tool_choice: 'required' });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.ok(final.choices[0].message.tool_calls?.length >= 1);
  for (const call of final.choices[0].message.tool_calls) check_tool_call(call);
});

test('tool results fed back: the assistant calls and the tool message give an answer', async () => {
  const first = await client.chat.completions.create({ ...toolBody, tool_choice: 'required' });
  const calls = check_tool_answer(first);
  const messages = [
    ...TOOL_PROMPT,
    { role: 'assistant', content: null, tool_calls: calls },
    ...calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: JSON.stringify({ result: 'sunny, 21 degrees' }) })),
  ];
  const r = await client.chat.completions.create({ model, messages, tools: TOOLS, max_tokens: 40, temperature: 0 });
  const c = r.choices[0];
  assert.equal(c.message.role, 'assistant');
  assert.ok(FINISH_REASONS.includes(c.finish_reason));
  if (c.message.tool_calls?.length) check_tool_answer(r);
  else assert.equal(typeof c.message.content, 'string');
  check_usage(r.usage);
  assert.ok(r.usage.prompt_tokens > first.usage.prompt_tokens, 'the calls and results are part of the prompt');

  // The same with a hand-written call and id.
  const manual = [
    ...TOOL_PROMPT,
    {
      role: 'assistant',
      content: null,
      tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris","unit":"celsius"}' } }],
    },
    { role: 'tool', tool_call_id: 'call_1', content: '{"temperature": 21}' },
  ];
  const r2 = await client.chat.completions.create({ model, messages: manual, tools: TOOLS, max_tokens: 24 });
  assert.equal(typeof r2.choices[0].message.content, 'string');
});

test("tools in a session (llmd's session extension): a call, its result fed back, the KV reused", async () => {
  const created = await raw_request('POST', '/v1/sessions', { system_prompt: TOOL_PROMPT[0].content });
  assert.equal(created.status, 201, created.text);
  const session = created.body.id;
  const first = await client.chat.completions.create({ ...toolBody, tool_choice: 'required', session });
  const calls = check_tool_answer(first);
  // Only the results are sent: the session holds the conversation and its tools.
  const r = await client.chat.completions.create({
    model,
    messages: calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: '{"temperature": 21}' })),
    max_tokens: 40,
    temperature: 0,
    session,
  });
  assert.ok(FINISH_REASONS.includes(r.choices[0].finish_reason));
  check_usage(r.usage);
  assert.ok(r.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens, 'the first turn is reused');
  const shown = await raw_request('GET', `/v1/sessions/${session}`);
  assert.deepEqual(shown.body.messages.map((m) => m.role), ['system', 'user', 'assistant', 'tool', 'assistant']);
  await raw_request('DELETE', `/v1/sessions/${session}`);
});

test('parallel_tool_calls false: accepted, at most one call', async () => {
  const r = await client.chat.completions.create({ ...toolBody, tool_choice: 'required', parallel_tool_calls: false });
  const calls = check_tool_answer(r);
  assert.equal(calls.length, 1);
});

// ---- response_format -------------------------------------------------------------------------------
const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    mood: { type: 'string', enum: ['happy', 'sad'] },
  },
  required: ['name', 'age', 'mood'],
  additionalProperties: false,
};
const JSON_PROMPT = [
  { role: 'system', content: 'You answer in JSON.' },
  { role: 'user', content: 'Describe the girl in the story.' },
];
const schemaBody = {
  model,
  messages: JSON_PROMPT,
  max_tokens: 400,
  temperature: 0,
  response_format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON, strict: true } },
};

// A schema-constrained answer validates; one cut by max_tokens ("length", said clearly) is not
// validated, but is still the start of an object, never free text.
function check_schema_answer(content, finish, t) {
  assert.ok(['stop', 'length'].includes(finish), `finish_reason ${finish}`);
  if (finish === 'length') {
    assert.ok(content.trimStart().startsWith('{'), `a cut answer still starts an object: ${JSON.stringify(content)}`);
    return t.diagnostic('finish_reason length: the answer is cut, not validated');
  }
  assert_valid(PERSON, parse_json(content, 'the answer'), 'the answer');
}

test('response_format json_schema (strict): the answer validates', async (t) => {
  const r = await client.chat.completions.create(schemaBody);
  check_schema_answer(r.choices[0].message.content, r.choices[0].finish_reason, t);
  // Sampled, too: the schema holds whatever the sampler picks.
  const s = await client.chat.completions.create({ ...schemaBody, temperature: 1, seed: 7 });
  check_schema_answer(s.choices[0].message.content, s.choices[0].finish_reason, t);
});

test('response_format json_schema streamed: the concatenated answer validates', async (t) => {
  const { text, finish } = await collect_chat_stream(await client.chat.completions.create({ ...schemaBody, stream: true }));
  check_schema_answer(text, finish, t);
});

test('response_format json_object: the answer is a JSON object', async (t) => {
  const r = await client.chat.completions.create({ ...schemaBody, response_format: { type: 'json_object' } });
  const c = r.choices[0];
  assert.ok(['stop', 'length'].includes(c.finish_reason));
  if (c.finish_reason === 'length') {
    assert.ok(c.message.content.trimStart().startsWith('{'), `a cut answer still starts an object: ${JSON.stringify(c.message.content)}`);
    return t.diagnostic('finish_reason length: not parsed');
  }
  const value = parse_json(c.message.content, 'the answer');
  assert.ok(value !== null && typeof value === 'object' && !Array.isArray(value), 'a JSON object');
});

test("the SDK's parse helper returns the parsed answer", async (t) => {
  const api = sdkMajor >= 5 ? client.chat.completions : client.beta?.chat?.completions;
  if (typeof api?.parse !== 'function') return t.skip(`${sdkName}@${sdkVersion} has no parse helper`);
  const r = await api.parse(schemaBody);  // throws LengthFinishReasonError on "length"
  const m = r.choices[0].message;
  assert.ok(m.parsed, 'message.parsed');
  assert.deepEqual(m.parsed, JSON.parse(m.content));
  assert_valid(PERSON, m.parsed, 'parsed');
});

// ---- n, logprobs, penalties, logit_bias, include_usage ------------------------------------------------
test('n: 2 gives two choices, index 0 and 1', async () => {
  const r = await client.chat.completions.create({ model, messages: PROMPT, n: 2, max_tokens: 16, temperature: 0.9, seed: 3 });
  assert.equal(r.choices.length, 2);
  assert.deepEqual(r.choices.map((c) => c.index).sort(), [0, 1]);
  for (const c of r.choices) {
    assert.equal(typeof c.message.content, 'string');
    assert.ok(FINISH_REASONS.includes(c.finish_reason));
  }
  check_usage(r.usage);

  const s = await client.chat.completions.create({ model, messages: PROMPT, n: 2, max_tokens: 16, stream: true });
  const finished = new Set();
  const indices = new Set();
  for await (const chunk of s) {
    for (const c of chunk.choices) {
      indices.add(c.index);
      if (c.finish_reason) finished.add(c.index);
    }
  }
  assert.deepEqual([...indices].sort(), [0, 1]);
  assert.deepEqual([...finished].sort(), [0, 1], 'each choice finishes');
});

function check_logprob_entry(e, what) {
  assert.equal(typeof e.token, 'string', `${what}.token`);
  assert.ok(typeof e.logprob === 'number' && e.logprob <= 1e-6, `${what}.logprob ${e.logprob} <= 0`);
  assert.ok(e.bytes === null || (Array.isArray(e.bytes) && e.bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256)), `${what}.bytes`);
  if (e.bytes && e.bytes.length) {
    // The bytes are the token's UTF-8 (a token may hold part of a character: then only byte-equal).
    const decoded = Buffer.from(e.bytes).toString('utf8');
    if (!decoded.includes('\ufffd')) assert.equal(decoded, e.token, `${what}.bytes spell the token`);
  }
}

test('logprobs with top_logprobs 3: per token, sorted, consistent', async () => {
  const r = await client.chat.completions.create({ model, messages: PROMPT, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 });
  const c = r.choices[0];
  const content = c.logprobs?.content;
  assert.ok(Array.isArray(content) && content.length > 0, 'choices[0].logprobs.content');
  assert.equal(content.length, r.usage.completion_tokens, 'one entry per completion token');
  assert.equal(content.map((e) => e.token).join(''), c.message.content, 'the tokens spell the answer');
  content.forEach((e, i) => {
    check_logprob_entry(e, `content[${i}]`);
    assert.equal(e.top_logprobs.length, 3, `content[${i}].top_logprobs has 3 entries`);
    let mass = 0;
    e.top_logprobs.forEach((alt, j) => {
      check_logprob_entry(alt, `content[${i}].top_logprobs[${j}]`);
      if (j > 0) assert.ok(alt.logprob <= e.top_logprobs[j - 1].logprob, 'sorted by logprob, descending');
      mass += Math.exp(alt.logprob);
    });
    assert.ok(mass <= 1 + 1e-4, `the top 3 probabilities sum to ${mass} <= 1`);
    const same = e.top_logprobs.find((alt) => alt.token === e.token);
    if (same) assert.ok(Math.abs(same.logprob - e.logprob) <= 1e-4, `the chosen token's logprob ${e.logprob} = its top entry ${same.logprob}`);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(e.top_logprobs[0].logprob - e.logprob) <= 1e-4, 'greedy picks the top token');
  });

  const plain = await client.chat.completions.create({ model, messages: PROMPT, max_tokens: 4, logprobs: true });
  for (const e of plain.choices[0].logprobs.content) {
    check_logprob_entry(e, 'entry');
    assert.ok(!e.top_logprobs || e.top_logprobs.length === 0, 'no alternatives unless asked');
  }
});

test('presence_penalty and frequency_penalty are accepted, and act', async () => {
  const base = { model, messages: PROMPT, max_tokens: 48, temperature: 0 };
  for (const p of [{ presence_penalty: 1.5 }, { frequency_penalty: 1.5 }, { presence_penalty: -0.5, frequency_penalty: 0.5 }]) {
    const r = await client.chat.completions.create({ ...base, ...p });
    assert.equal(typeof r.choices[0].message.content, 'string', JSON.stringify(p));
  }
  // Not dropped: the strongest penalties change a 48-token greedy answer of a small-vocabulary model,
  // whose tokens repeat within a few words.
  const plain = await client.chat.completions.create(base);
  const penalised = await client.chat.completions.create({ ...base, presence_penalty: 2, frequency_penalty: 2 });
  assert.notEqual(penalised.choices[0].message.content, plain.choices[0].message.content, 'the penalties change the answer');
});

test('logit_bias -100 on the greedy first token changes the first token', async () => {
  const base = { model, messages: PROMPT, max_tokens: 1, temperature: 0 };
  const first_token = async (extra = {}) => {
    const r = await client.chat.completions.create({ ...base, ...extra });
    return r.choices[0].message.content;
  };
  const plain = await first_token();
  // The token's id: from the logprobs entry where llmd gives it (llama-server's `id`), else by
  // bisecting the vocabulary with logit_bias itself (biasing a range away changes the greedy token
  // exactly when the range holds it).
  const lp = await client.chat.completions.create({ ...base, logprobs: true });
  let id = lp.choices[0].logprobs?.content?.[0]?.id;
  if (!Number.isInteger(id)) {
    const n_vocab = served.meta?.n_vocab;
    assert.ok(Number.isInteger(n_vocab) && n_vocab > 1, 'models.list gives meta.n_vocab');
    const bias = (lo, hi) => Object.fromEntries(Array.from({ length: hi - lo }, (_, k) => [String(lo + k), -100]));
    let lo = 0;
    let hi = n_vocab;
    let changed = false;
    while (hi - lo > 1) {
      const mid = lo + Math.floor((hi - lo) / 2);
      if ((await first_token({ logit_bias: bias(lo, mid) })) !== plain) {
        hi = mid;
        changed = true;
      } else {
        lo = mid;
      }
    }
    assert.ok(changed || (await first_token({ logit_bias: bias(0, n_vocab - 1) })) !== plain,
      'biasing half of the vocabulary by -100 never changed the greedy token: logit_bias is ignored');
    id = lo;
  }
  const biased = await first_token({ logit_bias: { [String(id)]: -100 } });
  assert.notEqual(biased, plain, `token ${id} (${JSON.stringify(plain)}) biased away`);
  assert.equal(await first_token({ logit_bias: { [String(id)]: 0 } }), plain, 'a zero bias changes nothing');
});

test('stream_options include_usage: a last chunk with no choices and the usage', async () => {
  const stream = await client.chat.completions.create({
    model,
    messages: PROMPT,
    max_tokens: 16,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  const { chunks, text } = await collect_chat_stream(stream);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, [], 'the last chunk has choices: []');
  check_usage(last.usage);
  assert.ok(last.usage.completion_tokens > 0);
  assert.ok(text.length > 0);
  const before = chunks.at(-2);
  assert.ok(FINISH_REASONS.includes(before.choices[0]?.finish_reason), 'the chunk before it finishes the choice');
  for (const c of chunks.slice(0, -1)) assert.ok(c.usage === null || c.usage === undefined, 'usage only on the last chunk');
});

// ---- no silent drops ----------------------------------------------------------------------------------
test('an unknown field is a 400 naming it (SDK and raw)', async () => {
  await assert.rejects(client.chat.completions.create({ model, messages: PROMPT, max_tokens: 4, frobnicate: 1 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, `BadRequestError, not ${e?.constructor?.name}`);
    assert.equal(e.status, 400);
    assert.equal(e.param, 'frobnicate');
    return true;
  });
  await assert.rejects(client.completions.create({ model, prompt: 'Once', max_tokens: 4, frobnicate: 1 }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'frobnicate');
    return true;
  });
  const raw = await raw_request('POST', '/v1/chat/completions', { model, messages: PROMPT, max_tokens: 4, frobnicate: 1 });
  assert.equal(raw.status, 400);
  assert.equal(raw.body.error.param, 'frobnicate');
  assert.equal(typeof raw.body.error.message, 'string');
});

test('user, metadata and store are accepted', async () => {
  const r = await client.chat.completions.create({
    model,
    messages: PROMPT,
    max_tokens: 4,
    user: 'compat-test',
    metadata: { suite: 'compat' },
    store: false,
  });
  assert.equal(r.object, 'chat.completion');
});

test('every 400 names its param', async () => {
  const bad = [
    { messages: [] },
    { temperature: 'hot' },
    { max_tokens: -1 },
    { n: 0 },
    { presence_penalty: 3 },
    { frequency_penalty: -3 },
    { top_logprobs: 30, logprobs: true },
    { logit_bias: { 'not-a-token': 5 } },
    { response_format: { type: 'xml' } },
    { response_format: { type: 'json_schema' } },
    { tool_choice: 'required' },
    { tools: [{ type: 'function', function: {} }] },
    { messages: [{ role: 'wizard', content: 'hello' }] },
    { stop: 5 },
    { stream_options: { include_usage: true } },
    { frobnicate: 1 },
  ];
  const missing = [];
  for (const extra of bad) {
    const body = { model, messages: PROMPT, max_tokens: 4, ...extra };
    try {
      await client.chat.completions.create(body);
      missing.push(`${JSON.stringify(extra)}: accepted (200)`);
    } catch (e) {
      if (!(e instanceof OpenAI.BadRequestError)) missing.push(`${JSON.stringify(extra)}: ${e?.constructor?.name} ${e?.status}`);
      else if (typeof e.param !== 'string' || e.param.length === 0) missing.push(`${JSON.stringify(extra)}: 400 with param ${e.param}`);
    }
  }
  assert.deepEqual(missing, [], 'each bad request is a 400 with a param');
});

// ---- models ------------------------------------------------------------------------------------------
test('models.retrieve returns the model with a real created', async () => {
  const m = await client.models.retrieve(model);
  assert.equal(m.id, model);
  assert.equal(m.object, 'model');
  assert.equal(typeof m.owned_by, 'string');
  assert.ok(Number.isInteger(m.created) && m.created > 1.6e9, `created ${m.created}`);
  assert.ok(served.created > 1.6e9, `models.list created ${served.created}`);
  await assert.rejects(client.models.retrieve('no-such-model'), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, `NotFoundError, not ${e?.constructor?.name}`);
    assert.equal(e.status, 404);
    return true;
  });
});
