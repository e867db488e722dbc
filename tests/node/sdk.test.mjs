// The official `openai` Node SDK against a real `tollgate serve` process
// (built-in simulated provider, gateway key from the environment).
// Binary: target/debug/tollgate, or TOLLGATE_BIN.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = process.env.TOLLGATE_BIN ?? join(repo, "target", "debug", "tollgate");
const key = `tg-node-${process.pid}-${Date.now()}`;

const config = `
auth:
  keys: ["\${TG_NODE_KEY}"]
providers:
  sim: { kind: simulated, completion_tokens: 9, tokens_per_second: 2000, embedding_dimensions: 8 }
models:
  - { name: sim-chat, provider: sim, aliases: [default] }
`;

let child;
let client;
let baseURL;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function waitReady(url, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`${url}/ready`);
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("tollgate did not become ready");
}

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), "tollgate-node-"));
  const file = join(dir, "tollgate.yaml");
  writeFileSync(file, config);
  const port = await freePort();
  const root = `http://127.0.0.1:${port}`;
  child = spawn(bin, ["serve", "--config", file, "--listen", `127.0.0.1:${port}`], {
    env: { ...process.env, TG_NODE_KEY: key, RUST_LOG: "warn" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  await waitReady(root, 20000);
  baseURL = `${root}/v1`;
  client = new OpenAI({ baseURL, apiKey: key, maxRetries: 0, timeout: 20000 });
});

after(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
  }
});

const ask = [{ role: "user", content: "Which backend is cheapest?" }];

test("chat completion with usage", async () => {
  const reply = await client.chat.completions.create({ model: "sim-chat", messages: ask });
  assert.equal(reply.object, "chat.completion");
  const text = reply.choices[0].message.content;
  assert.equal(text.trim().split(/\s+/).length, 9);
  assert.equal(reply.choices[0].finish_reason, "stop");
  assert.equal(reply.usage.completion_tokens, 9);
  assert.equal(reply.usage.total_tokens, reply.usage.prompt_tokens + reply.usage.completion_tokens);
});

test("streaming reassembles the same text and ends with usage", async () => {
  const whole = await client.chat.completions.create({ model: "default", messages: ask });
  const stream = await client.chat.completions.create({
    model: "default",
    messages: ask,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(chunks >= 9 + 2, `only ${chunks} chunks`);
  assert.equal(text, whole.choices[0].message.content);
  assert.deepEqual(usage, whole.usage);
});

test("max_tokens cuts the answer with finish_reason length", async () => {
  const reply = await client.chat.completions.create({ model: "sim-chat", messages: ask, max_tokens: 3 });
  assert.equal(reply.choices[0].finish_reason, "length");
  assert.equal(reply.usage.completion_tokens, 3);
});

test("embeddings as floats and as base64 agree", async () => {
  const floats = await client.embeddings.create({ model: "sim-chat", input: ["alpha", "beta"], encoding_format: "float" });
  assert.equal(floats.data.length, 2);
  assert.equal(floats.data[0].embedding.length, 8);
  // The SDK decodes base64 into numbers itself when it asked for base64.
  const decoded = await client.embeddings.create({ model: "sim-chat", input: ["alpha", "beta"] });
  for (let i = 0; i < 2; i += 1) {
    decoded.data[i].embedding.forEach((v, j) => assert.ok(Math.abs(v - floats.data[i].embedding[j]) < 1e-6));
  }
});

test("models.list shows models and aliases", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), ["default", "sim-chat"]);
});

test("errors surface as the SDK's typed errors", async () => {
  await assert.rejects(client.chat.completions.create({ model: "no-such-model", messages: ask }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError);
    assert.equal(e.code, "model_not_found");
    return true;
  });
  const wrong = new OpenAI({ baseURL, apiKey: "wrong-key", maxRetries: 0 });
  await assert.rejects(wrong.chat.completions.create({ model: "sim-chat", messages: ask }), OpenAI.AuthenticationError);
  await assert.rejects(client.chat.completions.create({ model: "sim-chat", messages: [] }), OpenAI.BadRequestError);
});

test("raw response carries the request id and the backend", async () => {
  const { response, data } = await client.chat.completions
    .create({ model: "sim-chat", messages: ask }, { headers: { "x-request-id": "node-req-1" } })
    .withResponse();
  assert.equal(response.headers.get("x-request-id"), "node-req-1");
  assert.equal(response.headers.get("x-tollgate-backend"), "sim/sim-chat");
  assert.equal(data.model, "sim-chat");
});
