// What llmd serves today, through the official openai SDK (node --test; see client.mjs and run.mjs):
// chat and text completions whole and streamed, max_completion_tokens, stop, seed, abort, models and
// the error mapping. The model is a tiny story model: the checks are about structure and validity,
// and about determinism where the request makes it deterministic (greedy, a fixed seed).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  FINISH_REASONS,
  OpenAI,
  PROMPT,
  check_usage,
  client,
  collect_chat_stream,
  raw_request,
  sdkName,
  sdkVersion,
  served_model,
} from './client.mjs';

const model = (await served_model()).id;
test.before(() => console.log(`# ${sdkName}@${sdkVersion} against model ${model}`));

const greedy = { model, messages: PROMPT, temperature: 0, max_tokens: 24 };

test('chat.completions.create: a whole answer in the OpenAI shape', async () => {
  const r = await client.chat.completions.create(greedy);
  assert.equal(typeof r.id, 'string');
  assert.ok(r.id.length > 0);
  assert.equal(r.object, 'chat.completion');
  assert.ok(Number.isInteger(r.created));
  assert.equal(typeof r.model, 'string');
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.index, 0);
  assert.equal(c.message.role, 'assistant');
  assert.equal(typeof c.message.content, 'string');
  assert.ok(c.message.content.length > 0);
  assert.ok(FINISH_REASONS.includes(c.finish_reason), `finish_reason ${c.finish_reason}`);
  check_usage(r.usage);
  assert.ok(r.usage.completion_tokens <= 24);
});

test('chat.completions.create stream: deltas concatenate to the whole (greedy) answer', async () => {
  const whole = await client.chat.completions.create(greedy);
  const stream = await client.chat.completions.create({ ...greedy, stream: true });
  const { chunks, text, finish } = await collect_chat_stream(stream);
  assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
  for (const chunk of chunks) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(typeof chunk.id, 'string');
  }
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'one id for all chunks');
  assert.equal(text, whole.choices[0].message.content);
  const last = chunks.filter((c) => c.choices?.length).at(-1);
  assert.ok(FINISH_REASONS.includes(last.choices[0].finish_reason), 'the last chunk with a choice has finish_reason');
  assert.equal(finish, whole.choices[0].finish_reason);
});

test('completions.create: whole and streamed', async () => {
  const body = { model, prompt: 'Once upon a time', temperature: 0, max_tokens: 16 };
  const r = await client.completions.create(body);
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.id, 'string');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].index, 0);
  assert.equal(typeof r.choices[0].text, 'string');
  assert.ok(r.choices[0].text.length > 0);
  assert.ok(FINISH_REASONS.includes(r.choices[0].finish_reason));
  check_usage(r.usage);

  const stream = await client.completions.create({ ...body, stream: true });
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'text_completion');
    for (const c of chunk.choices) {
      text += c.text ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, r.choices[0].text);
  assert.equal(finish, r.choices[0].finish_reason);
});

test('max_completion_tokens bounds the answer', async () => {
  for (const limit of [1, 5]) {
    const r = await client.chat.completions.create({ model, messages: PROMPT, max_completion_tokens: limit });
    assert.ok(r.usage.completion_tokens <= limit, `${r.usage.completion_tokens} <= ${limit}`);
    assert.ok(['length', 'stop'].includes(r.choices[0].finish_reason));
  }
  const r = await client.chat.completions.create({ model, messages: PROMPT, temperature: 0, max_completion_tokens: 3 });
  if (r.usage.completion_tokens === 3) assert.equal(r.choices[0].finish_reason, 'length');
});

test('stop ends the answer before the stop string', async () => {
  const long = await client.chat.completions.create({ ...greedy, max_tokens: 40 });
  const text = long.choices[0].message.content;
  // A stop string from the middle of the greedy answer: the same request with it must end just before
  // its first occurrence.
  let at = -1;
  let stop = '';
  for (let i = Math.floor(text.length / 2); i + 3 <= text.length && at <= 0; ++i) {
    stop = text.slice(i, i + 3);
    at = text.indexOf(stop);
  }
  assert.ok(at > 0, `no usable stop string in ${JSON.stringify(text)}`);
  const r = await client.chat.completions.create({ ...greedy, max_tokens: 40, stop: [stop] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].message.content, text.slice(0, at));
  assert.ok(!r.choices[0].message.content.includes(stop));

  const s = await collect_chat_stream(await client.chat.completions.create({ ...greedy, max_tokens: 40, stop, stream: true }));
  assert.equal(s.text, text.slice(0, at));
  assert.equal(s.finish, 'stop');
});

test('seed: the same seed and temperature give the same answer', async () => {
  const body = { model, messages: PROMPT, temperature: 0.9, seed: 1234, max_tokens: 24 };
  const a = await client.chat.completions.create(body);
  const b = await client.chat.completions.create(body);
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  const sa = await collect_chat_stream(await client.chat.completions.create({ ...body, stream: true }));
  assert.equal(sa.text, a.choices[0].message.content);
});

test('abort mid-stream: the SDK stops, the daemon stays healthy', async (t) => {
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    { model, messages: PROMPT, max_tokens: 500, stream: true },
    { signal: controller.signal },
  );
  let seen = 0;
  let after = 0;
  let finish = null;
  let error = null;
  try {
    for await (const chunk of stream) {
      if (controller.signal.aborted) ++after;
      if (chunk.choices?.length) ++seen;
      if (chunk.choices?.[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (seen === 3) controller.abort();
    }
  } catch (e) {
    error = e;
  }
  assert.ok(seen >= 3, `${seen} chunks before the abort`);
  // The SDKs end an aborted stream's iteration quietly, or throw their abort error.
  if (error) {
    assert.ok(error instanceof OpenAI.APIUserAbortError || error.name === 'AbortError', `${error.name}: ${error.message}`);
  }
  // Chunks the client had already read may still come out after the abort (v4 yields what node-fetch
  // buffered): how many says nothing about llmd.
  t.diagnostic(`${after} chunks after the abort, finish_reason ${finish}`);
  const next = await client.chat.completions.create({ ...greedy, max_tokens: 8 });
  assert.equal(next.object, 'chat.completion');
  assert.equal(typeof next.choices[0].message.content, 'string');
  const health = await raw_request('GET', '/v1/health');
  assert.equal(health.status, 200);
});

test('abort before the first byte: the daemon stays healthy', async () => {
  const controller = new AbortController();
  const pending = client.chat.completions.create({ model, messages: PROMPT, max_tokens: 500 }, { signal: controller.signal });
  controller.abort();
  await assert.rejects(pending, (e) => e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError');
  const next = await client.chat.completions.create({ ...greedy, max_tokens: 8 });
  assert.equal(next.object, 'chat.completion');
});

test('models.list contains the served model', async () => {
  const page = await client.models.list();
  assert.ok(page.data.length >= 1);
  const m = page.data.find((x) => x.id === model);
  assert.ok(m, `${model} is listed`);
  assert.equal(m.object, 'model');
  assert.equal(typeof m.owned_by, 'string');
  assert.ok(Number.isInteger(m.created));
});

test('a bad request raises BadRequestError (400) with the error body', async () => {
  await assert.rejects(client.chat.completions.create({ model, messages: [] }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, `BadRequestError, not ${e?.constructor?.name}: ${e?.message}`);
    assert.ok(e instanceof OpenAI.APIError);
    assert.equal(e.status, 400);
    assert.equal(typeof e.error?.message, 'string');
    assert.ok(e.error.message.length > 0);
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model, messages: PROMPT, temperature: 'hot' }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal(e.status, 400);
    return true;
  });
});

test('concurrent requests through one client all succeed', async () => {
  const answers = await Promise.all(
    [0, 1, 2, 3].map(() => client.chat.completions.create({ ...greedy, max_tokens: 12 })),
  );
  for (const r of answers) {
    assert.equal(r.object, 'chat.completion');
    assert.equal(typeof r.choices[0].message.content, 'string');
  }
  assert.equal(new Set(answers.map((r) => r.id)).size, answers.length, 'each answer has its own id');
});
