// Drives the official TypeScript MCP SDK 1.x `Client` with a
// `StdioClientTransport` over a stdio command, for the end-to-end era tests
// (tests/e2e/eras.rs). The SDK sends `initialize` (it never probes).
//
//   node ts_client.mjs [--bare] STEPS_JSON COMMAND [ARG...]
//
// COMMAND is the stdio transport: `ssh -T ...`, our client binary, or an MCP
// server itself. The steps are those of py_client.py:
//   {"op": "list"} | {"op": "call", "name", "args"} | {"op": "prompt", "name", "args"}
//   | {"op": "read", "uri"} | {"op": "cancel", "name", "args", "delayMs"?}
//   | {"op": "subscribe", "uri", "trigger": {"name", "args"}}
//   | {"op": "list_changed", "trigger": {"name", "args"}}
// Every handler (elicitation, sampling, roots) is installed unless --bare;
// each records what it was asked. Prints one JSON object: {protocolVersion,
// serverInfo, capabilities, connectMs, steps, handled, notifications}; a
// step that fails holds "error".

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";

const WAIT_MS = 15000; // the bound on any one wait for the server

let args = process.argv.slice(2);
const bare = args[0] === "--bare";
if (bare) args = args.slice(1);
if (args.length < 2) {
  console.error("usage: ts_client.mjs [--bare] STEPS_JSON COMMAND [ARG...]");
  process.exit(2);
}
const steps = JSON.parse(args[0]);

const handled = [];
const notifications = [];
const updateWaiters = new Map(); // uri -> resolve
const toolsChangedWaiters = []; // resolves, for notifications/tools/list_changed

const client = new Client(
  { name: "ts-peer", version: "1" },
  { capabilities: bare ? {} : { elicitation: {}, sampling: {}, roots: { listChanged: true } } },
);
if (!bare) {
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    handled.push({ method: req.method, params: req.params });
    return { action: "accept", content: { name: "Ada" } };
  });
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    handled.push({ method: req.method, params: req.params });
    return {
      role: "assistant",
      content: { type: "text", text: "hello from the ts peer" },
      model: "ts-peer",
    };
  });
  client.setRequestHandler(ListRootsRequestSchema, async (req) => {
    handled.push({ method: req.method });
    return { roots: [{ uri: "file:///peer/ts", name: "ts peer" }] };
  });
}
client.fallbackNotificationHandler = async (n) => {
  notifications.push(n.method);
  if (n.method === "notifications/resources/updated") {
    updateWaiters.get(n.params?.uri)?.();
  }
  if (n.method === "notifications/tools/list_changed") {
    toolsChangedWaiters.splice(0).forEach((resolve) => resolve());
  }
};

function errorOf(e) {
  return e && typeof e.code === "number"
    ? { code: e.code, message: e.message, data: e.data }
    : { type: e?.name, message: String(e?.message ?? e) };
}

function bounded(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Every page of a list, as the `key` of each item; an error is a result too.
async function names(fetch, field, key) {
  const out = [];
  let cursor;
  try {
    for (let i = 0; i < 100; i++) {
      const page = await fetch(cursor ? { cursor } : undefined);
      out.push(...page[field].map((x) => x[key]));
      cursor = page.nextCursor;
      if (!cursor) return out;
    }
    throw new Error("more than 100 pages");
  } catch (e) {
    return { error: errorOf(e) };
  }
}

async function runStep(step) {
  switch (step.op) {
    case "list":
      return {
        tools: await names((p) => client.listTools(p), "tools", "name"),
        prompts: await names((p) => client.listPrompts(p), "prompts", "name"),
        resources: await names((p) => client.listResources(p), "resources", "uri"),
        templates: await names((p) => client.listResourceTemplates(p), "resourceTemplates", "uriTemplate"),
      };
    case "call": {
      const progress = [];
      const result = await client.callTool({ name: step.name, arguments: step.args ?? {} }, undefined, {
        onprogress: (p) => progress.push(p),
        timeout: WAIT_MS * 4,
      });
      return { result, progress };
    }
    case "prompt":
      return { result: await client.getPrompt({ name: step.name, arguments: step.args ?? {} }) };
    case "read":
      return { result: await client.readResource({ uri: step.uri }) };
    case "cancel": {
      // Cancelled at the first progress, which proves the call reached the
      // server, or after delayMs.
      const abort = new AbortController();
      const out = { cancelled: false, progress: 0 };
      if (step.delayMs !== undefined) setTimeout(() => abort.abort("cancelled by the peer"), step.delayMs);
      try {
        out.result = await bounded(
          client.callTool({ name: step.name, arguments: step.args ?? {} }, undefined, {
            signal: abort.signal,
            onprogress: () => {
              out.progress += 1;
              abort.abort("cancelled by the peer");
            },
          }),
          "the cancelled call",
        );
      } catch (e) {
        out.cancelled = abort.signal.aborted;
        if (!out.cancelled) throw e;
      }
      return out;
    }
    case "subscribe": {
      const updated = new Promise((resolve) => updateWaiters.set(step.uri, resolve));
      await client.subscribeResource({ uri: step.uri });
      const t = step.trigger;
      await client.callTool({ name: t.name, arguments: t.args ?? {} });
      await bounded(updated, `notifications/resources/updated for ${step.uri}`);
      await client.unsubscribeResource({ uri: step.uri });
      return { updated: step.uri };
    }
    case "list_changed": {
      const changed = new Promise((resolve) => toolsChangedWaiters.push(resolve));
      const t = step.trigger;
      await client.callTool({ name: t.name, arguments: t.args ?? {} });
      await bounded(changed, "notifications/tools/list_changed");
      return { event: "ToolsListChanged" };
    }
    default:
      throw new Error(`unknown op ${step.op}`);
  }
}

const transport = new StdioClientTransport({ command: args[1], args: args.slice(2), stderr: "inherit" });
let protocolVersion = null;
// The SDK tells an HTTP transport the negotiated version; stdio has no such
// hook, so this one only records it.
transport.setProtocolVersion = (v) => {
  protocolVersion = v;
};
const out = {};
const start = Date.now();
await client.connect(transport);
out.connectMs = Date.now() - start;
out.protocolVersion = protocolVersion;
out.serverInfo = client.getServerVersion();
out.capabilities = client.getServerCapabilities();
out.steps = [];
for (const step of steps) {
  try {
    out.steps.push(await runStep(step));
  } catch (e) {
    out.steps.push({ error: errorOf(e) });
  }
}
out.handled = handled;
out.notifications = notifications;
await client.close();
console.log(JSON.stringify(out));
