// The fleet dashboard: plain ES module, no build step; charts by uPlot (served by the ingestor
// from its node_modules, /dashboard/vendor/uplot.js). Polls the ops API every 2 s for page-sized
// answers only (one page of devices, grouped alerts), and shows every panel greyed with the age of
// its data when the API stops answering. A token given as ?token=... is kept in localStorage and
// sent as a Bearer token; actions are recorded under that token's name.
const params = new URLSearchParams(location.search);
if (params.get('token')) localStorage.setItem('ferry-token', params.get('token'));
const token = localStorage.getItem('ferry-token');
const PAGE = 50;
const POLL_MS = 2000;
const view = { sort: 'liveness', order: 'desc', q: '', state: '', gateway: '', group: false, offset: 0, range: '1h' };
const dl = { code: '', gateway: '', device: '', replayed: false, selected: null, outcome: null };
const $ = (sel) => document.querySelector(sel);
let me = { name: '?', role: 'read' };
let lastOk = null;
let charts = [];
let chartKey = '';
let chartFetchedAt = 0;

class ApiError extends Error {
  constructor(path, status, body) {
    super(`${path}: ${status}${body?.error ? ` ${body.error}` : ''}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, init = {}) {
  const headers = { ...(init.headers || {}), ...(token ? { authorization: `Bearer ${token}` } : {}) };
  const res = await fetch(path, { ...init, headers });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(path, res.status, body);
  return body;
}

const post = (path, body) => api(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });

function esc(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function span(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} d`;
}

function ago(ms) {
  if (ms === undefined || ms === null) return '—';
  return `${span(Date.now() - ms)} ago`;
}

function duration(ms) {
  return ms === null || ms === undefined ? '—' : span(ms);
}

const time = (ms) => new Date(ms).toLocaleString();

// ---- units and thresholds ----
// The wire carries no units: these are the usual ones for well-known metric names (and name
// suffixes such as _c, _pct, _v); anything else is shown bare.
const UNITS = {
  temperature: '°C', temp: '°C', humidity: '%', battery: '%', rssi: 'dBm', snr: 'dB', voltage: 'V', current: 'A', power: 'W',
  energy: 'kWh', pressure: 'hPa', co2: 'ppm', illuminance: 'lx', lux: 'lx', speed: 'm/s', distance: 'm', frequency: 'Hz',
};
const SUFFIXES = [[/_c$/i, '°C'], [/_f$/i, '°F'], [/_(pct|percent)$/i, '%'], [/_v$/i, 'V'], [/_a$/i, 'A'], [/_w$/i, 'W'], [/_kwh$/i, 'kWh'], [/_hpa$/i, 'hPa'], [/_ppm$/i, 'ppm'], [/_dbm$/i, 'dBm'], [/_ms$/i, 'ms'], [/_s$/i, 's']];

/** A battery given as a cell voltage (3.71), not a percentage (a whole number up to 100). */
const isVolts = (v) => typeof v === 'number' && v <= 4.5 && !Number.isInteger(v);

function unitOf(metric, value) {
  const key = metric.toLowerCase();
  if (key === 'battery' && isVolts(value)) return 'V';
  if (UNITS[key]) return UNITS[key];
  for (const [re, unit] of SUFFIXES) if (re.test(metric)) return unit;
  for (const [name, unit] of Object.entries(UNITS)) if (key.endsWith(`_${name}`) || key.startsWith(`${name}_`)) return unit;
  return '';
}

function num(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '—';
  const a = Math.abs(v);
  return a !== 0 && (a < 0.01 || a >= 1e6) ? v.toExponential(2) : String(Number(v.toPrecision(a >= 100 ? 5 : 4)));
}

const withUnit = (v, unit) => (typeof v === 'number' ? `${num(v)}${unit ? ` ${unit}` : ''}` : '—');

/** Battery: below 20 % (3.3 V) low, below 10 % (3.0 V) critical. */
function batteryLevel(v) {
  if (typeof v !== 'number') return '';
  const [low, crit] = isVolts(v) ? [3.3, 3.0] : [20, 10];
  return v < crit ? 'crit' : v < low ? 'low' : 'ok';
}

/** RSSI: below -80 dBm weak, below -95 dBm critical. */
function rssiLevel(v) {
  if (typeof v !== 'number') return '';
  return v < -95 ? 'crit' : v < -80 ? 'low' : 'ok';
}

const cell = (v, unit, level) => `<td class="level ${level}" data-level="${level}">${esc(withUnit(v, unit))}</td>`;

// ---- summary, devices, gateways ----

function renderSummary(s) {
  const d = s.devices;
  // Every state has a card, so the state cards add up to the total.
  const cards = [
    ['devices', d.total, 'devices'],
    ['online', d.online, 'online'],
    ['suspect', d.suspect, 'suspect'],
    ['offline', d.offline, 'offline'],
    ['flapping', d.flapping, 'flapping'],
    ['unreachable', d.unreachable, 'unreachable'],
    ['unknown', d.unknown, 'unknown'],
    ['alerts', s.alerts.firing, 'alerts firing'],
    ['gateways', `${s.gateways.online}/${s.gateways.total}`, 'gateways online'],
  ];
  $('#summary').innerHTML = cards.map(([cls, n, label]) => `<a class="card ${cls}" data-card="${cls}" ${['online', 'suspect', 'offline', 'flapping', 'unreachable', 'unknown'].includes(cls) ? `href="#/" data-filter-state="${cls}"` : ''}><b>${esc(n)}</b><small>${esc(label)}</small></a>`).join('');
  const links = s.links ?? { broker: true, sink: true };
  $('#links').innerHTML = `<span class="${links.broker ? 'ok' : 'bad'}">broker ${links.broker ? 'up' : 'down'}</span><span class="${links.sink ? 'ok' : 'bad'}">database ${links.sink ? 'up' : 'down'}</span>${s.held ? '<span class="bad">alerts held</span>' : ''}`;
}

function sortHeaders() {
  for (const th of document.querySelectorAll('#devices th[data-sort]')) {
    const active = th.dataset.sort === view.sort;
    th.setAttribute('aria-sort', active ? (view.order === 'asc' ? 'ascending' : 'descending') : 'none');
    th.dataset.arrow = active ? (view.order === 'asc' ? '▲' : '▼') : '';
  }
}

function deviceRow(d) {
  return `<tr class="${esc(d.liveness)}" data-device="${esc(d.deviceId)}">
      <td class="key">${esc(d.deviceId)}</td><td class="key"><span class="state ${esc(d.liveness)}">${esc(d.liveness)}</span></td><td class="opt">${esc(d.gatewayId ?? '—')}</td>
      <td>${ago(Math.max(d.lastDataAt ?? 0, d.lastStatusAt ?? 0) || null)}</td><td class="opt">${d.ratePerMin === null ? '—' : d.ratePerMin.toFixed(1)}</td>
      <td class="opt">${d.completeness === null ? '—' : `${(d.completeness * 100).toFixed(0)} %`}</td>${cell(d.battery, unitOf('battery', d.battery), batteryLevel(d.battery))}${cell(d.rssi, 'dBm', rssiLevel(d.rssi))}
      <td class="opt">${d.skewMs === undefined ? '—' : `${Math.round(d.skewMs)} ms`}</td><td class="opt">${esc(d.firmware ?? '—')}</td></tr>`;
}

function renderDevices(list, fleetTotal) {
  sortHeaders();
  const rows = [];
  let gateway;
  for (const d of list.devices) {
    if (view.group && d.gatewayId !== gateway) {
      gateway = d.gatewayId;
      rows.push(`<tr class="group-row" data-group="${esc(gateway ?? '')}"><th colspan="10">gateway ${esc(gateway ?? '— (direct or unknown)')}</th></tr>`);
    }
    rows.push(deviceRow(d));
  }
  const filtered = view.q || view.state || view.gateway;
  const empty = fleetTotal === 0 ? 'No device has reported yet: devices appear with their first reading.' : 'No device matches these filters.';
  $('#devices tbody').innerHTML = rows.join('') || `<tr class="empty"><td colspan="10">${esc(empty)}</td></tr>`;
  const first = list.total === 0 ? 0 : view.offset + 1;
  const last = view.offset + list.devices.length;
  $('#count').innerHTML = `<b data-shown>${last - first + (list.total === 0 ? 0 : 1)} of ${list.total}</b> <span class="muted">(${first}–${last}${filtered && fleetTotal !== undefined ? `, ${fleetTotal} in the fleet` : ''})</span>`;
  $('#count').dataset.total = String(list.total);
  $('#prev').disabled = view.offset === 0;
  $('#next').disabled = last >= list.total;
}

/** `38 s`, `5 min`, `2 h`: the age of a gateway's last report, as the API measured it (no browser clock). */
function age(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
}

function reported(g) {
  return g.ageMs === null || g.ageMs === undefined ? 'never reported' : `reported ${age(g.ageMs)} ago`;
}

// A gateway's figures are as old as its last status: once that is overdue (`stale`), the row says
// so and its figures are shown as the last known, not as current.
function renderGateways(list) {
  $('#gateways tbody').innerHTML =
    list.gateways
      .map((g) => {
        const stale = g.stale === true;
        const old = stale ? ' class="last-known" title="last known figure, not current"' : '';
        const state = `<span class="state ${esc(g.state)}">${esc(g.state)}</span>${stale ? ' <span class="stale-badge">stale</span>' : ''}`;
        return `<tr data-gateway="${esc(g.gatewayId)}" data-stale="${stale}"${stale ? ' class="stale"' : ''}><td><a href="#/gateway/${encodeURIComponent(g.gatewayId)}">${esc(g.gatewayId)}</a></td><td>${state}</td>
      <td data-reported>${esc(reported(g))}</td><td>${g.devices}</td><td${old} data-backlog>${g.outboxDepth ?? '—'}</td><td${old}>${duration(g.oldestUnsentAgeMs)}</td><td${old}>${g.dropped}</td><td${old}>${esc(g.uplink ?? '—')}</td><td>${esc(g.version ?? '—')}</td></tr>`;
      })
      .join('') || '<tr class="empty"><td colspan="9">No gateway has reported a status yet.</td></tr>';
}

/** The gateway filter offers every gateway devices report through, with its device count. */
function renderGatewayFilter(facet) {
  const select = $('#gateway');
  const entries = Object.entries(facet ?? {});
  const ids = entries.map(([id, n]) => `${id}\t${n}`);
  if (select.dataset.ids !== ids.join('\n')) {
    select.dataset.ids = ids.join('\n');
    select.innerHTML = `<option value="">all gateways</option>${entries.map(([id, n]) => `<option value="${esc(id)}"${id === view.gateway ? ' selected' : ''}>${esc(id)} (${n})</option>`).join('')}`;
  }
}

// ---- alerts ----

function alertItem(a, actions) {
  const ack = a.acknowledged;
  const flags = [
    ack ? `<span class="tag acked" data-acked-by="${esc(ack.by)}">acked by ${esc(ack.by)}${ack.comment ? `: ${esc(ack.comment)}` : ''}</span>` : '',
    a.silencedBy ? `<span class="tag silenced" data-silenced="${a.silencedBy.id}">silenced by ${esc(a.silencedBy.by)} until ${esc(new Date(a.silencedBy.endsAt).toLocaleTimeString())}</span>` : '',
  ].join('');
  const buttons = !actions || me.role !== 'admin' ? '' : ack
    ? `<button type="button" data-unack="${a.id}">un-ack</button>`
    : `<button type="button" data-ack="${a.id}">acknowledge</button>`;
  return `<li class="alert ${esc(a.severity)} ${esc(a.state)}${a.silencedBy ? ' silenced' : ''}" data-alert="${a.id}" data-subject="${esc(a.subject.id)}">
    <div><span class="sev ${esc(a.severity)}">${esc(a.severity)}</span> <b>${esc(a.rule)}</b> · ${esc(a.subject.id)} · ${esc(a.state)} ${flags}</div>
    <div>${esc(a.summary)}</div>
    <div class="meta">since ${ago(a.firingAt ?? a.startsAt)} ${buttons}
      ${actions && me.role === 'admin' ? `<input class="comment" data-comment="${a.id}" placeholder="comment (optional)" aria-label="comment for alert ${a.id}">` : ''}</div></li>`;
}

function renderAlertGroups(target, answer, actions) {
  // Keep a half-typed comment across a refresh.
  const typing = document.activeElement?.dataset?.comment;
  const typed = typing ? document.activeElement.value : '';
  const html = answer.groups
    .map((g) => {
      const more = g.count - g.alerts.length;
      return `<li class="group ${esc(g.severity)}" data-group-rule="${esc(g.rule)}" data-group-gateway="${esc(g.gatewayId ?? '')}" data-count="${g.count}">
        <div class="group-head"><span class="sev ${esc(g.severity)}">${esc(g.severity)}</span> <b>${esc(g.rule)}</b> · ${g.gatewayId ? `gateway ${esc(g.gatewayId)}` : 'no gateway'}
          · <b class="count">${g.count}</b> ${g.count === 1 ? 'alert' : 'alerts'}
          <span class="muted">(${g.firing} firing, ${g.pending} pending, ${g.acknowledged} acked, ${g.silenced} silenced)</span></div>
        <ul>${g.alerts.map((a) => alertItem(a, actions)).join('')}</ul>${more > 0 ? `<div class="muted more">and ${more} more</div>` : ''}</li>`;
    })
    .join('');
  target.innerHTML = html || '<li class="none empty">No active alerts: every rule is quiet.</li>';
  if (typing) {
    const input = target.querySelector(`[data-comment="${typing}"]`);
    if (input) {
      input.value = typed;
      input.focus();
    }
  }
}

function renderSilences(list) {
  $('#silences tbody').innerHTML =
    list
      .map((s) => {
        const matches = [s.matchers.rule ? `rule ${s.matchers.rule}` : '', s.matchers.subject ? `subject ${s.matchers.subject}` : ''].filter(Boolean).join(', ');
        return `<tr data-silence="${s.id}"><td>${esc(matches)}</td><td>${esc(s.by)}</td><td>${esc(time(s.endsAt))} (in ${span(s.endsAt - Date.now())})</td><td>${esc(s.comment ?? '')}</td>
        <td>${me.role === 'admin' ? `<button type="button" data-expire="${s.id}">expire</button>` : ''}</td></tr>`;
      })
      .join('') || '<tr class="empty"><td colspan="5">No active silences.</td></tr>';
}

function renderHistory(answer) {
  $('#history tbody').innerHTML =
    answer.alerts
      .map((a) => {
        const acks = a.acks.map((e) => `${e.event === 'acknowledged' ? 'acked' : 'un-acked'} by ${e.detail}`).join('; ');
        return `<tr data-history="${a.id}"><td>${esc(a.rule)}</td><td>${esc(a.subject.id)}</td><td><span class="sev ${esc(a.severity)}">${esc(a.severity)}</span></td>
        <td>${a.firingAt ? esc(time(a.firingAt)) : '—'}</td><td>${a.endsAt ? esc(time(a.endsAt)) : '—'}</td><td data-acks>${esc(acks || '—')}</td><td data-silencers>${esc(a.silencedByHistory.join(', ') || '—')}</td></tr>`;
      })
      .join('') || '<tr class="empty"><td colspan="7">No resolved alerts yet.</td></tr>';
}

// ---- device page and charts ----

const RANGES = [['15m', '15 min'], ['1h', '1 h'], ['24h', '24 h'], ['7d', '7 d']];
const COLOURS = ['#58a6ff', '#3fb950', '#d2a8ff', '#f0883e', '#ff7b72', '#79c0ff'];

/** Y bounds with room: a span under 10 % of the value (or under 1 around zero) is widened, so a 0.03 change is not a cliff. */
function paddedRange(min, max) {
  if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
  const mid = (min + max) / 2;
  const minSpan = Math.max(Math.abs(mid) * 0.1, 1);
  const spanY = Math.max(max - min, minSpan);
  const pad = spanY * 0.15;
  return [mid - spanY / 2 - pad, mid + spanY / 2 + pad];
}

/** Inserts a null between two points further apart than 3 typical steps (and the expected interval): uPlot breaks the line there. */
function withGaps(points, expectedMs) {
  if (points.length < 2) return points;
  const steps = [];
  for (let i = 1; i < points.length; i++) steps.push(points[i][0] - points[i - 1][0]);
  const median = steps.slice().sort((a, b) => a - b)[Math.floor(steps.length / 2)];
  const limit = Math.max(median * 3, (expectedMs ?? 0) * 3);
  const out = [points[0]];
  for (let i = 1; i < points.length; i++) {
    if (points[i][0] - points[i - 1][0] > limit) out.push([points[i - 1][0] + 1, null, null, null]);
    out.push(points[i]);
  }
  return out;
}

function destroyCharts() {
  for (const c of charts) c.destroy();
  charts = [];
}

function drawChart(el, metric, answer, points, colour, expectedMs) {
  const unit = unitOf(metric, points.find((p) => typeof p[1] === 'number')?.[1]);
  const data = withGaps(points, expectedMs);
  const xs = data.map((p) => p[0] / 1000);
  const rollup = answer.source === 'rollup';
  const fmt = (u, v) => (v === null || v === undefined ? '—' : withUnit(v, unit));
  const series = [{ label: 'time', value: (u, v) => (v === null || v === undefined ? '—' : new Date(v * 1000).toLocaleString()) }, { label: rollup ? `${metric} mean` : metric, stroke: colour, width: 2, spanGaps: false, value: fmt, points: { show: data.length <= 60, size: 6, fill: colour } }];
  const columns = [xs, data.map((p) => p[1])];
  if (rollup) {
    series.push({ label: 'min', stroke: `${colour}88`, width: 1, dash: [4, 4], spanGaps: false, value: fmt, points: { show: false } }, { label: 'max', stroke: `${colour}88`, width: 1, dash: [4, 4], spanGaps: false, value: fmt, points: { show: false } });
    columns.push(data.map((p) => p[2] ?? null), data.map((p) => p[3] ?? null));
  }
  const width = Math.max(260, el.clientWidth - 4);
  const grid = { stroke: '#222b35', width: 1 };
  const chart = new globalThis.uPlot(
    {
      width,
      height: 200,
      scales: { x: { time: true, range: () => [answer.from / 1000, answer.to / 1000] }, y: { range: (u, min, max) => paddedRange(min, max) } },
      series,
      axes: [
        { stroke: '#8b98a5', grid, ticks: grid },
        { stroke: '#8b98a5', grid, ticks: grid, size: 70, values: (u, ticks) => ticks.map((t) => withUnit(t, unit)) },
      ],
      cursor: { points: { size: 8 } },
      // What the chart spans once drawn, for tests and tools: the x scale is time, in seconds.
      hooks: { draw: [(u) => Object.assign(el.dataset, { xMin: String(u.scales.x.min), xMax: String(u.scales.x.max) })] },
      legend: { live: true },
    },
    columns,
    el.querySelector('.plot'),
  );
  charts.push(chart);
  el.dataset.points = String(points.length);
  el.dataset.unit = unit;
}

function sourceNote(answer) {
  switch (answer.source) {
    case 'rollup':
      return `${answer.window} rollups from the database (mean, min and max per window)`;
    case 'database':
      return `raw readings from the database${answer.bucketMs ? `, averaged per ${span(answer.bucketMs)}` : ''}${answer.truncated ? '; too many to read at once: the newest are missing' : ''}`;
    case 'memory':
      return `the database cannot be read back: the last readings held in memory${answer.coveredFrom ? `, since ${time(answer.coveredFrom)}` : ''}`;
    default:
      return 'no store can answer for this device';
  }
}

async function renderCharts(id, expectedMs, force) {
  const key = `${id}|${view.range}`;
  // Charts are redrawn on a range change and every 10 s (a minute for the long ranges), not on every poll.
  const every = view.range === '24h' || view.range === '7d' ? 60_000 : 10_000;
  if (!force && key === chartKey && Date.now() - chartFetchedAt < every) return;
  const answer = await api(`/api/devices/${encodeURIComponent(id)}/series?range=${view.range}&maxPoints=600`);
  chartKey = key;
  chartFetchedAt = Date.now();
  const box = $('#charts');
  if (!box) return;
  destroyCharts();
  const metrics = Object.keys(answer.series).sort();
  box.dataset.source = answer.source;
  box.dataset.shownRange = answer.range;
  $('#chart-source').textContent = sourceNote(answer);
  if (metrics.length === 0) {
    box.innerHTML = `<p class="empty" data-empty-chart>No readings in the last ${esc(RANGES.find(([r]) => r === view.range)?.[1] ?? view.range)}${answer.source === 'memory' ? ' held in memory' : ''}.</p>`;
    return;
  }
  box.innerHTML = metrics.map((m) => `<div class="chart" data-chart="${esc(m)}"><h3>${esc(m)}</h3><div class="plot"></div></div>`).join('');
  metrics.forEach((m, i) => drawChart(box.querySelector(`[data-chart="${CSS.escape(m)}"]`), m, answer, answer.series[m], COLOURS[i % COLOURS.length], answer.source === 'rollup' ? null : expectedMs));
}

async function renderDevicePage(id) {
  const path = `/api/devices/${encodeURIComponent(id)}`;
  const { device: d, alerts, grafana } = await api(`${path}?limit=1`);
  const page = $('#device');
  if (page.dataset.device !== id) {
    page.dataset.device = id;
    chartKey = '';
    destroyCharts();
    page.innerHTML = `<div class="panel"><p><a href="#/">← fleet</a></p><div id="device-head"></div>
      <div class="toolbar wrap"><h3>Readings</h3><span class="ranges" role="group" aria-label="time range">${RANGES.map(([r, label]) => `<button type="button" data-range="${r}" aria-pressed="${r === view.range}">${label}</button>`).join('')}</span></div>
      <p id="chart-source" class="muted"></p><div id="charts"></div><div id="device-tables"></div></div>`;
  }
  const lastReading = d.lastDataAt ?? d.lastStatusAt;
  const notOnline = d.liveness !== 'online';
  $('#device-head').innerHTML = `<h2>${esc(d.deviceId)} <span class="state ${esc(d.liveness)}">${esc(d.liveness)}</span>
      ${notOnline ? `<span class="last-reading" data-last-reading>${lastReading ? `last reading ${esc(ago(lastReading))}` : 'no reading yet'}</span>` : ''}</h2>
    <p>gateway ${d.gatewayId ? `<a href="#/gateway/${encodeURIComponent(d.gatewayId)}" data-gateway-link>${esc(d.gatewayId)}</a>` : '—'}${grafana ? ` <a class="grafana" href="${esc(grafana)}" target="_blank" rel="noopener" data-grafana>Grafana ↗</a>` : ''} · timeout ${duration(d.timeoutMs)} · interval ${duration(d.expectedIntervalMs)} · battery <span class="level ${batteryLevel(d.battery)}">${esc(withUnit(d.battery, unitOf('battery', d.battery)))}</span> · rssi <span class="level ${rssiLevel(d.rssi)}">${esc(withUnit(d.rssi, 'dBm'))}</span> · firmware ${esc(d.firmware ?? '—')}</p>`;
  page.classList.toggle('not-online', notOnline);
  $('#device-tables').innerHTML = `<h3>Health history</h3><table><tbody>${d.history.slice().reverse().map((e) => `<tr><td>${esc(time(e.at))}</td><td>${esc(e.from)} → ${esc(e.to)}</td><td>${esc(e.reason)}</td></tr>`).join('') || '<tr class="empty"><td>No state changes recorded.</td></tr>'}</tbody></table>
    <h3>Alerts</h3><table><tbody>${alerts.map((a) => `<tr><td>${esc(a.rule)}</td><td>${esc(a.state)}</td><td>${esc(a.summary)}</td></tr>`).join('') || '<tr class="empty"><td>No alerts for this device.</td></tr>'}</tbody></table>`;
  for (const b of document.querySelectorAll('[data-range]')) b.setAttribute('aria-pressed', String(b.dataset.range === view.range));
  await renderCharts(id, d.expectedIntervalMs);
}

// ---- gateway page ----

const GW_RANGES = [['15m', '15 min'], ['1h', '1 h'], ['6h', '6 h'], ['24h', '24 h']];
const gw = { range: '1h', chartKey: '', fetchedAt: 0, charts: [] };

/** Breaks the line where statuses stopped: a step over three times what the point stands for (its statuses x the interval). */
function gatewayColumns(points, intervalMs) {
  const xs = [];
  const backlog = [];
  const drops = [];
  let prev;
  for (const p of points) {
    if (prev !== undefined && p.at - prev.at > 3 * intervalMs * Math.max(1, p.statuses) + 2000) {
      xs.push((prev.at + 1) / 1000);
      backlog.push(null);
      drops.push(null);
    }
    xs.push(p.at / 1000);
    backlog.push(p.backlog);
    drops.push(p.drops);
    prev = p;
  }
  return [xs, backlog, drops];
}

function drawGatewayChart(el, answer) {
  for (const c of gw.charts) c.destroy();
  gw.charts = [];
  const grid = { stroke: '#222b35', width: 1 };
  const count = (u, v) => (v === null || v === undefined ? '—' : String(v));
  const chart = new globalThis.uPlot(
    {
      width: Math.max(260, el.clientWidth - 4),
      height: 220,
      scales: { x: { time: true, range: () => [answer.from / 1000, answer.to / 1000] }, n: { range: (u, min, max) => [0, Math.max(10, (max ?? 0) * 1.15)] }, d: { range: (u, min, max) => [0, Math.max(5, (max ?? 0) * 1.15)] } },
      series: [
        { label: 'time', value: (u, v) => (v === null || v === undefined ? '—' : new Date(v * 1000).toLocaleString()) },
        { label: 'backlog (readings)', scale: 'n', stroke: '#58a6ff', width: 2, spanGaps: false, value: count, points: { show: answer.points.length <= 60, size: 6, fill: '#58a6ff' } },
        { label: 'dropped', scale: 'd', stroke: '#ff7b72', fill: '#ff7b7233', width: 1, spanGaps: false, value: count, points: { show: false } },
      ],
      axes: [
        { stroke: '#8b98a5', grid, ticks: grid },
        { scale: 'n', stroke: '#8b98a5', grid, ticks: grid, size: 60 },
        { scale: 'd', side: 1, stroke: '#ff7b72', grid: { show: false }, ticks: grid, size: 50 },
      ],
      cursor: { points: { size: 8 } },
      hooks: { draw: [(u) => Object.assign(el.dataset, { xMin: String(u.scales.x.min), xMax: String(u.scales.x.max) })] },
      legend: { live: true },
    },
    gatewayColumns(answer.points, answer.statusIntervalMs),
    el.querySelector('.plot'),
  );
  gw.charts.push(chart);
  el.dataset.points = String(answer.points.length);
}

async function renderGatewayPage(id) {
  const enc = encodeURIComponent(id);
  const page = $('#gateway-view');
  if (page.dataset.gateway !== id) {
    page.dataset.gateway = id;
    gw.chartKey = '';
    for (const c of gw.charts) c.destroy();
    gw.charts = [];
    page.innerHTML = `<div class="panel"><p><a href="#/">← fleet</a></p><div id="gw-head"></div>
      <div class="toolbar wrap"><h3>Backlog and drops</h3><span class="ranges" role="group" aria-label="time range">${GW_RANGES.map(([r, label]) => `<button type="button" data-gw-range="${r}" aria-pressed="${r === gw.range}">${label}</button>`).join('')}</span></div>
      <p class="muted">From the gateway's statuses, kept in the ingestor's memory for 24 h (older hours merged: the largest backlog of each span); lost at a restart.</p>
      <div id="gw-chart" class="chart" data-chart="gateway"><div class="plot"></div></div></div>
      <div class="panel"><div class="toolbar"><h3>Devices</h3><span id="gw-dev-count" class="muted"></span></div><div class="table-wrap"><table id="gw-devices"><thead><tr><th>Device</th><th>State</th><th class="opt">Gateway</th><th>Last seen</th><th class="opt">Rate/min</th><th class="opt">Complete</th><th>Battery</th><th>RSSI</th><th class="opt">Skew</th><th class="opt">Firmware</th></tr></thead><tbody></tbody></table></div></div>
      <div class="panel"><div class="toolbar"><h3>Dead letters</h3><a href="#/deadletters" data-dl-gateway="${esc(id)}" class="small">all in the dead-letter view</a></div><div class="table-wrap"><table id="gw-deadletters"><thead><tr><th>#</th><th>When</th><th>Code</th><th>Device</th><th>Reason</th></tr></thead><tbody></tbody></table></div></div>`;
  }
  const every = gw.range === '24h' ? 60_000 : 10_000;
  const key = `${id}|${gw.range}`;
  const chartDue = key !== gw.chartKey || Date.now() - gw.fetchedAt >= every;
  const [history, devices, letters] = await Promise.all([
    api(`/api/gateways/${enc}/history?range=${gw.range}`),
    api(`/api/devices?${new URLSearchParams({ gateway: id, sort: 'id', order: 'asc', limit: String(PAGE) })}`),
    api(`/api/deadletters?${new URLSearchParams({ gatewayId: id, limit: '20' })}`),
  ]);
  const stale = history.stale === true;
  const st = history.status;
  const dropped = st?.dropped ? Object.values(st.dropped).reduce((a, b) => a + b, 0) : null;
  page.classList.toggle('stale', stale);
  page.dataset.stale = String(stale);
  $('#gw-head').innerHTML = `<h2>gateway ${esc(id)} ${st ? `<span class="state ${esc(st.state)}">${esc(st.state)}</span>` : ''}${stale ? ' <span class="stale-badge" data-stale-badge>stale</span>' : ''}
      <span class="muted" data-reported>${esc(reported(history))}${stale && history.reportedAt ? ' · figures are the last known' : ''}</span>${history.grafana ? ` <a class="grafana" href="${esc(history.grafana)}" target="_blank" rel="noopener" data-grafana>Grafana ↗</a>` : ''}</h2>
    <p class="figures"${stale ? ' title="last known figures, not current"' : ''}><span>backlog <b data-backlog>${st?.outbox ? st.outbox.depth : '—'}</b></span><span>oldest unsent ${st?.outbox?.oldestTs ? duration(history.to - st.outbox.oldestTs) : '—'}</span>
      <span>dropped ${dropped ?? '—'}</span><span>uplink ${esc(st?.uplink ?? '—')}</span><span>disk free ${st?.disk ? `${(st.disk.freeBytes / 1e9).toFixed(1)} of ${(st.disk.totalBytes / 1e9).toFixed(1)} GB` : '—'}</span>
      <span>version ${esc(st?.version ?? '—')}</span><span>reports every ${history.statusIntervalMs < 1000 ? `${history.statusIntervalMs} ms` : duration(history.statusIntervalMs)}</span></p>`;
  for (const b of page.querySelectorAll('[data-gw-range]')) b.setAttribute('aria-pressed', String(b.dataset.gwRange === gw.range));
  if (chartDue) {
    gw.chartKey = key;
    gw.fetchedAt = Date.now();
    const el = $('#gw-chart');
    el.dataset.shownRange = history.range;
    if (history.points.length === 0) {
      for (const c of gw.charts) c.destroy();
      gw.charts = [];
      el.dataset.points = '0';
      el.innerHTML = `<p class="empty" data-empty-chart>No status from this gateway in the last ${esc(GW_RANGES.find(([r]) => r === gw.range)?.[1] ?? gw.range)} (since this ingestor started).</p><div class="plot" hidden></div>`;
    } else {
      if (el.querySelector('[data-empty-chart]')) el.innerHTML = '<div class="plot"></div>';
      drawGatewayChart(el, history);
    }
  }
  $('#gw-devices tbody').innerHTML = devices.devices.map(deviceRow).join('') || '<tr class="empty"><td colspan="10">No device reports through this gateway.</td></tr>';
  $('#gw-dev-count').textContent = `${devices.devices.length} of ${devices.total}`;
  $('#gw-deadletters tbody').innerHTML =
    letters.entries.map((e) => `<tr data-gw-letter="${e.id}"><td>${e.id}</td><td>${esc(ago(e.at))}</td><td>${esc(e.code)}</td><td>${esc(e.source.deviceId ?? '—')}</td><td class="reason">${esc(e.reason)}</td></tr>`).join('') ||
    '<tr class="empty"><td colspan="5">No dead letters from this gateway.</td></tr>';
}

// ---- dead letters ----

async function renderDeadLetters() {
  const q = new URLSearchParams({ limit: '100', ...(dl.code ? { code: dl.code } : {}), ...(dl.gateway ? { gatewayId: dl.gateway } : {}), ...(dl.device ? { deviceId: dl.device } : {}), ...(dl.replayed ? { includeReplayed: 'true' } : {}) });
  const answer = await api(`/api/deadletters?${q}`);
  const codes = Object.keys(answer.counts?.byCode ?? {}).sort();
  const select = $('#dl-code');
  if (select.dataset.codes !== codes.join(',')) {
    select.dataset.codes = codes.join(',');
    select.innerHTML = `<option value="">all codes</option>${[...new Set([...codes, ...(dl.code ? [dl.code] : [])])].map((c) => `<option${c === dl.code ? ' selected' : ''}>${esc(c)}</option>`).join('')}`;
  }
  const filtered = dl.code || dl.gateway || dl.device;
  $('#dl-count').textContent = `${answer.entries.length}${answer.entries.length === 100 ? '+' : ''} shown · ${answer.counts?.held ?? 0} held in all`;
  $('#deadletters tbody').innerHTML =
    answer.entries
      .map((e) => `<tr data-letter="${e.id}"${e.id === dl.selected ? ' class="selected"' : ''}><td>${e.id}</td><td>${esc(ago(e.at))}</td><td>${esc(e.code)}</td><td>${esc(e.source.gatewayId ?? '—')}</td><td>${esc(e.source.deviceId ?? '—')}</td>
        <td class="reason">${esc(e.reason)}</td><td>${e.replayedAt ? esc(ago(e.replayedAt)) : '—'}</td></tr>`)
      .join('') || `<tr class="empty"><td colspan="7">${filtered ? 'No dead letter matches these filters.' : 'No dead letters: every reading was accepted.'}</td></tr>`;
  if (dl.selected !== null) await renderLetter(dl.selected);
}

async function renderLetter(id) {
  const e = await api(`/api/deadletters/${id}`);
  const box = $('#dl-detail');
  box.hidden = false;
  let payload = e.payload;
  if (e.payloadEncoding === 'utf8') {
    try {
      payload = JSON.stringify(JSON.parse(e.payload), null, 2);
    } catch {
      // not JSON: shown as it is
    }
  }
  const preview = payload.length > 4000 ? `${payload.slice(0, 4000)}\n…` : payload;
  const canReplay = me.role === 'admin';
  box.innerHTML = `<h2>Dead letter #${e.id} <small class="muted">${esc(e.origin)}</small></h2>
    <p><b>${esc(e.code)}</b>: ${esc(e.reason)}</p>
    <p class="muted">at ${esc(time(e.at))} · gateway ${esc(e.source.gatewayId ?? '—')} · device ${esc(e.source.deviceId ?? '—')}${e.source.topic ? ` · topic ${esc(e.source.topic)}` : ''} · ${e.payloadBytes} bytes${e.payloadTruncated ? ' (only the first bytes kept)' : ''}${e.replayedAt ? ` · replayed ${esc(ago(e.replayedAt))}` : ''}</p>
    ${e.issues.length ? `<details><summary>${e.issues.length} issues</summary><pre>${esc(JSON.stringify(e.issues, null, 2))}</pre></details>` : ''}
    <h3>Payload (${esc(e.payloadEncoding)})</h3><pre class="payload" data-payload>${esc(preview)}</pre>
    <p>${canReplay ? `<button type="button" data-replay="${e.id}">replay</button>` : '<span class="muted">replay needs an admin token</span>'}
      <span id="dl-outcome" ${dl.outcome && dl.outcome.id === e.id ? `data-outcome="${esc(dl.outcome.outcome)}"` : ''}>${dl.outcome && dl.outcome.id === e.id ? esc(dl.outcome.text) : ''}</span></p>`;
}

// ---- the loop ----

function route() {
  const h = location.hash;
  if (h.startsWith('#/device/')) return { name: 'device', id: decodeURIComponent(h.slice(9)) };
  if (h.startsWith('#/gateway/')) return { name: 'gateway', id: decodeURIComponent(h.slice(10)) };
  if (h.startsWith('#/alerts')) return { name: 'alerts' };
  if (h.startsWith('#/deadletters')) return { name: 'deadletters' };
  return { name: 'fleet' };
}

function setConnection(ok, err) {
  const banner = $('#banner');
  document.body.classList.toggle('disconnected', !ok);
  if (ok) {
    banner.hidden = true;
    return;
  }
  banner.hidden = false;
  const auth = err instanceof ApiError && (err.status === 401 || err.status === 403);
  banner.textContent = auth
    ? `The API refused this page (${err.status}): open it with ?token=<API token>. ${lastOk ? `Data as of ${new Date(lastOk).toLocaleTimeString()}.` : ''}`
    : `Connection lost: data as of ${lastOk ? `${new Date(lastOk).toLocaleTimeString()} (${ago(lastOk)})` : 'never (nothing loaded yet)'}. Retrying…`;
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const r = route();
    $('#fleet').hidden = r.name !== 'fleet';
    $('#alert-panel').hidden = r.name !== 'fleet';
    $('#device').hidden = r.name !== 'device';
    $('#gateway-view').hidden = r.name !== 'gateway';
    $('#alerts-view').hidden = r.name !== 'alerts';
    $('#deadletters-view').hidden = r.name !== 'deadletters';
    for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === r.name || ((r.name === 'device' || r.name === 'gateway') && a.dataset.nav === 'fleet'));
    const summary = await api('/api/summary');
    renderSummary(summary);
    if (r.name === 'fleet') {
      const q = new URLSearchParams({ sort: view.sort, order: view.order, limit: String(PAGE), offset: String(view.offset), ...(view.q ? { q: view.q } : {}), ...(view.state ? { state: view.state } : {}), ...(view.gateway ? { gateway: view.gateway } : {}), ...(view.group ? { group: 'gateway' } : {}) });
      const [devices, gateways, groups] = await Promise.all([api(`/api/devices?${q}`), api('/api/gateways/health'), api('/api/alerts/groups?perGroup=5')]);
      // Paged past the end (the fleet shrank, a filter narrowed it): back to the last page.
      if (view.offset > 0 && view.offset >= devices.total) {
        view.offset = Math.max(0, Math.floor((devices.total - 1) / PAGE) * PAGE);
        refreshing = false;
        return refresh();
      }
      renderDevices(devices, summary.devices.total);
      renderGatewayFilter(devices.gateways);
      renderGateways(gateways);
      renderAlertGroups($('#alerts'), groups, true);
    } else if (r.name === 'alerts') {
      const [groups, history] = await Promise.all([api('/api/alerts/groups?perGroup=50'), api('/api/alerts/history?limit=100')]);
      renderAlertGroups($('#alert-groups'), groups, true);
      renderSilences(groups.silences);
      renderHistory(history);
    } else if (r.name === 'deadletters') {
      await renderDeadLetters();
    } else if (r.name === 'gateway') {
      await renderGatewayPage(r.id);
    } else {
      await renderDevicePage(r.id);
    }
    lastOk = Date.now();
    setConnection(true);
    document.body.dataset.updated = String(lastOk);
    // Milliseconds from navigation to the first complete view (bench/dashboard.mjs reads it).
    if (!document.body.dataset.firstRenderMs) document.body.dataset.firstRenderMs = String(Math.round(performance.now()));
  } catch (err) {
    // A device that is gone (forgotten) is not a lost connection.
    if (err instanceof ApiError && err.status === 404 && route().name === 'device') {
      $('#device').innerHTML = '<div class="panel"><p><a href="#/">← fleet</a></p><p class="empty">This device is not known (never seen, or forgotten after a long silence).</p></div>';
      delete $('#device').dataset.device;
    } else if (err instanceof ApiError && err.status === 404 && route().name === 'gateway') {
      $('#gateway-view').innerHTML = '<div class="panel"><p><a href="#/">← fleet</a></p><p class="empty" data-unknown-gateway>This gateway is not known: it has sent no status and no device reports through it.</p></div>';
      delete $('#gateway-view').dataset.gateway;
    } else setConnection(false, err);
  } finally {
    refreshing = false;
  }
}

async function act(fn) {
  try {
    await fn();
  } catch (err) {
    alert(err.message);
  }
  await refresh();
}

async function loadIdentity() {
  try {
    me = await api('/api/whoami');
    $('#whoami').textContent = `${me.name} (${me.role})`;
    document.body.dataset.role = me.role;
  } catch {
    // Shown by the banner at the next refresh.
  }
}

$('#search').addEventListener('input', (e) => {
  view.q = e.target.value;
  view.offset = 0;
  void refresh();
});
$('#state').addEventListener('change', (e) => {
  view.state = e.target.value;
  view.offset = 0;
  void refresh();
});
$('#gateway').addEventListener('change', (e) => {
  view.gateway = e.target.value;
  view.offset = 0;
  void refresh();
});
$('#group').addEventListener('change', (e) => {
  view.group = e.target.checked;
  view.offset = 0;
  void refresh();
});
$('#prev').addEventListener('click', () => {
  view.offset = Math.max(0, view.offset - PAGE);
  void refresh();
});
$('#next').addEventListener('click', () => {
  view.offset += PAGE;
  void refresh();
});
$('#summary').addEventListener('click', (e) => {
  const card = e.target.closest('[data-filter-state]');
  if (!card) return;
  view.state = card.dataset.filterState;
  view.offset = 0;
  $('#state').value = view.state;
  void refresh();
});
$('#devices thead').addEventListener('click', (e) => {
  const sort = e.target.closest('th')?.dataset.sort;
  if (!sort) return;
  view.order = view.sort === sort && view.order === 'asc' ? 'desc' : 'asc';
  view.sort = sort;
  view.offset = 0;
  void refresh();
});
$('#devices tbody').addEventListener('click', (e) => {
  const row = e.target.closest('tr[data-device]');
  if (row) location.hash = `#/device/${encodeURIComponent(row.dataset.device)}`;
});
$('#gateways tbody').addEventListener('click', (e) => {
  const row = e.target.closest('tr[data-gateway]');
  if (row && !e.target.closest('a')) location.hash = `#/gateway/${encodeURIComponent(row.dataset.gateway)}`;
});
$('#gateway-view').addEventListener('click', (e) => {
  const range = e.target.closest('[data-gw-range]')?.dataset.gwRange;
  if (range && range !== gw.range) {
    gw.range = range;
    gw.chartKey = '';
    void refresh();
    return;
  }
  const all = e.target.closest('[data-dl-gateway]');
  if (all) {
    dl.gateway = all.dataset.dlGateway;
    $('#dl-gateway').value = dl.gateway;
  }
  const row = e.target.closest('tr[data-device]');
  if (row) location.hash = `#/device/${encodeURIComponent(row.dataset.device)}`;
});
$('#device').addEventListener('click', (e) => {
  const range = e.target.closest('[data-range]')?.dataset.range;
  if (!range || range === view.range) return;
  view.range = range;
  chartKey = '';
  void refresh();
});
document.addEventListener('click', (e) => {
  const t = e.target;
  const comment = (id) => document.querySelector(`[data-comment="${id}"]`)?.value || undefined;
  if (t.dataset.ack) void act(() => post(`/api/alerts/${t.dataset.ack}/ack`, { comment: comment(t.dataset.ack) }));
  else if (t.dataset.unack) void act(() => post(`/api/alerts/${t.dataset.unack}/unack`, { comment: comment(t.dataset.unack) }));
  else if (t.dataset.expire) void act(() => api(`/api/silences/${t.dataset.expire}`, { method: 'DELETE' }));
  else if (t.dataset.replay) {
    const id = Number(t.dataset.replay);
    t.disabled = true;
    void (async () => {
      const res = await fetch(`/api/deadletters/${id}/replay`, { method: 'POST', headers: token ? { authorization: `Bearer ${token}` } : {} }).catch(() => null);
      const body = res ? await res.json().catch(() => ({})) : {};
      const outcome = body.outcome ?? (res ? `error ${res.status}` : 'unreachable');
      dl.outcome = { id, outcome, text: `replay: ${outcome}${body.code ? ` (${body.code})` : ''}${body.reason ? `: ${body.reason}` : ''}${body.error && !body.outcome ? `: ${body.error}` : ''}` };
      await refresh();
    })();
  } else {
    const row = t.closest('tr[data-letter]');
    if (row) {
      dl.selected = Number(row.dataset.letter);
      void refresh();
    }
  }
});
$('#silence-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const body = { durationMs: Number(f.get('duration')), ...(f.get('rule') ? { rule: f.get('rule') } : {}), ...(f.get('subject') ? { subject: f.get('subject') } : {}), ...(f.get('comment') ? { comment: f.get('comment') } : {}) };
  void act(async () => {
    await post('/api/silences', body);
    e.target.reset();
  });
});
for (const [sel, key] of [['#dl-gateway', 'gateway'], ['#dl-device', 'device']]) {
  $(sel).addEventListener('input', (e) => {
    dl[key] = e.target.value.trim();
    void refresh();
  });
}
$('#dl-code').addEventListener('change', (e) => {
  dl.code = e.target.value;
  void refresh();
});
$('#dl-replayed').addEventListener('change', (e) => {
  dl.replayed = e.target.checked;
  void refresh();
});
window.addEventListener('hashchange', () => void refresh());
window.addEventListener('resize', () => {
  chartKey = '';
  gw.chartKey = '';
});
void loadIdentity().then(refresh);
setInterval(() => {
  if (me.name === '?') void loadIdentity();
  void refresh();
}, POLL_MS);
