/**
 * Ferry's cluster console: one page, hash routes, the controller's REST API
 * through the typed client (session cookie, CSRF token on changes), live
 * updates from the server-sent event stream.
 */
import { pathOf } from '../api/client.js';
import { clusterRoutes } from '../api/routes/cluster.js';
import { eventRoutes } from '../api/routes/events.js';
import { migrationRoutes } from '../api/routes/migrations.js';
import { networkRoutes, switchRoutes } from '../api/routes/networks.js';
import { nodeRoutes } from '../api/routes/nodes.js';
import { replicaRoutes } from '../api/routes/replicas.js';
import { backupRoutes } from '../api/routes/storage.js';
import { requestMigration, vmRoutes } from '../api/routes/vms.js';
import type { ClusterEvent } from '../domain/events.js';
import { STEPS } from '../domain/migration.js';
import { describeControllers, describeHa } from '../domain/ha.js';
import { describeRunState } from '../domain/records.js';
import { api } from './api.js';
import { MigrationChart } from './chart.js';
import { badge, bytes, esc, ms, table, time } from './format.js';

type NodeRow = Awaited<ReturnType<typeof listNodes>>[number];

const $ = <E extends Element = HTMLElement>(sel: string): E | null => document.querySelector<E>(sel);
const listNodes = () => api.call(nodeRoutes.list, {});
/** A running VM whose guest does not run shows what it is (io-error, paused, …). */
const shownState = (v: { state: string; runState?: string }): string =>
  v.state === 'running' && v.runState && v.runState !== 'running' ? v.runState : v.state;
const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

function toast(text: string, error = false): void {
  const t = $('#toast')!;
  t.textContent = text;
  t.className = error ? 'error' : '';
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), 5000);
}
let toastTimer: ReturnType<typeof setTimeout> | undefined;

async function act(label: string, fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
    toast(label);
    await render();
  } catch (e) {
    toast(`${label} failed: ${message(e)}`, true);
  }
}

// ---- views -------------------------------------------------------------

type View = (arg?: string) => Promise<string>;

const views: Record<string, View> = {
  async overview() {
    const [status, nodes, vms] = await Promise.all([api.call(clusterRoutes.status, {}), listNodes(), api.call(vmRoutes.list, {})]);
    const rows = nodes.map((n) => {
      const total = n.capabilities?.memoryTotalMiB ?? 0;
      const used = total - (n.memoryFreeMiB ?? total);
      const pct = total ? Math.round((used / total) * 100) : 0;
      const here =
        vms
          .filter((v) => v.node === n.name)
          .map((v) => v.name)
          .join(', ') || '–';
      return (
        `<tr data-node="${esc(n.name)}"><td>${esc(n.name)}</td><td>${badge(n.state)}</td><td>${esc(n.capabilities?.cpu?.vendor ?? '–')} ${esc(n.capabilities?.cpu?.model ?? '')}</td>` +
        `<td>${esc(n.capabilities?.accelerator ?? '–')}</td><td><progress max="${total}" value="${used}" title="${pct}%"></progress> ${used} / ${total} MiB</td>` +
        `<td class="vm-count">${n.vmCount}</td><td>${esc(here)}</td></tr>`
      );
    });
    return `<h2>Cluster ${esc(status.cluster.name)}</h2>
      <div class="cards">
        <div class="card"><b>${status.nodes.up}/${status.nodes.total}</b><span>nodes up</span></div>
        <div class="card"><b>${status.vms.running}/${status.vms.total}</b><span>VMs running</span></div>
        <div class="card"><b>${status.migrations.running}</b><span>migrations running</span></div>
      </div>
      ${status.controllers ? `<p id="controllers">Controllers: ${esc(describeControllers(status.controllers, status.leadership))}</p>` : ''}
      <h3>Nodes</h3>${table(['Node', 'State', 'CPU', 'Accel', 'Memory', 'VMs', 'Running here'], rows, 'id="nodes"')}`;
  },

  async vms(arg) {
    const [vms, nodes] = await Promise.all([api.call(vmRoutes.list, {}), listNodes()]);
    const rows = vms.map(
      (v) =>
        `<tr data-vm="${esc(v.name)}"><td><a href="#/vms/${encodeURIComponent(v.name)}">${esc(v.name)}</a></td><td>${badge(shownState(v))}${v.network === 'disconnected' ? ' <span class="badge down">network cut off</span>' : ''}${v.migration ? ` <span class="muted">${esc(v.migration.phase)} → ${esc(v.migration.to)}</span>` : ''}</td>` +
        `<td>${esc(v.node || '–')}</td><td>${v.memoryMiB} MiB</td><td>${v.cpus}</td><td>${esc(v.workload)}</td><td>${esc(v.ip)}</td></tr>`,
    );
    const create = `<form id="create-vm" class="inline">
        <input name="name" placeholder="name" required aria-label="VM name">
        <input name="memoryMiB" type="number" min="64" value="128" aria-label="memory (MiB)"> MiB
        <input name="workload" value="idle" aria-label="workload">
        <select name="node" aria-label="node"><option value="">any node</option>${nodes.map((n) => `<option>${esc(n.name)}</option>`).join('')}</select>
        <button type="submit">Create VM</button></form>`;
    const detail = arg ? await vmDetail(arg, nodes) : '<p class="muted">Pick a VM for its details and actions.</p>';
    return `<h2>Virtual machines</h2>${create}${table(['Name', 'State', 'Node', 'Memory', 'CPUs', 'Workload', 'IP'], rows, 'id="vms"')}<section id="vm-detail">${detail}</section>`;
  },

  async migrations(arg) {
    if (arg) return migrationView(arg);
    const list = await api.call(migrationRoutes.list, {});
    const row = (m: (typeof list)[number]): string =>
      `<tr data-migration="${esc(m.id)}"><td><a href="#/migrations/${encodeURIComponent(m.id)}">${esc(m.id)}</a></td><td>${esc(m.vm)}</td><td>${esc(m.mode)}</td>` +
      `<td>${esc(m.from)} → ${esc(m.to)}</td><td>${badge(m.status)}${m.status === 'queued' ? ` #${m.queuePosition}` : ''}</td><td>${esc(m.phase)}</td>` +
      `<td>${ms(m.totalMs)}</td><td>${ms(m.guestBlackoutMs)}</td></tr>`;
    const queued = list.filter((m) => m.status === 'queued');
    const running = list.filter((m) => m.status === 'running');
    const recent = list
      .filter((m) => m.status !== 'queued' && m.status !== 'running')
      .slice(-20)
      .reverse();
    const headers = ['Migration', 'VM', 'Mode', 'Move', 'Status', 'Step', 'Total', 'Blackout'];
    return `<h2>Migrations</h2><h3>Running</h3>${table(headers, running.map(row), 'id="running"')}<h3>Queued</h3>${table(headers, queued.map(row))}<h3>Recent</h3>${table(headers, recent.map(row), 'id="recent"')}`;
  },

  async maintenance() {
    const nodes = await listNodes();
    const rows = nodes.map(
      (n) =>
        `<tr data-node="${esc(n.name)}"><td>${esc(n.name)}</td><td>${badge(n.state)}</td><td>${n.vmCount}</td><td>` +
        (n.state === 'maintenance'
          ? `<button data-resume="${esc(n.name)}">Resume</button>`
          : `<button data-plan="${esc(n.name)}">Plan drain</button> <button data-drain="${esc(n.name)}">Drain (live)</button>`) +
        '</td></tr>',
    );
    return `<h2>Maintenance</h2>${table(['Node', 'State', 'VMs', ''], rows, 'id="maintenance"')}<section id="drain-plan"></section>`;
  },

  async network() {
    const [nets, switches, macs] = await Promise.all([api.call(networkRoutes.list, {}), api.call(switchRoutes.list, {}), api.call(switchRoutes.macs, {})]);
    return (
      `<h2>Network</h2><h3>Cluster networks</h3>` +
      table(
        ['Name', 'Role', 'Metric', 'Subnet', 'State', 'Nodes'],
        nets.map(
          (n) =>
            `<tr><td>${esc(n.name)}</td><td>${esc(n.role)}</td><td>${n.metric}</td><td>${esc(n.subnet)}</td><td>${badge(n.state)}</td>` +
            `<td>${n.nodes.map((x) => `${esc(x.node)}=${esc(x.address)}${x.state === 'up' ? '' : ` (${esc(x.state)})`}`).join(' ')}</td></tr>`,
        ),
        'id="networks"',
      ) +
      '<h3>Virtual switches</h3>' +
      table(
        ['Switch', 'Bindings', 'VMs', 'MAC ageing'],
        switches.map(
          (s) =>
            `<tr><td>${esc(s.name)}</td><td>${esc(s.bindings.map((b) => `${b.node}/${b.iface}`).join(' ') || '–')}</td><td>${esc(s.vms.join(', ') || '–')}</td><td>${s.settings.macAgeingS} s</td></tr>`,
        ),
      ) +
      '<h3>MAC table</h3>' +
      table(
        ['Switch', 'MAC', 'Port', 'Node', 'VM', 'Age'],
        macs.map(
          (m) =>
            `<tr><td>${esc(m.switch)}</td><td><code>${esc(m.mac)}</code></td><td>${esc(m.port)}</td><td>${esc(m.node)}</td><td>${esc(m.vm ?? '–')}</td><td>${ms(m.ageMs)}</td></tr>`,
        ),
        'id="macs"',
      )
    );
  },

  async storage() {
    const [backups, schedules, replicas, vms] = await Promise.all([
      api.call(backupRoutes.list, {}),
      api.call(backupRoutes.schedules, {}),
      api.call(replicaRoutes.status, {}),
      api.call(vmRoutes.list, {}),
    ]);
    const running = vms.filter((v) => v.state === 'running');
    const form = `<form id="backup-form" class="inline"><label>VM <select name="vm">${running.map((v) => `<option>${esc(v.name)}</option>`).join('')}</select></label>
      <label><input type="checkbox" name="incremental"> incremental</label><button type="submit"${running.length ? '' : ' disabled'}>Back up now</button></form>`;
    return (
      `<h2>Storage</h2><h3>Backups</h3>${form}` +
      table(
        ['ID', 'VM', 'Mode', 'Status', 'Taken', 'Copied', 'Waited for migrations', 'Base'],
        backups
          .slice()
          .reverse()
          .map(
            (b) =>
              `<tr><td><code>${esc(b.id)}</code></td><td>${esc(b.vm)}</td><td>${esc(b.mode)}</td><td>${badge(b.status)}${b.error ? ` ${esc(b.error)}` : ''}</td>` +
              `<td>${b.startedAtMs ? time(b.startedAtMs) : '–'}</td><td>${bytes(b.bytes)}</td><td>${b.waitedMs ? `${ms(b.waitedMs)}${b.movedTo ? ` (moved to ${esc(b.movedTo)})` : ''}` : '–'}</td><td>${esc(b.parent ?? '–')}</td></tr>`,
          ),
        'id="backups"',
      ) +
      '<h3>Backup schedules</h3>' +
      table(
        ['VM', 'Every', 'Keep', 'Window', 'Last run', 'Note'],
        schedules.map(
          (s) =>
            `<tr><td>${esc(s.vm)}</td><td>${esc(s.every)}</td><td>${s.keep}</td><td>${esc(s.window?.text ?? 'any time')}</td><td>${s.lastRunMs ? time(s.lastRunMs) : '–'}</td><td>${esc(s.lastError ?? '')}</td></tr>`,
        ),
        'id="schedules"',
      ) +
      '<h3>Replicas</h3>' +
      table(
        ['VM', 'To', 'State', 'Health', 'Interval', 'Last sync', 'Lag', 'Sent'],
        replicas.outgoing.map(
          (r) =>
            `<tr><td>${esc(r.vm)}</td><td>${esc(r.target.url)}</td><td>${esc(r.state)}</td><td>${badge(r.health)}${r.lastError ? ` ${esc(r.lastError)}` : ''}</td><td>${esc(r.interval)}</td>` +
            `<td>${r.lastSyncAtMs ? time(r.lastSyncAtMs) : '–'}</td><td>${ms(r.lagMs)}</td><td>${bytes(r.bytesSent)}</td></tr>`,
        ),
        'id="replicas"',
      ) +
      (replicas.incoming.length
        ? '<h3>Replicas held here</h3>' +
          table(
            ['Replica of', 'From', 'State', 'Recovery points'],
            replicas.incoming.map(
              (r) =>
                `<tr><td>${esc(r.vm)}</td><td>${esc(r.source.url)}</td><td>${esc(r.state)}</td><td>${r.points.map((p) => `${esc(p.id)} ${time(p.atMs)}`).join(', ') || 'none'}</td></tr>`,
            ),
            'id="replicas-in"',
          )
        : '')
    );
  },

  async events() {
    const list = await api.call(eventRoutes.list, { query: { since: Date.now() - 3600_000 } });
    eventLog.splice(0, eventLog.length, ...list.slice(-200));
    return `<h2>Events</h2><ol id="events" class="events">${eventLog.slice().reverse().map(eventItem).join('')}</ol>`;
  },
};

const eventLog: ClusterEvent[] = [];
const eventItem = (e: ClusterEvent): string => `<li><time>${time(e.atMs)}</time> <span class="etype">${esc(e.type)}</span> ${esc(e.message)}</li>`;

async function vmDetail(name: string, nodes: NodeRow[]): Promise<string> {
  const vm = await api.call(vmRoutes.show, { params: { name } });
  const consoleText = await api.open(vmRoutes.console, { params: { name } }).then(
    (r) => r.text(),
    () => '',
  );
  const others = nodes.filter((n) => n.name !== vm.node);
  const running = vm.state === 'running';
  const cpu = vm.guestCpu ? `${vm.guestCpu.vendor} ${vm.guestCpu.model.split(',')[0]}` : '–';
  return `<h3>${esc(vm.name)} ${badge(shownState(vm))}</h3>
    <dl class="facts"><dt>Node</dt><dd>${esc(vm.node || '–')}</dd><dt>Memory</dt><dd>${vm.memoryMiB} MiB</dd><dt>CPUs</dt><dd>${vm.cpus}</dd>
      ${vm.runState && vm.runState !== 'running' ? `<dt>Run state</dt><dd>${esc(describeRunState(vm.runState))}</dd>` : ''}
      ${vm.network ? `<dt>Network</dt><dd>${vm.network === 'connected' ? 'connected' : 'cut off from its switch'}</dd>` : ''}
      <dt>HA</dt><dd class="ha">${esc(describeHa(vm))}</dd>
      ${vm.lost ? `<dt>Lost</dt><dd>with ${esc(vm.lost.node)} since ${time(vm.lost.sinceMs)}</dd>` : ''}
      <dt>Workload</dt><dd>${esc(vm.workload)}</dd><dt>IP / MAC</dt><dd>${esc(vm.ip)} / ${esc(vm.mac)}</dd><dt>CPU</dt><dd>${esc(cpu)}${vm.compat ? ' (compat)' : ''}</dd>
      ${vm.migration?.id ? `<dt>Migration</dt><dd><a href="#/migrations/${encodeURIComponent(vm.migration.id)}">${esc(vm.migration.phase)} → ${esc(vm.migration.to)}</a></dd>` : ''}</dl>
    <div class="actions" data-vm="${esc(vm.name)}">
      <button data-action="start" ${running ? 'disabled' : ''}>Start</button>
      <button data-action="stop" ${vm.state === 'stopped' ? 'disabled' : ''}>Stop</button>
      <button data-action="save" ${running ? '' : 'disabled'}>Save</button>
    </div>
    <fieldset class="migrate" ${running && !vm.migration ? '' : 'disabled'}><legend>Migrate</legend>
      <label>Target <select id="target"><option value="">choose a node</option>${others.map((n) => `<option value="${esc(n.name)}">${esc(n.name)} (${esc(n.state)})</option>`).join('')}</select></label>
      <label>Bandwidth cap <input id="bandwidth" type="number" min="1" placeholder="link" aria-label="bandwidth cap (MiB/s)"> MiB/s</label>
      <ul id="blockers" class="blockers"></ul>
      <button id="live-migrate" disabled>Live migrate</button> <button id="quick-migrate" disabled>Quick migrate</button>
    </fieldset>
    <h4>Console</h4><pre class="console">${esc(consoleText.split('\n').slice(-15).join('\n'))}</pre>`;
}

// A running migration: seven steps, progress, the chart of bandwidth and dirty rate, then the report.
let chart: MigrationChart | undefined;

async function migrationView(id: string): Promise<string> {
  const m = await api.call(migrationRoutes.show, { params: { id } });
  if (chart?.migration !== id) {
    chart?.destroy();
    chart = new MigrationChart(id);
  }
  const p = m.progress;
  if (p) chart.add({ atMs: p.sampledAtMs, bandwidth: p.throughputBytesPerSec, dirtyRate: p.dirtyRateBytesPerSec });
  const stepList = STEPS.map((s, i) => {
    const rec = m.steps.find((x) => x.name === s);
    const cls = rec?.ms !== undefined ? 'done' : m.phase === s ? 'current' : 'pending';
    return `<li class="${cls}" data-step="${s}"><b>${i + 1}</b> ${s}<span>${rec?.ms !== undefined ? ms(rec.ms) : cls === 'current' ? '…' : ''}</span></li>`;
  }).join('');
  const r = m.report;
  const report = r
    ? `<h3>Report</h3><dl class="facts report" id="report"><dt>Status</dt><dd>${badge(r.status)}${r.error ? ` ${esc(r.error)}` : ''}</dd>
      <dt>Total</dt><dd>${ms(r.totalMs)}</dd><dt>Downtime (QEMU)</dt><dd>${ms(r.downtimeMs)}</dd><dt>Guest blackout</dt><dd id="blackout">${ms(r.guestBlackoutMs)}</dd>
      <dt>Transferred</dt><dd>${bytes(r.transferredBytes)} in ${r.rounds} rounds</dd>
      ${r.predicted ? `<dt>Predicted</dt><dd>${esc(r.predicted.strategy)}: ${ms(r.predicted.totalMs)}, ${r.predicted.rounds} rounds</dd>` : ''}
      ${r.network ? `<dt>Network</dt><dd>${esc(r.network.name)} (${esc(r.network.sourceAddress)} → ${esc(r.network.targetAddress)})</dd>` : ''}</dl>`
    : '';
  const live =
    p && !r
      ? `<dl class="facts" id="progress"><dt>Round</dt><dd>${p.rounds}</dd><dt>Sent</dt><dd>${bytes(p.transferredBytes)}</dd><dt>Remaining</dt><dd>${bytes(p.remainingBytes)}</dd>
      <dt>Dirty rate</dt><dd>${bytes(p.dirtyRateBytesPerSec)}/s</dd><dt>Bandwidth</dt><dd>${bytes(p.throughputBytesPerSec)}/s</dd><dt>Throttle</dt><dd>${p.throttlePercent}%</dd>
      ${p.estimatedRemainingMs !== undefined ? `<dt>Time left</dt><dd>~${ms(p.estimatedRemainingMs)}</dd>` : ''}</dl>`
      : '';
  const cancel = m.status === 'running' || m.status === 'queued' ? `<button id="cancel-migration" data-id="${esc(m.id)}">Cancel</button>` : '';
  return `<h2>Migration ${esc(m.id)}</h2><p>${esc(m.mode)} migration of <b>${esc(m.vm)}</b> from ${esc(m.from)} to ${esc(m.to)} ${badge(m.status)} ${cancel}</p>
    <ol class="steps" id="steps">${stepList}</ol>${live}<figure class="chart" id="chart" aria-label="bandwidth and dirty rate"></figure>${report}`;
}

// ---- routing and events --------------------------------------------------

async function render(): Promise<void> {
  const [view = 'overview', arg] = (location.hash.replace(/^#\//, '') || 'overview').split('/').map(decodeURIComponent);
  const fn = views[view] ?? views.overview!;
  document.querySelectorAll<HTMLAnchorElement>('nav a').forEach((a) => a.classList.toggle('active', a.dataset.view === view));
  const key = location.hash;
  try {
    const html = await fn(arg);
    if (key !== location.hash) return; // the user moved on meanwhile
    const keep = captureInputs();
    $('#view')!.innerHTML = html;
    restoreInputs(keep);
    const slot = $('#chart');
    if (slot && chart) chart.mount(slot);
  } catch (e) {
    $('#view')!.innerHTML = `<p class="error">${esc(message(e))}</p>`;
  }
}

type Field = HTMLInputElement | HTMLSelectElement;

// A periodic refresh must not eat what the user is typing or has picked.
function captureInputs(): Map<string, { value: string; focused: boolean }> {
  const out = new Map<string, { value: string; focused: boolean }>();
  document.querySelectorAll<Field>('#view input, #view select').forEach((el) => {
    if (el.id || el.name) out.set(el.id || `name:${el.name}`, { value: el.value, focused: document.activeElement === el });
  });
  return out;
}

function restoreInputs(saved: Map<string, { value: string; focused: boolean }>): void {
  for (const [key, v] of saved) {
    const el = key.startsWith('name:') ? $<Field>(`#view [name="${key.slice(5)}"]`) : (document.getElementById(key) as Field | null);
    if (!el) continue;
    el.value = v.value;
    if (v.focused) el.focus();
  }
  if (saved.get('target')?.value) void checkTarget();
}

let lastCheck = { key: '', html: '', ok: false };

function setMigrateButtons(enabled: boolean): void {
  for (const id of ['#live-migrate', '#quick-migrate']) {
    const b = $<HTMLButtonElement>(id);
    if (b) b.disabled = !enabled;
  }
}

async function checkTarget(): Promise<void> {
  const vm = $('.actions')?.dataset.vm;
  const to = $<HTMLSelectElement>('#target')?.value;
  const list = $('#blockers');
  if (!vm || !list) return;
  if (!to) {
    setMigrateButtons(false);
    list.innerHTML = '';
    return;
  }
  // A refresh of the same view shows the last answer at once; the check runs again in the background.
  const key = `${vm}|${to}`;
  if (lastCheck.key === key) {
    list.innerHTML = lastCheck.html;
    setMigrateButtons(lastCheck.ok);
  } else {
    setMigrateButtons(false);
    list.innerHTML = '<li class="muted">checking…</li>';
  }
  const r = await api.call(vmRoutes.migrate, { params: { name: vm }, body: { to, check: true } });
  if (!('check' in r)) return;
  lastCheck = { key, html: r.ok ? '<li class="ok">no blockers</li>' : r.blockers.map((b) => `<li>${esc(b)}</li>`).join(''), ok: r.ok };
  if ($<HTMLSelectElement>('#target')?.value !== to) return;
  $('#blockers')!.innerHTML = lastCheck.html;
  setMigrateButtons(r.ok);
}

document.addEventListener('change', (e) => {
  if ((e.target as Element).id === 'target') void checkTarget();
});

document.addEventListener('submit', (e) => {
  const form = e.target as HTMLFormElement;
  if (form.id === 'backup-form') {
    e.preventDefault();
    const f = new FormData(form);
    const vm = String(f.get('vm'));
    void act(`backup of ${vm} done`, () => api.call(backupRoutes.create, { body: { vm, incremental: f.get('incremental') === 'on' } }));
    return;
  }
  if (form.id !== 'create-vm') return;
  e.preventDefault();
  const f = new FormData(form);
  const name = String(f.get('name'));
  const node = String(f.get('node') ?? '');
  const body = { name, memoryMiB: Number(f.get('memoryMiB')), workload: String(f.get('workload') || 'idle'), ...(node ? { node } : {}) };
  void act(`VM ${name} created`, async () => {
    await api.call(vmRoutes.create, { body });
    form.reset();
  });
});

const VM_ACTIONS = { start: vmRoutes.start, stop: vmRoutes.stop, save: vmRoutes.save } as const;

document.addEventListener('click', (e) => {
  const b = (e.target as Element).closest('button');
  if (!b || b.form?.action?.endsWith('/logout')) return;
  const vm = b.closest<HTMLElement>('.actions')?.dataset.vm ?? $('.actions')?.dataset.vm ?? '';
  const action = b.dataset.action as keyof typeof VM_ACTIONS | undefined;
  if (action && action in VM_ACTIONS) {
    void act(`${action} ${vm}`, () => api.call(VM_ACTIONS[action], { params: { name: vm }, body: {} }));
  } else if (b.id === 'live-migrate' || b.id === 'quick-migrate') {
    const to = $<HTMLSelectElement>('#target')!.value;
    const bw = Number($<HTMLInputElement>('#bandwidth')!.value);
    const mode = b.id === 'quick-migrate' ? 'quick' : 'live';
    requestMigration(api, vm, { to, mode, ...(bw > 0 ? { policy: { bandwidthMiBps: bw } } : {}) }).then(
      (m) => {
        location.hash = `#/migrations/${encodeURIComponent(m.id)}`;
      },
      (err: unknown) => toast(`migration refused: ${message(err)}`, true),
    );
  } else if (b.id === 'cancel-migration') {
    void act('cancel requested', () => api.call(migrationRoutes.cancel, { params: { id: b.dataset.id! }, body: {} }));
  } else if (b.dataset.plan || b.dataset.drain) {
    void drain((b.dataset.plan ?? b.dataset.drain)!, Boolean(b.dataset.plan));
  } else if (b.dataset.resume) {
    const node = b.dataset.resume;
    void act(`${node} resumed`, () => api.call(nodeRoutes.resume, { params: { name: node }, body: {} }));
  }
});

async function drain(node: string, dryRun: boolean): Promise<void> {
  try {
    const r = await api.call(nodeRoutes.maintenance, { params: { name: node }, body: { drain: 'live', dryRun } });
    const p = r.plan;
    $('#drain-plan')!.innerHTML =
      `<h3>${dryRun ? 'Drain plan' : 'Draining'} ${esc(node)}</h3>` +
      table(
        ['#', 'VM', 'Memory', 'To', 'Estimate'],
        p.steps.map(
          (s) => `<tr><td>${s.order}</td><td>${esc(s.vm)}</td><td>${s.memoryMiB} MiB</td><td>${esc(s.to ?? '–')}</td><td>${ms(s.estimatedMs)}</td></tr>`,
        ),
        'id="plan"',
      ) +
      (p.blockers.length ? `<ul class="blockers">${p.blockers.map((x) => `<li>${esc(x)}</li>`).join('')}</ul>` : '');
    if (!dryRun) void render();
  } catch (err) {
    toast(`drain refused: ${message(err)}`, true);
  }
}

window.addEventListener('hashchange', () => void render());

// Live: every event re-renders the view; the event log gets the line at once.
function connect(): void {
  const es = new EventSource(pathOf(eventRoutes.list, undefined, { since: Date.now() }));
  es.addEventListener('open', () => $('#live')!.classList.add('on'));
  es.addEventListener('error', () => $('#live')!.classList.remove('on'));
  es.addEventListener('ferry', (msg) => {
    const e = JSON.parse((msg as MessageEvent<string>).data) as ClusterEvent;
    eventLog.push(e);
    const list = $('#events');
    if (list) list.insertAdjacentHTML('afterbegin', eventItem(e));
    else scheduleRender();
  });
}

let pending: ReturnType<typeof setTimeout> | undefined;
function scheduleRender(): void {
  clearTimeout(pending);
  pending = setTimeout(() => void render(), 150);
}

// A running migration's progress is not an event: poll it while one is shown.
setInterval(() => {
  if (/^#\/(overview|vms|migrations|storage)?(\/.*)?$/.test(location.hash || '#/')) void render();
}, 1000);

connect();
void render();
