/**
 * A VM's screen travels QEMU's VNC socket → the agent's tunnel → the
 * controller's tunnel → the browser. QEMU speaks first (its RFB version),
 * so no hop may drop bytes that arrive with or right after the WebSocket
 * handshake: noVNC would wait for them forever. Real sockets; a stand-in
 * for QEMU's socket that writes its greeting the moment a client connects.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { createApp, serve, serveTunnels, type Listening } from '../../src/api/http.js';
import { errors } from '../../src/domain/errors.js';
import { AgentClient } from '../../src/node/client.js';
import { DISPLAY_PATH } from '../../src/node/routes.js';

const GREETING = 'RFB 003.008\n';
const ROUNDS = 40;

describe('the display tunnel', () => {
  let dir: string;
  let vnc: net.Server;
  let agent: Listening;
  let controller: Listening;
  const open: net.Socket[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-display-'));
    const socket = path.join(dir, 'vnc.sock');
    vnc = net.createServer((s) => {
      open.push(s);
      s.on('error', () => {});
      s.write(GREETING);
    });
    await new Promise<void>((resolve) => vnc.listen(socket, resolve));
    // The agent's side: the same path's GET says the VM is here; the tunnel opens QEMU's socket.
    const agentApp = createApp();
    agentApp.get('/v1/vms/:name/display', (c) => c.json({ vm: c.req.param('name') }));
    agent = await serve(agentApp);
    serveTunnels(agent, agentApp, (p) =>
      p === '/v1/vms/gone/display'
        ? Promise.reject(errors.internal("cannot reach the display of 'gone'"))
        : DISPLAY_PATH.test(p)
          ? new Promise((resolve, reject) => {
              const conn = net.createConnection({ path: socket });
              conn.once('connect', () => resolve(conn));
              conn.once('error', reject);
            })
          : undefined,
    );
    // The controller's side: its tunnel is the agent client's display stream.
    const client = new AgentClient('node-1', agent.url, 'token');
    const controllerApp = createApp();
    controllerApp.get('/api/v1/vms/:name/display', (c) => c.json({ vm: c.req.param('name') }));
    controller = await serve(controllerApp);
    serveTunnels(controller, controllerApp, (p) => {
      const m = /^\/api\/v1\/vms\/([^/]+)\/display$/.exec(p);
      return m ? client.display(m[1]!) : undefined;
    });
  });

  after(async () => {
    for (const s of open) s.destroy();
    await controller?.close();
    await agent?.close();
    await new Promise<void>((resolve) => (vnc ? vnc.close(() => resolve()) : resolve()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("hands the agent client QEMU's first bytes, every time", async () => {
    const client = new AgentClient('node-1', agent.url, 'token');
    for (let i = 0; i < ROUNDS; i++) {
      const stream = await client.display('db');
      const first = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`round ${i}: no greeting within 2 s`)), 2000);
        stream.once('data', (b: Buffer) => {
          clearTimeout(timer);
          resolve(b.toString());
        });
      });
      stream.destroy();
      assert.equal(first, GREETING, `round ${i}`);
    }
  });

  it('brings the greeting through both tunnels to a browser-like WebSocket, every time', async () => {
    for (let i = 0; i < ROUNDS; i++) {
      const ws = new WebSocket(`${controller.url.replace(/^http/, 'ws')}/api/v1/vms/db/display`);
      const first = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`round ${i}: no greeting within 2 s`)), 2000);
        ws.once('message', (b: Buffer) => {
          clearTimeout(timer);
          resolve(b.toString());
        });
        ws.once('error', reject);
      });
      ws.terminate();
      assert.equal(first, GREETING, `round ${i}`);
    }
  });

  it('passes on a refused tunnel as one line and opens nothing', async () => {
    const client = new AgentClient('node-1', agent.url, 'token');
    const connections = open.length;
    await assert.rejects(client.display('gone'), { message: "node 'node-1' refused the display of 'gone' (HTTP 500)" });
    assert.equal(open.length, connections, "no connection to QEMU's socket");
  });
});
