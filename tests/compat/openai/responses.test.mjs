// The Responses API (POST /v1/responses, GET /v1/responses/{id}) through the official openai SDK's
// client.responses: text and message input with instructions, the streamed events in OpenAI's order
// with their sequence numbers, previous_response_id continuing a stored conversation with its KV
// (cached tokens), retrieve, text.format json_schema, tools with tool_choice required, and strict
// fields. Skipped where the SDK has no client.responses. Structure and validity, never wording.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Ajv, OpenAI, client, raw_request, sdkName, sdkVersion, served_model } from './client.mjs';

const model = (await served_model()).id;
const skip = client.responses?.create ? false : `${sdkName}@${sdkVersion} has no client.responses`;
test.before(() => console.log(`# ${sdkName}@${sdkVersion} against model ${model} (responses)`));

const greedy = { model, temperature: 0, max_output_tokens: 12 };

function check_response(r) {
  assert.ok(r.id.startsWith('resp_'), `id ${r.id}`);
  assert.equal(r.object, 'response');
  assert.ok(Number.isInteger(r.created_at));
  assert.ok(['completed', 'incomplete'].includes(r.status), `status ${r.status}`);
  assert.ok(Array.isArray(r.output) && r.output.length > 0, 'output items');
  let text = '';
  for (const item of r.output) {
    if (item.type === 'message') {
      assert.equal(item.role, 'assistant');
      for (const part of item.content) {
        assert.equal(part.type, 'output_text');
        text += part.text;
      }
    } else {
      assert.equal(item.type, 'function_call');
      assert.equal(typeof item.call_id, 'string');
      assert.equal(typeof item.arguments, 'string');
    }
  }
  assert.equal(r.output_text, text);
  const u = r.usage;
  assert.ok(u.input_tokens > 0 && u.output_tokens > 0, JSON.stringify(u));
  assert.equal(u.total_tokens, u.input_tokens + u.output_tokens);
  assert.ok(u.input_tokens_details.cached_tokens <= u.input_tokens);
}

test('responses.create: text input, the whole response, retrieve', { skip }, async () => {
  const r = await client.responses.create({ ...greedy, input: 'Once upon a time' });
  check_response(r);
  assert.equal(r.store, true);
  const again = await client.responses.retrieve(r.id);
  assert.equal(again.id, r.id);
  assert.equal(again.output_text, r.output_text);
});

test('responses.create: message items with instructions', { skip }, async () => {
  const r = await client.responses.create({
    ...greedy,
    instructions: 'You tell stories.',
    input: [{ role: 'user', content: [{ type: 'input_text', text: 'Tell me a story.' }] }],
  });
  check_response(r);
  assert.equal(r.instructions, 'You tell stories.');
});

test('responses.create stream: the events in order, sequence numbers, the text', { skip }, async () => {
  const stream = await client.responses.create({ ...greedy, input: 'Once upon a time', stream: true });
  const types = [];
  let seq = 0;
  let text = '';
  let done;
  for await (const ev of stream) {
    assert.equal(ev.sequence_number, seq++, `sequence_number of ${ev.type}`);
    if (types.at(-1) !== ev.type) types.push(ev.type);
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed' || ev.type === 'response.incomplete') done = ev.response;
  }
  assert.deepEqual(types.slice(0, 5), [
    'response.created',
    'response.in_progress',
    'response.output_item.added',
    'response.content_part.added',
    'response.output_text.delta',
  ]);
  assert.deepEqual(types.slice(5, 8), ['response.output_text.done', 'response.content_part.done', 'response.output_item.done']);
  assert.ok(done, 'a response.completed or response.incomplete event');
  assert.equal(done.output_text ?? done.output[0].content[0].text, text);
});

test('previous_response_id continues the conversation with its KV', { skip }, async () => {
  const first = await client.responses.create({ ...greedy, instructions: 'You tell stories.', input: 'Tell me a story.' });
  const next = await client.responses.create({ ...greedy, input: 'What happened next?', previous_response_id: first.id });
  check_response(next);
  assert.equal(next.previous_response_id, first.id);
  assert.ok(next.usage.input_tokens_details.cached_tokens > 0, JSON.stringify(next.usage));
});

test('text.format json_schema: the answer parses and validates', { skip }, async () => {
  const schema = {
    type: 'object',
    properties: { name: { type: 'string', maxLength: 8 }, age: { type: 'integer', minimum: 0, maximum: 99 } },
    required: ['name', 'age'],
    additionalProperties: false,
  };
  const r = await client.responses.create({
    ...greedy,
    max_output_tokens: 200,
    input: 'A person:',
    text: { format: { type: 'json_schema', name: 'person', schema, strict: true } },
  });
  check_response(r);
  const validate = new Ajv({ strict: false }).compile(schema);
  const value = JSON.parse(r.output_text);
  assert.ok(validate(value), `${r.output_text}: ${JSON.stringify(validate.errors)}`);
});

test('tools with tool_choice required: a function_call whose arguments validate', { skip }, async () => {
  const parameters = {
    type: 'object',
    properties: { city: { type: 'string', maxLength: 12 } },
    required: ['city'],
    additionalProperties: false,
  };
  const r = await client.responses.create({
    ...greedy,
    max_output_tokens: 300,
    input: 'What is the weather in Paris?',
    tools: [{ type: 'function', name: 'get_weather', description: 'The weather in a city.', parameters, strict: true }],
    tool_choice: 'required',
  });
  check_response(r);
  const call = r.output.find((i) => i.type === 'function_call');
  assert.ok(call, JSON.stringify(r.output));
  assert.equal(call.name, 'get_weather');
  const validate = new Ajv({ strict: false }).compile(parameters);
  assert.ok(validate(JSON.parse(call.arguments)), call.arguments);
});

test('an unknown field is a 400 naming it', { skip }, async () => {
  await assert.rejects(
    client.responses.create({ ...greedy, input: 'Hi', reasoning: { effort: 'low' } }),
    (e) => e instanceof OpenAI.APIError && e.status === 400 && e.param === 'reasoning',
  );
  const raw = await raw_request('POST', '/v1/responses', { input: 'Hi', truncation: 'auto' });
  assert.equal(raw.status, 400);
  assert.equal(raw.body.error.param, 'truncation');
});
