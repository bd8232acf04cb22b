// The TypeScript MCP SDK's client against "aster mcp", run by
// TestMCPTypeScriptClient (cmd/aster/mcp_test.go):
//
//   node client.mjs stdio-main   ASTER_BIN ARGS...   (--max-items 3 --deny MissionControl.submitLog)
//   node client.mjs stdio-policy ASTER_BIN ARGS...   (--read-only --confirm MissionControl.getStatus)
//   node client.mjs stdio-error  ASTER_BIN ARGS...   (a server limiting each peer to 1 call a second)
//   node client.mjs http         URL                 (aster mcp --http)
//
// It exits 0 after printing "ok SCENARIO", or 1 with the failed assertion.
import assert from 'node:assert/strict';
import Ajv from 'ajv';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [scenario, ...rest] = process.argv.slice(2);

// The requests of the "Build a Control Plane" guide, as tool arguments.
const seedExamples = {
  'MissionControl.getStatus': [{ agent_id: 'edge-node-7' }],
  'MissionControl.submitLog': [{ timestamp: 1712567890.1, level: 'warn', message: 'disk 92% full', agent_id: 'edge-node-7' }],
  'MissionControl.tailLogs': [{ agent_id: 'edge-node-7', level: 'warn' }],
  'MissionControl.ingestMetrics': [{ requests: [{ name: 'cpu.usage', value: 0.42, timestamp: 1712567890.1 }] }],
  'AgentSession.register': [{ agent_id: 'edge-7', capabilities: ['gpu'] }],
  'AgentSession.runCommand': [{ requests: [{ command: 'df -h' }, { command: 'uptime' }] }],
};
const badExamples = {
  'MissionControl.getStatus': [{ agent_id: 7 }, { agent: 'x' }],
  'MissionControl.ingestMetrics': [{ requests: [{ name: 'x', value: 'high' }] }, {}],
  'AgentSession.register': [{ capabilities: 'gpu' }],
  'AgentSession.runCommand': [{ requests: { command: 'ls' } }],
};

function text(res) {
  return (res.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
}

async function connectStdio(args) {
  const [command, ...cmdArgs] = args;
  const transport = new StdioClientTransport({ command, args: cmdArgs, stderr: 'inherit' });
  const client = new Client({ name: 'ts-sdk-test', version: '1.0.0' });
  await client.connect(transport);
  return client;
}

async function listTools(client) {
  const { tools } = await client.listTools();
  return Object.fromEntries(tools.map((t) => [t.name, t]));
}

async function main() {
  if (scenario === 'stdio-main') {
    const client = await connectStdio(rest);
    assert.equal(client.getServerVersion().name, 'aster-mcp');
    assert.ok(client.getServerCapabilities().tools, 'tools capability');

    // tools/list: the denied method is not listed; the schemas accept the
    // guide's requests and refuse bad ones (ajv, as the SDK itself uses).
    const tools = await listTools(client);
    assert.deepEqual(Object.keys(tools).sort(), [
      'AgentSession.register', 'AgentSession.runCommand', 'MissionControl.getStatus',
      'MissionControl.ingestMetrics', 'MissionControl.tailLogs', '_aster.endSession',
    ]);
    const ajv = new Ajv({ strict: false, allErrors: true });
    for (const [name, examples] of Object.entries(seedExamples)) {
      if (!tools[name]) continue; // submitLog is denied
      const validate = ajv.compile(tools[name].inputSchema);
      for (const ex of examples) assert.ok(validate(ex), `${name}: ${JSON.stringify(ex)}: ${ajv.errorsText(validate.errors)}`);
      for (const ex of badExamples[name] ?? []) assert.ok(!validate(ex), `${name}: bad ${JSON.stringify(ex)} validates`);
      ajv.compile(tools[name].outputSchema);
    }
    assert.equal(tools['MissionControl.getStatus'].annotations.readOnlyHint, true);
    assert.equal(tools['MissionControl.getStatus'].annotations.idempotentHint, true);
    assert.equal(tools['MissionControl.ingestMetrics'].annotations.readOnlyHint, false);
    assert.deepEqual(tools['MissionControl.tailLogs'].inputSchema.properties.level, { type: 'string' });

    // unary (the client checks structuredContent against the output schema)
    let res = await client.callTool({ name: 'MissionControl.getStatus', arguments: { agent_id: 'edge-node-7' } });
    assert.ok(!res.isError, text(res));
    assert.deepEqual(res.structuredContent, { agent_id: 'edge-node-7', status: 'running', uptime_secs: 3600 });

    // server stream: progress per item, cut at --max-items 3. The SDK runs
    // notification handlers a microtask later but settles a response at
    // once, so a notification read in the same chunk as the response
    // reaches onerror ("unknown token") instead of onprogress: count both.
    const progress = [];
    const late = [];
    const lateMark = 'Received a progress notification for an unknown token: ';
    client.onerror = (err) => {
      if (String(err.message).startsWith(lateMark)) late.push(JSON.parse(err.message.slice(lateMark.length)).params.progress);
      else console.error(`client error: ${err}`);
    };
    res = await client.callTool({ name: 'MissionControl.tailLogs', arguments: { level: 'warn' } }, undefined, {
      onprogress: (p) => progress.push(p.progress),
      timeout: 30000,
    });
    assert.ok(!res.isError, text(res));
    assert.equal(res.structuredContent.items.length, 3);
    assert.equal(res.structuredContent.truncated, true);
    assert.equal(res.structuredContent.items[0].level, 'warn');
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(progress.length >= 1, 'no progress notification while the stream ran');
    assert.deepEqual([...progress, ...late], [1, 2, 3]);

    // client stream: an array in
    res = await client.callTool({ name: 'MissionControl.ingestMetrics', arguments: { requests: [
      { name: 'cpu', value: 0.1 }, { name: 'cpu', value: 0.2 }, { name: 'mem', value: 0.3, tags: { host: 'a' } },
    ] } });
    assert.ok(!res.isError, text(res));
    assert.deepEqual(res.structuredContent, { accepted: 3, dropped: 0 });

    // a session-scoped service: register, then runCommand, in this MCP session
    res = await client.callTool({ name: 'AgentSession.register', arguments: { agent_id: 'edge-7', capabilities: ['gpu'] } });
    assert.deepEqual(res.structuredContent, { command: 'python train.py', task_id: 'train-42' });
    res = await client.callTool({ name: 'AgentSession.runCommand', arguments: { requests: [{ command: 'echo one' }, { command: 'echo two' }] } });
    assert.ok(!res.isError, text(res));
    assert.deepEqual(res.structuredContent.items.map((r) => r.stdout), ['one\n', 'two\n']);
    assert.equal(res.structuredContent.truncated, false);
    res = await client.callTool({ name: '_aster.endSession', arguments: {} });
    assert.deepEqual(res.structuredContent, { ended: true });

    // bad arguments: a tool error naming the field
    res = await client.callTool({ name: 'MissionControl.getStatus', arguments: { agent_id: 7 } });
    assert.equal(res.isError, true);
    assert.match(text(res), /^INVALID_ARGUMENT: .*field "agent_id": expected string/);

    // the denied method, called by name anyway
    await assert.rejects(client.callTool({ name: 'MissionControl.submitLog', arguments: { message: 'x' } }), /unknown tool/);

    // the contract resource
    const { contents } = await client.readResource({ uri: 'aster://contract' });
    const manifest = JSON.parse(contents[0].text);
    assert.equal(manifest.contract.services.length, 2);
    await client.close();
  } else if (scenario === 'stdio-policy') {
    const client = await connectStdio(rest);
    const tools = await listTools(client);
    assert.deepEqual(Object.keys(tools), ['MissionControl.getStatus']);
    const res = await client.callTool({ name: 'MissionControl.getStatus', arguments: { agent_id: 'x' } });
    assert.equal(res.isError, true);
    assert.match(text(res), /^PERMISSION_DENIED: MissionControl.getStatus needs a person's confirmation .* does not support elicitation/);
    await assert.rejects(client.callTool({ name: 'AgentSession.runCommand', arguments: { requests: [] } }), /unknown tool/);
    await client.close();
  } else if (scenario === 'stdio-error') {
    // The server allows 1 call a second, with a burst of 2: a burst of
    // calls gets RESOURCE_EXHAUSTED from the server, as a tool error.
    const client = await connectStdio(rest);
    let refused;
    for (let i = 0; i < 8 && !refused; i++) {
      const res = await client.callTool({ name: 'MissionControl.getStatus', arguments: { agent_id: `n${i}` } });
      if (res.isError) refused = res;
    }
    assert.ok(refused, 'no call was refused');
    assert.match(text(refused), /^RESOURCE_EXHAUSTED: /);
    assert.equal(refused._meta['aster/status'].code, 'RESOURCE_EXHAUSTED');
    assert.equal(refused._meta['aster/status'].code_num, 8);
    await client.close();
  } else if (scenario === 'http') {
    const transport = new StreamableHTTPClientTransport(new URL(rest[0]));
    const client = new Client({ name: 'ts-sdk-http-test', version: '1.0.0' });
    await client.connect(transport);
    assert.ok(transport.sessionId, 'an MCP session id');
    const tools = await listTools(client);
    assert.ok(tools['MissionControl.getStatus']);
    let res = await client.callTool({ name: 'MissionControl.getStatus', arguments: { agent_id: 'over-http' } });
    assert.equal(res.structuredContent.agent_id, 'over-http');
    res = await client.callTool({ name: 'AgentSession.register', arguments: { agent_id: 'edge-http' } });
    assert.equal(res.structuredContent.task_id, 'idle');
    res = await client.callTool({ name: 'AgentSession.runCommand', arguments: { requests: [{ command: 'echo http' }] } });
    assert.equal(res.structuredContent.items[0].stdout, 'http\n');
    res = await client.callTool({ name: '_aster.endSession', arguments: {} });
    assert.deepEqual(res.structuredContent, { ended: true });
    await transport.terminateSession();
    await client.close();
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  console.log(`ok ${scenario}`);
}

main().catch((err) => {
  console.error(`FAIL ${scenario}: ${err.stack ?? err}`);
  process.exit(1);
});
