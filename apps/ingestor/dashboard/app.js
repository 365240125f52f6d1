// The fleet dashboard: plain ES module, no build step. Polls the ops API once a second and
// re-renders; a token given as ?token=... is kept in localStorage and sent as a Bearer token.
const params = new URLSearchParams(location.search);
if (params.get('token')) localStorage.setItem('ferry-token', params.get('token'));
const token = localStorage.getItem('ferry-token');
const view = { sort: 'liveness', order: 'desc', q: '', state: '' };
const $ = (sel) => document.querySelector(sel);

async function api(path, init = {}) {
  const headers = { ...(init.headers || {}), ...(token ? { authorization: `Bearer ${token}` } : {}) };
  const res = await fetch(path, { ...init, headers });
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.json();
}

function esc(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function ago(ms) {
  if (ms === undefined || ms === null) return '—';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

function renderSummary(s) {
  const cards = [
    ['devices', s.devices.total, 'devices'],
    ['online', s.devices.online, 'online'],
    ['offline', s.devices.offline + s.devices.flapping, 'offline / flapping'],
    ['unreachable', s.devices.unreachable, 'unreachable'],
    ['alerts', s.alerts.firing, 'alerts firing'],
    ['gateways', `${s.gateways.online}/${s.gateways.total}`, 'gateways online'],
  ];
  $('#summary').innerHTML = cards.map(([cls, n, label]) => `<div class="card ${cls}" data-card="${cls}"><b>${esc(n)}</b><small>${esc(label)}</small></div>`).join('');
  $('#links').innerHTML = `<span class="${s.links.broker ? 'ok' : 'bad'}">broker ${s.links.broker ? 'up' : 'down'}</span><span class="${s.links.sink ? 'ok' : 'bad'}">database ${s.links.sink ? 'up' : 'down'}</span>${s.held ? '<span class="bad">alerts held</span>' : ''}`;
}

function renderDevices(list) {
  $('#devices tbody').innerHTML = list.devices
    .map(
      (d) => `<tr class="${esc(d.liveness)}" data-device="${esc(d.deviceId)}">
      <td>${esc(d.deviceId)}</td><td><span class="state ${esc(d.liveness)}">${esc(d.liveness)}</span></td><td>${esc(d.gatewayId ?? '—')}</td>
      <td>${ago(Math.max(d.lastDataAt ?? 0, d.lastStatusAt ?? 0) || null)}</td><td>${d.ratePerMin === null ? '—' : d.ratePerMin.toFixed(1)}</td>
      <td>${d.completeness === null ? '—' : `${(d.completeness * 100).toFixed(0)}%`}</td><td>${d.battery ?? '—'}</td><td>${d.rssi ?? '—'}</td>
      <td>${d.skewMs === undefined ? '—' : `${Math.round(d.skewMs)} ms`}</td><td>${esc(d.firmware ?? '—')}</td></tr>`,
    )
    .join('');
}

function renderGateways(list) {
  $('#gateways tbody').innerHTML = list.gateways
    .map(
      (g) => `<tr data-gateway="${esc(g.gatewayId)}"><td>${esc(g.gatewayId)}</td><td><span class="state ${g.state === 'offline' ? 'offline' : g.state}">${esc(g.state)}</span></td>
      <td>${g.devices}</td><td>${g.outboxDepth ?? '—'}</td><td>${duration(g.oldestUnsentAgeMs)}</td><td>${g.dropped}</td><td>${esc(g.uplink ?? '—')}</td><td>${esc(g.version ?? '—')}</td></tr>`,
    )
    .join('');
}

function renderAlerts(list) {
  const active = list.alerts.filter((a) => a.state !== 'resolved');
  $('#alerts').innerHTML =
    active
      .map(
        (a) => `<li class="${esc(a.severity)} ${esc(a.state)}" data-alert="${a.id}" data-subject="${esc(a.subject.id)}">
        <div><b>${esc(a.rule)}</b> · ${esc(a.state)}${a.acknowledged ? ' · acked by ' + esc(a.acknowledged.by) : ''}</div>
        <div>${esc(a.summary)}</div>
        <div class="meta">since ${ago(a.firingAt ?? a.startsAt)} ${a.state === 'firing' && !a.acknowledged ? `<button data-ack="${a.id}">acknowledge</button>` : ''}</div></li>`,
      )
      .join('') || '<li class="none">no active alerts</li>';
}

function chart(name, points) {
  if (points.length === 0) return '';
  const w = 600, h = 160, pad = 24;
  const xs = points.map((p) => p.ts), ys = points.map((p) => p.v);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (w - 2 * pad);
  const sy = (y) => h - pad - ((y - y0) / (y1 - y0 || 1)) * (h - 2 * pad);
  const d = points.map((p, i) => `${i ? 'L' : 'M'}${sx(p.ts).toFixed(1)},${sy(p.v).toFixed(1)}`).join(' ');
  return `<div class="chart" data-chart="${esc(name)}"><h3>${esc(name)}</h3><svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img" aria-label="${esc(name)}">
    <path d="${d}"/><text x="${pad}" y="14">${esc(Number(y1.toPrecision(4)))}</text><text x="${pad}" y="${h - 6}">${esc(Number(y0.toPrecision(4)))}</text></svg></div>`;
}

/** A rolled-up series: the mean as a line over the min-max band, one point per window. */
function rollupChart(metric, window, points) {
  if (points.length === 0) return '';
  const w = 600, h = 160, pad = 24;
  const xs = points.map((p) => p.ts);
  const lows = points.map((p) => p.min ?? p.mean), highs = points.map((p) => p.max ?? p.mean);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...lows), Math.max(...highs)];
  const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (w - 2 * pad);
  const sy = (y) => h - pad - ((y - y0) / (y1 - y0 || 1)) * (h - 2 * pad);
  const line = (key) => points.map((p, i) => `${i ? 'L' : 'M'}${sx(p.ts).toFixed(1)},${sy(p[key] ?? p.mean).toFixed(1)}`).join(' ');
  const band = `${line('max')} ${points.slice().reverse().map((p) => `L${sx(p.ts).toFixed(1)},${sy(p.min ?? p.mean).toFixed(1)}`).join(' ')} Z`;
  const label = `${metric} · ${window} mean, min–max`;
  return `<div class="chart rollup" data-rollup="${esc(metric)}" data-window="${esc(window)}"><h3>${esc(label)}</h3><svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img" aria-label="${esc(label)}">
    <path class="band" d="${band}"/><path class="mean" d="${line('mean')}"/><text x="${pad}" y="14">${esc(Number(y1.toPrecision(4)))}</text><text x="${pad}" y="${h - 6}">${esc(Number(y0.toPrecision(4)))}</text></svg></div>`;
}

/** Per metric, per window length: the rollup points of a device, from GET /api/devices/:id/rollups. */
function rollupSeries(rollups) {
  const byMetric = new Map();
  for (const w of rollups?.windows ?? []) {
    for (const p of w.points ?? []) {
      for (const [field, v] of Object.entries(p.fields)) {
        const m = /^(.*)_(count|sum|mean|min|max|first|last|p50|p90|p95|p99)$/.exec(field);
        if (!m || typeof v !== 'number') continue;
        const perWindow = byMetric.get(m[1]) ?? byMetric.set(m[1], new Map()).get(m[1]);
        const points = perWindow.get(w.window) ?? perWindow.set(w.window, new Map()).get(w.window);
        const point = points.get(p.ts) ?? points.set(p.ts, { ts: p.ts }).get(p.ts);
        point[m[2]] = v;
      }
    }
  }
  return byMetric;
}

async function renderDevicePage(id) {
  const path = `/api/devices/${encodeURIComponent(id)}`;
  const [{ device: d, alerts, readings }, rollups] = await Promise.all([api(path), api(`${path}/rollups`).catch(() => null)]);
  const rollupMeasurements = new Set((rollups?.windows ?? []).map((w) => w.measurement));
  const rolled = rollupSeries(rollups);
  const series = new Map();
  for (const r of readings ?? []) {
    if (rollupMeasurements.has(r.measurement)) continue;
    for (const [k, v] of Object.entries(r.fields)) if (typeof v === 'number') (series.get(k) ?? series.set(k, []).get(k)).push({ ts: r.ts, v });
  }
  // Raw and rolled-up series of a metric side by side; metrics without rollups as before.
  const charts = (k, pts) => {
    const perWindow = rolled.get(k);
    if (!perWindow) return chart(k, pts);
    const windows = [...perWindow].map(([window, points]) => rollupChart(k, window, [...points.values()].filter((p) => p.mean !== undefined).sort((a, b) => a.ts - b.ts)));
    return `<div class="pair" data-pair="${esc(k)}">${chart(k, pts)}${windows.join('')}</div>`;
  };
  $('#device').innerHTML = `<div class="panel"><p><a href="#/">← fleet</a></p>
    <h2>${esc(d.deviceId)} <span class="state ${esc(d.liveness)}">${esc(d.liveness)}</span></h2>
    <p>gateway ${esc(d.gatewayId ?? '—')} · timeout ${duration(d.timeoutMs)} · interval ${duration(d.expectedIntervalMs)} · battery ${d.battery ?? '—'} · rssi ${d.rssi ?? '—'} · firmware ${esc(d.firmware ?? '—')}</p>
    ${readings === null ? '<p>No recent readings for this device.</p>' : [...new Set([...series.keys(), ...rolled.keys()])].map((k) => charts(k, series.get(k) ?? [])).join('')}
    <h3>Health history</h3><table><tbody>${d.history.slice().reverse().map((e) => `<tr><td>${new Date(e.at).toLocaleString()}</td><td>${esc(e.from)} → ${esc(e.to)}</td><td>${esc(e.reason)}</td></tr>`).join('')}</tbody></table>
    <h3>Alerts</h3><table><tbody>${alerts.map((a) => `<tr><td>${esc(a.rule)}</td><td>${esc(a.state)}</td><td>${esc(a.summary)}</td></tr>`).join('')}</tbody></table></div>`;
}

async function refresh() {
  try {
    const route = location.hash.startsWith('#/device/') ? decodeURIComponent(location.hash.slice(9)) : undefined;
    $('#fleet').hidden = route !== undefined;
    $('#device').hidden = route === undefined;
    const q = new URLSearchParams({ sort: view.sort, order: view.order, ...(view.q ? { q: view.q } : {}), ...(view.state ? { state: view.state } : {}) });
    const [summary, devices, gateways, alerts] = await Promise.all([api('/api/summary'), api(`/api/devices?${q}`), api('/api/gateways/health'), api('/api/alerts?limit=100')]);
    renderSummary(summary);
    renderDevices(devices);
    renderGateways(gateways);
    renderAlerts(alerts);
    if (route !== undefined) await renderDevicePage(route);
    document.body.dataset.updated = String(Date.now());
  } catch (err) {
    $('#links').textContent = `API unreachable: ${err.message}`;
  }
}

$('#search').addEventListener('input', (e) => { view.q = e.target.value; void refresh(); });
$('#state').addEventListener('change', (e) => { view.state = e.target.value; void refresh(); });
$('#devices thead').addEventListener('click', (e) => {
  const sort = e.target.dataset.sort;
  if (!sort) return;
  view.order = view.sort === sort && view.order === 'asc' ? 'desc' : 'asc';
  view.sort = sort;
  void refresh();
});
$('#devices tbody').addEventListener('click', (e) => {
  const row = e.target.closest('tr[data-device]');
  if (row) location.hash = `#/device/${encodeURIComponent(row.dataset.device)}`;
});
$('#alerts').addEventListener('click', async (e) => {
  const id = e.target.dataset.ack;
  if (!id) return;
  await api(`/api/alerts/${id}/ack`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ by: 'dashboard' }) }).catch((err) => alert(err.message));
  void refresh();
});
window.addEventListener('hashchange', () => void refresh());
void refresh();
setInterval(() => void refresh(), 1000);
