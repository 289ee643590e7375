/**
 * The lab (root): hosts as network namespaces with eth0 on a LAN bridge and
 * eth1 on a migration bridge, links shaped by tc, a client namespace, and
 * etcd members inside the hosts. `ferry lab down` leaves no namespace, link,
 * process or file behind (nor the cluster `lab up` made in the state
 * directory, its daemons running in the hosts).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Lab, labEtcdStatus } from '../../src/lab/lab.js';
import { projectRoot } from '../../src/config/paths.js';
import { EtcdStore } from '../../src/store/etcd-store.js';
import { pidAlive } from '../../src/system/process.js';
import { processesMentioning, runFerry } from '../helpers/cluster.js';
import { labHostDir } from '../../src/cli/lab-cluster.js';
import { tlsFetch } from '../../src/api/tls.js';
import { createAuthority, generateKeyPair, issueCertificate } from '../../src/system/pki.js';

const ferry = runFerry;

const linksNamed = (part: string) => fs.readdirSync('/sys/class/net').filter((n) => n.includes(part));
const namespacesNamed = (part: string) => (fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns').filter((n) => n.includes(part)) : []);

describe('the lab', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, () => {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-lab-'));
  let lab: Lab;
  before(async () => {
    // host-3 stays out of the cluster: the join test below joins it over the network.
    const r = await ferry(state, ['lab', 'up', '--hosts', '3', '--members', '2', '--link-mbit', '200', '--etcd', '3', '--json']);
    assert.equal(r.code, 0, r.stderr);
    lab = JSON.parse(r.stdout) as Lab;
  });
  after(async () => {
    await ferry(state, ['lab', 'down']);
    fs.rmSync(state, { recursive: true, force: true });
  });

  const inside = (host: string, cmd: string[]) =>
    ferry(state, ['lab', host === 'client' ? 'client' : 'exec', ...(host === 'client' ? [] : [host]), '--', ...cmd]);

  it('wires each host to the LAN and the migration network, and the client to the LAN', async () => {
    assert.deepEqual(
      lab.hosts.map((h) => h.name),
      ['host-1', 'host-2', 'host-3'],
    );
    assert.deepEqual(namespacesNamed(`fl-${lab.id}-`).sort(), [...lab.hosts.map((h) => h.netns), lab.client.netns].sort());
    const addr = await inside('host-2', ['ip', '-4', '-o', 'addr', 'show']);
    // The LAN address lives on vmbr0, the host bridge VMs' taps join; eth0 is its port.
    assert.match(addr.stdout, new RegExp(`vmbr0\\s+inet ${lab.hosts[1]!.lan.replaceAll('.', '\\.')}/24`));
    assert.match((await inside('host-2', ['ip', '-o', 'link', 'show', 'eth0'])).stdout, / master vmbr0 /);
    assert.match(addr.stdout, new RegExp(`eth1\\s+inet ${lab.hosts[1]!.migration.replaceAll('.', '\\.')}/24`));
    // Host to host on the migration network, the client to a host on the LAN, every 2 ms.
    const mig = await inside('host-1', ['ping', '-c', '3', '-i', '0.002', '-W', '1', lab.hosts[2]!.migration]);
    assert.equal(mig.code, 0, mig.stdout + mig.stderr);
    const lan = await inside('client', ['ping', '-c', '50', '-i', '0.002', '-W', '1', lab.hosts[1]!.lan]);
    assert.match(lan.stdout, / 50 received, 0% packet loss/);
    // The client is on the LAN only: the migration network is not reachable from it.
    assert.notEqual((await inside('client', ['ping', '-c', '1', '-W', '1', lab.hosts[0]!.migration])).code, 0);
    // Links shaped both ways.
    for (const dev of ['eth0', 'eth1']) assert.match((await inside('host-3', ['tc', 'class', 'show', 'dev', dev])).stdout, /htb 1:10 .*rate 200Mbit/);
    const port = lab.hosts[2]!.lanPort;
    assert.match(
      (await ferry(state, ['lab', 'show'])).stdout,
      new RegExp(`^host-3 +${lab.hosts[2]!.netns} +${lab.hosts[2]!.lan.replaceAll('.', '\\.')} `, 'm'),
    );
    assert.ok(fs.existsSync(`/sys/class/net/${port}/master`), 'the host port hangs on the LAN bridge');
  });

  it('runs three etcd members in the hosts; the cluster keeps working with a follower killed', async () => {
    assert.equal(lab.etcd.length, 3);
    const status = await labEtcdStatus(lab);
    assert.deepEqual(
      status.map((s) => s.answers),
      [true, true, true],
    );
    assert.equal(status.filter((s) => s.leads).length, 1, 'one leader');
    // (A leader killed means an election first: that and what Ferry does meanwhile belong to failover.)
    const follower = lab.etcd.find((m) => !status.find((s) => s.name === m.name)!.leads)!;
    assert.match((await ferry(state, ['lab', 'show'])).stdout, new RegExp(`${follower.name} \\(follower\\)`));
    const store = new EtcdStore({ endpoints: lab.etcd.map((m) => m.clientUrl) });
    try {
      await store.put('lab/check', 1);
      process.kill(follower.pid!, 'SIGKILL');
      await store.put('lab/check', 2);
      assert.equal((await store.get('lab/check'))?.value, 2);
    } finally {
      await store.close();
    }
  });

  /** The CLI inside a lab host, with that host's own state directory. */
  const ferryIn = (host: string, args: string[], dir = labHostDir(state, host)) =>
    inside(host, [process.execPath, path.join(projectRoot(), 'dist/src/cli/main.js'), '--state', dir, ...args]);

  it('joins a host over the network with a single-use token, and refuses what should be refused with one line', async () => {
    const url = `https://${lab.hosts[0]!.lan}:8470`;
    const nodes = JSON.parse((await ferry(state, ['node', 'list', '--json'])).stdout) as { name: string; state: string; url: string }[];
    assert.deepEqual(
      nodes.map((n) => [n.name, n.state, new URL(n.url).protocol]),
      [
        ['host-1', 'up', 'https:'],
        ['host-2', 'up', 'https:'],
      ],
    );
    const joinToken = async () => {
      const t = await ferryIn('host-1', ['token', 'join']);
      assert.equal(t.code, 0, t.stderr);
      assert.match(t.stderr, /^valid once, until \S+\n$/);
      return t.stdout.trim();
    };
    const token = await joinToken();
    const [, id, , fp] = token.split('.');
    const host3 = labHostDir(state, 'host-3');
    const refused = async (args: string[], line: RegExp | string) => {
      const r = await ferryIn('host-3', ['join', url, '--name', 'host-3', '--shared', path.join(state, 'shared'), ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      if (typeof line === 'string') assert.equal(r.stderr, `error: ${line}\n`);
      else assert.match(r.stderr, line);
      assert.equal(fs.existsSync(host3), false, `a refused join (${args.join(' ')}) leaves nothing on the host`);
    };
    await refused(['--token', 'not-a-token'], "the join token is malformed (expected what 'ferry token join' prints)");
    await refused(
      ['--token', `join.${id}.${'0'.repeat(48)}.${'f'.repeat(64)}`],
      `the controller at ${url} does not hold the CA the token was made with (wrong URL, or someone in between)`,
    );
    await refused(['--token', `join.${'1'.repeat(16)}.${'0'.repeat(48)}.${fp}`], 'the join token is not one this cluster issued');
    await refused(['--token', token.replace(/^join/, 'login')], "that is a login token; this needs a join token ('ferry token join')");
    const other = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-not-the-volume-'));
    try {
      await refused(
        ['--token', token, '--shared', other],
        `host 'host-3' does not see the cluster's shared volume: ${other}/.ferry-volume does not exist (is the shared volume mounted at ${other}?)`,
      );
    } finally {
      fs.rmSync(other, { recursive: true, force: true });
    }
    await refused(['--token', token, '--name', 'host-2'], "host 'host-2' already exists");
    // A token past its expiry (the store's record set back, rather than a test that waits an hour).
    const old = await joinToken();
    const store = new EtcdStore({ endpoints: lab.etcd.map((m) => m.clientUrl) });
    try {
      const key = `tokens/${old.split('.')[1]}`;
      const rec = (await store.get<{ expiresAtMs: number }>(key))!;
      await store.put(key, { ...rec.value, expiresAtMs: Date.now() - 1000 });
      await refused(['--token', old], /^error: the join token expired at \S+; make another: ferry token join\n$/);
    } finally {
      await store.close();
    }

    // None of the refusals spent the token: it joins host-3 now, which gets its certificate and starts its agent.
    const ok = await ferryIn('host-3', ['join', url, '--token', token, '--name', 'host-3', '--shared', path.join(state, 'shared')]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^host-3 joined cluster \S+; its agent runs\n$/);
    const host = JSON.parse(fs.readFileSync(path.join(host3, 'host.json'), 'utf8')) as {
      controllers: string[];
      addresses: { network: string; address: string }[];
    };
    assert.deepEqual(host.controllers, [url], 'the host knows the controller from its own configuration');
    assert.deepEqual(host.addresses, [
      { network: 'management', address: lab.hosts[2]!.lan, iface: 'vmbr0' },
      { network: 'migration', address: lab.hosts[2]!.migration, iface: 'eth1' },
    ]);
    assert.deepEqual(fs.readdirSync(path.join(host3, 'pki')).sort(), ['ca.crt', 'host.crt', 'host.key'], 'no CA key on a joined host');
    // The CLI on the new host reaches the controller over HTTPS with the CA it got at join.
    const listed = JSON.parse((await ferryIn('host-3', ['node', 'list', '--json'])).stdout) as { name: string; state: string }[];
    assert.deepEqual(listed.find((n) => n.name === 'host-3')?.state, 'up');
    // Used once: nobody joins with it again (tried from a fresh state directory).
    const h4 = path.join(state, 'h4');
    const again = await ferryIn('host-3', ['join', url, '--token', token, '--name', 'host-4', '--shared', path.join(state, 'shared')], h4);
    assert.equal(again.code, 2, again.stderr);
    assert.match(again.stderr, /^error: the join token was used already \(by host-3 at \S+\); make another: ferry token join\n$/);
    assert.equal(fs.existsSync(h4), false);
    const bad = await ferryIn('host-1', ['token', 'join', '--ttl', '5s']);
    assert.deepEqual([bad.code, bad.stderr], [2, "error: --ttl must be from 1m to 7d, got '5s'\n"]);
  });

  it('speaks mutual TLS: agents answer only the cluster controllers, the controller refuses certificates of another cluster', async () => {
    const h1 = labHostDir(state, 'host-1');
    const caPem = fs.readFileSync(path.join(h1, 'pki', 'ca.crt'), 'utf8');
    const agentUrl = (JSON.parse((await ferry(state, ['node', 'list', '--json'])).stdout) as { name: string; url: string }[]).find(
      (n) => n.name === 'host-2',
    )!.url;
    const controllerUrl = `https://${lab.hosts[0]!.lan}:8470`;
    const call = async (url: string, tls: Parameters<typeof tlsFetch>[0], init: RequestInit = {}) => {
      const f = tlsFetch(tls);
      try {
        const res = await f(url, init);
        return { status: res.status, body: await res.text() };
      } catch (e) {
        return { status: 0, body: String((e as { cause?: { code?: string } }).cause?.code ?? e) };
      } finally {
        await f.close();
      }
    };
    // No client certificate: the agent does not finish the handshake.
    assert.equal((await call(`${agentUrl}/v1/vms`, { caPem })).status, 0);
    // A host's certificate is not a controller's.
    const hostCert = {
      caPem,
      certPem: fs.readFileSync(path.join(h1, 'pki', 'host.crt'), 'utf8'),
      keyPem: fs.readFileSync(path.join(h1, 'pki', 'host.key'), 'utf8'),
    };
    const asHost = await call(`${agentUrl}/v1/vms`, hostCert);
    assert.equal(asHost.status, 401);
    assert.match(asHost.body, /only the cluster's controllers may call this agent \(the certificate names host 'host-1'\)/);
    // The controller's certificate is let in.
    const ctl = {
      caPem,
      certPem: fs.readFileSync(path.join(h1, 'pki', 'controller.crt'), 'utf8'),
      keyPem: fs.readFileSync(path.join(h1, 'pki', 'controller.key'), 'utf8'),
    };
    assert.equal((await call(`${agentUrl}/v1/vms`, ctl)).status, 200);
    // A host certificate a different cluster's CA signed, for a name this cluster has.
    const foreignCa = createAuthority('another-cluster', 'other');
    const keys = generateKeyPair();
    const foreign = {
      caPem,
      certPem: issueCertificate(foreignCa, {
        publicKeyPem: keys.publicKeyPem,
        name: 'host-2',
        role: 'host',
        clusterId: 'another-cluster',
        addresses: [lab.hosts[1]!.lan],
      }),
      keyPem: keys.privateKeyPem,
    };
    assert.equal((await call(`${agentUrl}/v1/vms`, foreign)).status, 0, "the agent's handshake refuses it");
    const hb = await call(`${controllerUrl}/api/v1/agents/heartbeat`, foreign, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(hb.status, 401);
    assert.match(hb.body, /the client certificate \(host-2\) is not one this cluster's CA signed/);
    // Neither a certificate nor a token: refused; a host's own certificate sends heartbeats only.
    assert.equal((await call(`${controllerUrl}/api/v1/vms`, { caPem })).status, 401);
    const hostApi = await call(`${controllerUrl}/api/v1/vms`, hostCert);
    assert.equal(hostApi.status, 401);
    assert.match(hostApi.body, /host 'host-1''s certificate only sends heartbeats; this needs the API token/);
    // The CLI in the root namespace logged in with a single-use login token; it cannot be used again.
    const loginToken = (await ferryIn('host-1', ['token', 'login'])).stdout.trim();
    const other = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-login-'));
    try {
      assert.equal((await ferry(other, ['login', controllerUrl, '--token', loginToken])).code, 0);
      assert.match((await ferry(other, ['status'])).stdout, /^nodes: 3\/3 up/m);
      const again = await ferry(other, ['login', controllerUrl, '--token', loginToken]);
      assert.equal(again.code, 2);
      assert.match(again.stderr, /^error: the login token was used already \(by cli at \S+\); make another: ferry token login\n$/);
    } finally {
      fs.rmSync(other, { recursive: true, force: true });
    }
  });

  it('refuses bad input with one line and changes nothing', async () => {
    const again = await ferry(state, ['lab', 'up', '--hosts', '2']);
    assert.equal(again.code, 2, 'a refusal (conflict) is exit 2');
    assert.equal(again.stderr, `error: a lab is up already in ${state} (3 hosts, id ${lab.id}); 'ferry lab down' first\n`);
    const unknown = await inside('host-9', ['true']);
    assert.equal(unknown.code, 2);
    assert.equal(unknown.stderr, "error: the lab has no host 'host-9' (it has host-1, host-2, host-3 and client)\n");
    assert.equal((await inside('host-1', ['sh', '-c', 'exit 7'])).code, 7, 'the command’s own exit code');
    // Powering on a host that is not down, the client, or no host at all.
    const running = await ferry(state, ['lab', 'boot', 'host-1']);
    assert.equal(running.code, 2);
    assert.match(running.stderr, /^error: host-1 is not down: \d+ process\(es\) run in it \('ferry lab crash host-1' first\)\n$/);
    assert.equal((await ferry(state, ['lab', 'boot', 'client'])).stderr, "error: the client is not a host of the cluster: 'ferry lab boot' takes host-N\n");
    assert.equal((await ferry(state, ['lab', 'boot', 'host-9'])).stderr, "error: the lab has no host 'host-9' (it has host-1, host-2, host-3 and client)\n");
    const namespacesBefore = namespacesNamed('fl-').sort();
    const other = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-lab-bad-'));
    try {
      for (const [args, line] of [
        [['--hosts', '0'], 'error: --hosts must be from 1 to 16, got 0\n'],
        [['--hosts', '2', '--etcd', '3'], 'error: --etcd 3 needs at least 3 hosts, got 2\n'],
        [['--hosts', '2', '--etcd', '2'], 'error: --etcd must be 1 or 3, got 2\n'],
      ] as const) {
        const r = await ferry(other, ['lab', 'up', ...args]);
        assert.equal(r.code, 2, r.stderr);
        assert.equal(r.stderr, line);
      }
      assert.deepEqual(fs.readdirSync(other), [], 'nothing made');
    } finally {
      fs.rmSync(other, { recursive: true, force: true });
    }
    assert.deepEqual(namespacesNamed('fl-').sort(), namespacesBefore, 'no other lab was made');
  });

  it('goes down leaving no namespace, link, process or file', async () => {
    const pids = lab.etcd.map((m) => m.pid!);
    const r = await ferry(state, ['lab', 'down']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `lab ${lab.id} down\n`);
    assert.deepEqual(namespacesNamed(`fl-${lab.id}-`), []);
    assert.deepEqual(linksNamed(`fl${lab.id}`), []);
    assert.deepEqual(
      pids.filter((p) => pidAlive(p)),
      [],
    );
    assert.deepEqual(fs.readdirSync(state), [], 'the lab and the cluster it made are gone from the state directory');
    assert.deepEqual(processesMentioning(state), [], 'no daemon, QEMU or etcd left');
    assert.equal((await ferry(state, ['lab', 'down'])).stdout, `no lab in ${state}\n`);
  });
});
