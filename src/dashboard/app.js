// Ferry's cluster console: one page, hash routes, the controller's REST API
// with the session cookie (changes carry the CSRF cookie's value in
// x-csrf-token), live updates from the server-sent event stream.

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const csrf = () => (document.cookie.match(/(?:^|; )ferry_csrf=([^;]*)/) || [])[1] || '';
const STEPS = ['connect', 'config', 'create', 'memory', 'disks', 'resume', 'network'];

async function api(method, path, body) {
  const headers = { accept: 'application/json' };
  if (method !== 'GET') headers['x-csrf-token'] = decodeURIComponent(csrf());
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  if (res.status === 401) {
    location.href = '/login';
    throw new Error('signed out');
  }
  const text = await res.text();
  const json = text ? JSON.parse(text) : {};
  if (!res.ok) throw new Error(json.error?.message ?? `HTTP ${res.status}`);
  return json;
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
const ms = (v) => (v === null || v === undefined ? '–' : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`);
const time = (t) => new Date(t).toLocaleTimeString();

function toast(message, error = false) {
  const t = $('#toast');
  t.textContent = message;
  t.className = error ? 'error' : '';
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 5000);
}

async function act(label, fn) {
  try {
    const r = await fn();
    toast(label);
    await render();
    return r;
  } catch (e) {
    toast(`${label} failed: ${e.message}`, true);
    return undefined;
  }
}

function table(headers, rows, attrs = '') {
  return (
    `<table ${attrs}><thead><tr>${headers.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead>` +
    `<tbody>${rows.length ? rows.join('') : `<tr><td colspan="${headers.length}" class="muted">none</td></tr>`}</tbody></table>`
  );
}

const stateBadge = (s) => `<span class="badge ${esc(s)}">${esc(s)}</span>`;

// ---- views -------------------------------------------------------------

const views = {
  async overview() {
    const [status, nodes, vms] = await Promise.all([api('GET', '/api/v1/status'), api('GET', '/api/v1/nodes'), api('GET', '/api/v1/vms')]);
    const rows = nodes.map((n) => {
      const total = n.capabilities?.memoryTotalMiB ?? 0;
      const used = total - (n.memoryFreeMiB ?? total);
      const pct = total ? Math.round((used / total) * 100) : 0;
      return (
        `<tr data-node="${esc(n.name)}"><td>${esc(n.name)}</td><td>${stateBadge(n.state)}</td><td>${esc(n.capabilities?.cpu?.vendor ?? '–')} ${esc(n.capabilities?.cpu?.model ?? '')}</td>` +
        `<td>${esc(n.capabilities?.accelerator ?? '–')}</td><td><progress max="${total}" value="${used}" title="${pct}%"></progress> ${used} / ${total} MiB</td>` +
        `<td class="vm-count">${n.vmCount}</td><td>${esc(
          vms
            .filter((v) => v.node === n.name)
            .map((v) => v.name)
            .join(', ') || '–',
        )}</td></tr>`
      );
    });
    return `<h2>Cluster ${esc(status.cluster.name)}</h2>
      <div class="cards">
        <div class="card"><b>${status.nodes.up}/${status.nodes.total}</b><span>nodes up</span></div>
        <div class="card"><b>${status.vms.running}/${status.vms.total}</b><span>VMs running</span></div>
        <div class="card"><b>${status.migrations.running}</b><span>migrations running</span></div>
      </div>
      <h3>Nodes</h3>${table(['Node', 'State', 'CPU', 'Accel', 'Memory', 'VMs', 'Running here'], rows, 'id="nodes"')}`;
  },

  async vms(arg) {
    const [vms, nodes] = await Promise.all([api('GET', '/api/v1/vms'), api('GET', '/api/v1/nodes')]);
    const rows = vms.map(
      (v) =>
        `<tr data-vm="${esc(v.name)}"><td><a href="#/vms/${encodeURIComponent(v.name)}">${esc(v.name)}</a></td><td>${stateBadge(v.state)}${v.migration ? ` <span class="muted">${esc(v.migration.phase)} → ${esc(v.migration.to)}</span>` : ''}</td>` +
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
    const list = await api('GET', '/api/v1/migrations');
    const row = (m) =>
      `<tr data-migration="${esc(m.id)}"><td><a href="#/migrations/${encodeURIComponent(m.id)}">${esc(m.id)}</a></td><td>${esc(m.vm)}</td><td>${esc(m.mode)}</td>` +
      `<td>${esc(m.from)} → ${esc(m.to)}</td><td>${stateBadge(m.status)}${m.status === 'queued' ? ` #${m.queuePosition}` : ''}</td><td>${esc(m.phase)}</td>` +
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
    const nodes = await api('GET', '/api/v1/nodes');
    const rows = nodes.map(
      (n) =>
        `<tr data-node="${esc(n.name)}"><td>${esc(n.name)}</td><td>${stateBadge(n.state)}</td><td>${n.vmCount}</td><td>` +
        (n.state === 'maintenance'
          ? `<button data-resume="${esc(n.name)}">Resume</button>`
          : `<button data-plan="${esc(n.name)}">Plan drain</button> <button data-drain="${esc(n.name)}">Drain (live)</button>`) +
        '</td></tr>',
    );
    return `<h2>Maintenance</h2>${table(['Node', 'State', 'VMs', ''], rows, 'id="maintenance"')}<section id="drain-plan"></section>`;
  },

  async network() {
    const [nets, switches, macs] = await Promise.all([api('GET', '/api/v1/networks'), api('GET', '/api/v1/switches'), api('GET', '/api/v1/switch/macs')]);
    return (
      `<h2>Network</h2><h3>Cluster networks</h3>` +
      table(
        ['Name', 'Role', 'Metric', 'Subnet', 'State', 'Nodes'],
        nets.map(
          (n) =>
            `<tr><td>${esc(n.name)}</td><td>${esc(n.role)}</td><td>${n.metric}</td><td>${esc(n.subnet)}</td><td>${stateBadge(n.state)}</td>` +
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
      api('GET', '/api/v1/backups'),
      api('GET', '/api/v1/backup-schedules'),
      api('GET', '/api/v1/replicas'),
      api('GET', '/api/v1/vms'),
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
              `<tr><td><code>${esc(b.id)}</code></td><td>${esc(b.vm)}</td><td>${esc(b.mode)}</td><td>${stateBadge(b.status)}${b.error ? ` ${esc(b.error)}` : ''}</td>` +
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
            `<tr><td>${esc(r.vm)}</td><td>${esc(r.target.url)}</td><td>${esc(r.state)}</td><td>${stateBadge(r.health)}${r.lastError ? ` ${esc(r.lastError)}` : ''}</td><td>${esc(r.interval)}</td>` +
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
    const list = await api('GET', `/api/v1/events?since=${Date.now() - 3600_000}`);
    eventLog.splice(0, eventLog.length, ...list.slice(-200));
    return `<h2>Events</h2><ol id="events" class="events">${eventLog.slice().reverse().map(eventItem).join('')}</ol>`;
  },
};

const eventLog = [];
const eventItem = (e) => `<li><time>${time(e.atMs)}</time> <span class="etype">${esc(e.type)}</span> ${esc(e.message)}</li>`;

async function vmDetail(name, nodes) {
  const vm = await api('GET', `/api/v1/vms/${encodeURIComponent(name)}`);
  const consoleText = await fetch(`/api/v1/vms/${encodeURIComponent(name)}/console`, { credentials: 'same-origin' }).then((r) => (r.ok ? r.text() : ''));
  const others = nodes.filter((n) => n.name !== vm.node);
  const running = vm.state === 'running';
  return `<h3>${esc(vm.name)} ${stateBadge(vm.state)}</h3>
    <dl class="facts"><dt>Node</dt><dd>${esc(vm.node || '–')}</dd><dt>Memory</dt><dd>${vm.memoryMiB} MiB</dd><dt>CPUs</dt><dd>${vm.cpus}</dd>
      <dt>Workload</dt><dd>${esc(vm.workload)}</dd><dt>IP / MAC</dt><dd>${esc(vm.ip)} / ${esc(vm.mac)}</dd><dt>CPU</dt><dd>${esc(vm.guestCpu ? `${vm.guestCpu.vendor} ${vm.guestCpu.model.split(',')[0]}` : '–')}${vm.compat ? ' (compat)' : ''}</dd>
      ${vm.migration ? `<dt>Migration</dt><dd><a href="#/migrations/${encodeURIComponent(vm.migration.id)}">${esc(vm.migration.phase)} → ${esc(vm.migration.to)}</a></dd>` : ''}</dl>
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

// A running migration: seven steps, progress, a chart of dirty rate and bandwidth, then the report.
const samples = new Map();

async function migrationView(id) {
  const m = await api('GET', `/api/v1/migrations/${encodeURIComponent(id)}`);
  const series = samples.get(id) ?? [];
  samples.set(id, series);
  const p = m.progress;
  if (p && (!series.length || series[series.length - 1].t !== p.sampledAtMs))
    series.push({ t: p.sampledAtMs, dirty: p.dirtyRateBytesPerSec, bw: p.throughputBytesPerSec });
  const done = new Set(m.steps.filter((s) => s.ms !== undefined).map((s) => s.name));
  const stepList = STEPS.map((s, i) => {
    const rec = m.steps.find((x) => x.name === s);
    const cls = done.has(s) ? 'done' : m.phase === s ? 'current' : 'pending';
    return `<li class="${cls}" data-step="${s}"><b>${i + 1}</b> ${s}<span>${rec?.ms !== undefined ? ms(rec.ms) : cls === 'current' ? '…' : ''}</span></li>`;
  }).join('');
  const r = m.report;
  const report = r
    ? `<h3>Report</h3><dl class="facts report" id="report"><dt>Status</dt><dd>${stateBadge(r.status)}${r.error ? ` ${esc(r.error)}` : ''}</dd>
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
  return `<h2>Migration ${esc(m.id)}</h2><p>${esc(m.mode)} migration of <b>${esc(m.vm)}</b> from ${esc(m.from)} to ${esc(m.to)} ${stateBadge(m.status)} ${cancel}</p>
    <ol class="steps" id="steps">${stepList}</ol>${live}${chart(series)}${report}`;
}

function chart(series) {
  if (series.length < 2) return '<div class="chart muted">the chart fills while memory is copied</div>';
  const w = 600;
  const h = 160;
  const t0 = series[0].t;
  const t1 = series[series.length - 1].t;
  const max = Math.max(1, ...series.map((s) => Math.max(s.dirty, s.bw)));
  const pts = (k) => series.map((s) => `${((s.t - t0) / Math.max(1, t1 - t0)) * w},${h - (s[k] / max) * (h - 10)}`).join(' ');
  return `<figure class="chart"><svg id="chart" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="dirty rate and bandwidth">
      <polyline points="${pts('bw')}" class="bw"/><polyline points="${pts('dirty')}" class="dirty"/></svg>
      <figcaption><span class="key bw"></span> bandwidth <span class="key dirty"></span> dirty rate (max ${bytes(max)}/s)</figcaption></figure>`;
}

// ---- routing and events --------------------------------------------------

let current = '';
async function render() {
  const [view, arg] = (location.hash.replace(/^#\//, '') || 'overview').split('/').map(decodeURIComponent);
  const fn = views[view] ?? views.overview;
  document.querySelectorAll('nav a').forEach((a) => a.classList.toggle('active', a.dataset.view === view));
  const key = location.hash;
  try {
    const html = await fn(arg);
    if (key !== location.hash) return; // the user moved on meanwhile
    const keep = captureInputs();
    $('#view').innerHTML = html;
    restoreInputs(keep);
    current = key;
  } catch (e) {
    $('#view').innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

// Periodic refresh must not eat what the user is typing or has picked.
function captureInputs() {
  const out = {};
  document.querySelectorAll('#view input, #view select').forEach((el) => {
    if (el.id || el.name) out[el.id || `name:${el.name}`] = { value: el.value, focused: document.activeElement === el };
  });
  return out;
}
function restoreInputs(saved) {
  for (const [key, v] of Object.entries(saved)) {
    const el = key.startsWith('name:') ? $(`#view [name="${key.slice(5)}"]`) : document.getElementById(key);
    if (!el) continue;
    el.value = v.value;
    if (v.focused) el.focus();
  }
  if (saved.target?.value) void checkTarget();
}

let lastCheck = { key: '', html: '', ok: false };

async function checkTarget() {
  const vm = $('.actions')?.dataset.vm;
  const to = $('#target')?.value;
  const list = $('#blockers');
  const live = $('#live-migrate');
  const quick = $('#quick-migrate');
  if (!vm || !list) return;
  if (!to) {
    live.disabled = quick.disabled = true;
    list.innerHTML = '';
    return;
  }
  // A refresh of the same view shows the last answer at once; the check runs again in the background.
  const key = `${vm}|${to}`;
  if (lastCheck.key === key) {
    list.innerHTML = lastCheck.html;
    live.disabled = quick.disabled = !lastCheck.ok;
  } else {
    live.disabled = quick.disabled = true;
    list.innerHTML = '<li class="muted">checking…</li>';
  }
  const r = await api('POST', `/api/v1/vms/${encodeURIComponent(vm)}/migrate`, { to, check: true });
  lastCheck = { key, html: r.ok ? '<li class="ok">no blockers</li>' : r.blockers.map((b) => `<li>${esc(b)}</li>`).join(''), ok: r.ok };
  if ($('#target')?.value !== to) return;
  $('#blockers').innerHTML = lastCheck.html;
  $('#live-migrate').disabled = $('#quick-migrate').disabled = !r.ok;
}

document.addEventListener('change', (e) => {
  if (e.target.id === 'target') void checkTarget();
});

document.addEventListener('submit', (e) => {
  if (e.target.id === 'backup-form') {
    e.preventDefault();
    const f = new FormData(e.target);
    const vm = f.get('vm');
    void act(`backup of ${vm} done`, () => api('POST', '/api/v1/backups', { vm, incremental: f.get('incremental') === 'on' }));
    return;
  }
  if (e.target.id !== 'create-vm') return;
  e.preventDefault();
  const f = new FormData(e.target);
  const body = { name: f.get('name'), memoryMiB: Number(f.get('memoryMiB')), workload: f.get('workload') || 'idle' };
  if (f.get('node')) body.node = f.get('node');
  void act(`VM ${body.name} created`, async () => {
    await api('POST', '/api/v1/vms', body);
    e.target.reset();
  });
});

document.addEventListener('click', (e) => {
  const b = e.target.closest('button');
  if (!b || b.form?.action?.endsWith('/logout')) return;
  const vm = b.closest('.actions')?.dataset.vm ?? $('.actions')?.dataset.vm;
  if (b.dataset.action) {
    void act(`${b.dataset.action} ${vm}`, () => api('POST', `/api/v1/vms/${encodeURIComponent(vm)}/${b.dataset.action}`, {}));
  } else if (b.id === 'live-migrate' || b.id === 'quick-migrate') {
    const to = $('#target').value;
    const bw = Number($('#bandwidth').value);
    const body = { to, mode: b.id === 'quick-migrate' ? 'quick' : 'live' };
    if (bw > 0) body.policy = { bandwidthMiBps: bw };
    void api('POST', `/api/v1/vms/${encodeURIComponent(vm)}/migrate`, body).then(
      (m) => {
        location.hash = `#/migrations/${encodeURIComponent(m.id)}`;
      },
      (err) => toast(`migration refused: ${err.message}`, true),
    );
  } else if (b.id === 'cancel-migration') {
    void act('cancel requested', () => api('POST', `/api/v1/migrations/${encodeURIComponent(b.dataset.id)}/cancel`, {}));
  } else if (b.dataset.plan || b.dataset.drain) {
    const node = b.dataset.plan ?? b.dataset.drain;
    const dryRun = Boolean(b.dataset.plan);
    void api('POST', `/api/v1/nodes/${encodeURIComponent(node)}/maintenance`, { drain: 'live', dryRun }).then(
      (r) => {
        const p = r.plan;
        $('#drain-plan').innerHTML =
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
      },
      (err) => toast(`drain refused: ${err.message}`, true),
    );
  } else if (b.dataset.resume) {
    void act(`${b.dataset.resume} resumed`, () => api('POST', `/api/v1/nodes/${encodeURIComponent(b.dataset.resume)}/resume`, {}));
  }
});

window.addEventListener('hashchange', () => void render());

// Live: every event re-renders the view; the event log gets the line at once.
function connect() {
  const es = new EventSource(`/api/v1/events?since=${Date.now()}`);
  es.addEventListener('open', () => $('#live').classList.add('on'));
  es.addEventListener('error', () => $('#live').classList.remove('on'));
  es.addEventListener('ferry', (msg) => {
    const e = JSON.parse(msg.data);
    eventLog.push(e);
    const list = $('#events');
    if (list) list.insertAdjacentHTML('afterbegin', eventItem(e));
    else scheduleRender();
  });
}
let pending;
function scheduleRender() {
  clearTimeout(pending);
  pending = setTimeout(() => void render(), 150);
}
// A running migration's progress is not an event: poll it while one is shown.
setInterval(() => {
  if (/^#\/(overview|vms|migrations|storage)?(\/.*)?$/.test(location.hash || '#/')) void render();
}, 1000);

connect();
void render();
