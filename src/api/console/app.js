// enviromon web console: the daemon's own page script, served at /console/app.js from assets
// compiled into the binary (include_str!). Plain ES2020, no framework, no build step.
// Every piece of server data is inserted escaped (esc) or as textContent: payloads are untrusted.
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const TOKEN_KEY = 'enviromon_token';
const AUTH_MSG = '需要令牌或权限不足 / a token with the right role is needed';
const TZ = 'Asia/Shanghai';

// ---------- helpers ----------
// 00:00 Beijing time (UTC+8, no daylight saving) of the day containing `ms`.
function beijingDayStart(ms) {
  const h8 = 8 * 3600e3;
  return Math.floor((ms + h8) / 86400e3) * 86400e3 - h8;
}
function esc(v) {
  return String(v ?? '').replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
function token() { return (localStorage.getItem(TOKEN_KEY) || '').trim(); }

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  const init = { method, headers };
  if (body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
  let res;
  try { res = await fetch(path, init); } catch (e) {
    return { status: 0, json: { error: { status: 0, message: '网络错误 / network error: ' + e.message } }, text: '' };
  }
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (res.status === 401 || res.status === 403) {
    const m = json && json.error && json.error.message;
    notice(AUTH_MSG + (m ? ' — ' + m : ''));
  }
  return { status: res.status, json, text };
}
const ok = r => r.status >= 200 && r.status < 300;

function errMsg(r, fallback) {
  const j = r.json;
  const m = j && j.error && (typeof j.error === 'string' ? j.error : j.error.message);
  if (m) return m;
  if (fallback !== undefined) return fallback;
  return 'HTTP ' + r.status + (r.text ? ': ' + r.text.slice(0, 300) : '');
}
function explainStatus(r) {
  if (r.status === 401 || r.status === 403) return AUTH_MSG + ' (' + errMsg(r) + ')';
  return errMsg(r);
}
// 422 errors as [{path, message}], from objects or "path: message" strings.
function errorsOf(j) {
  const list = (j && j.error && Array.isArray(j.error.errors)) ? j.error.errors : (j && Array.isArray(j.errors) ? j.errors : []);
  return list.map(e => {
    if (e && typeof e === 'object') return { path: String(e.path ?? ''), message: String(e.message ?? JSON.stringify(e)) };
    const s = String(e), m = s.match(/^([\w.\[\]-]+):\s*(.*)$/s);
    return m ? { path: m[1], message: m[2] } : { path: '', message: s };
  });
}

function notice(text) {
  $('#notice-text').textContent = text;
  $('#notice').hidden = false;
}

function fmtTime(v) {
  if (v === null || v === undefined || v === '') return '—';
  const d = new Date(typeof v === 'number' ? v : Date.parse(v));
  if (isNaN(d)) return String(v);
  return d.toLocaleString('zh-CN', { timeZone: TZ, hourCycle: 'h23' });
}
function fmtHour(ms) {
  return new Date(ms).toLocaleTimeString('zh-CN', { timeZone: TZ, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
}
function rel(ms) {
  if (!ms) return '从未 / never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} 秒前 / ${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} 分钟前 / ${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} 小时前 / ${h} h ago`;
  const d = Math.floor(h / 24);
  return `${d} 天前 / ${d} d ago`;
}
// Beijing midnight (ms) of the day containing `ms`.
function cstMidnight(ms) { const off = 8 * 3600e3; return Math.floor((ms + off) / 86400e3) * 86400e3 - off; }
function num(v) { return typeof v === 'number' && isFinite(v) ? v : null; }
function fmtNum(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v !== 'number') return String(v);
  return String(Math.round(v * 1000) / 1000); // no binary tails (7.3100000000000005)
}

const STATUS = { active: '在用 / active', maintenance: '维护 / maintenance', retired: '停用 / retired' };
const KIND = { power_plant: '电厂 / power plant', wastewater_plant: '污水处理厂 / wastewater plant', river_section: '河流断面 / river section', air_station: '空气站 / air station' };
const PROTO = { mqtt: 'MQTT', modbus: 'Modbus', hj212: 'HJ 212' };
const SEV = { critical: '严重 / critical', warning: '警告 / warning', info: '提示 / info' };
const names = o => o ? `${o.name_zh || o.id} / ${o.name_en || o.id}` : '';
// The array under `key`, a bare array, or else the first array in the object.
function list(j, key) {
  if (Array.isArray(j)) return j;
  if (!j || typeof j !== 'object') return [];
  if (Array.isArray(j[key])) return j[key];
  return Object.values(j).find(Array.isArray) || [];
}

// ---------- routing ----------
let current = { page: 'status', arg: '' };
let lastUnit = '';
let gen = 0; // bumped on every route change; a render started for an older route drops its output

function parseRoute() {
  const m = (location.hash || '').match(/^#\/(status|unit|register|duty|compare)(?:\/(.*))?$/);
  if (!m) return { page: 'status', arg: '' };
  let arg = '';
  try { arg = decodeURIComponent(m[2] || ''); } catch (_) { arg = m[2] || ''; }
  return { page: m[1], arg };
}

function route() {
  current = parseRoute();
  gen++;
  if (current.page === 'unit' && current.arg) lastUnit = current.arg;
  $('#tab-unit').setAttribute('href', '#/unit/' + encodeURIComponent(lastUnit));
  for (const p of ['status', 'unit', 'register', 'duty', 'compare']) {
    const el = document.getElementById('page-' + p);
    el.hidden = p !== current.page;
  }
  for (const a of $$('#tabs .tab')) {
    const on = a.dataset.page === current.page;
    a.classList.toggle('active', on);
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  // Lists of pages not shown are emptied, so [data-sensor] etc. only match the visible page.
  // The imports' 2-s refresh runs only while the status page is shown (renderImports restarts it).
  clearTimeout(importsTimer); importsTimer = null;
  if (current.page !== 'status') { $('#status-sites').innerHTML = ''; $('#imports').hidden = true; $('#imports-list').innerHTML = ''; $('#imports-list')._sig = null; }
  if (current.page !== 'unit') $('#unit-view').innerHTML = '';
  if (current.page !== 'register') $('#sensor-list').innerHTML = '';
  if (current.page !== 'duty') { $('#alerts tbody').innerHTML = ''; $('#refusals tbody').innerHTML = ''; $("#refusals tbody")._sig = null; }
  if (current.page !== 'compare') $('#compare-result').innerHTML = '';
  refresh();
}

let busy = false;
async function refresh() {
  const g = gen;
  busy = true;
  try {
    if (current.page === 'status') await renderStatus(g);
    else if (current.page === 'unit') await renderUnit(g, current.arg);
    else if (current.page === 'register') await loadRegister(g);
    else if (current.page === 'duty') await renderDuty(g);
    else if (current.page === 'compare') await renderCompare(g);
  } catch (e) {
    console.error(e);
  } finally { busy = false; }
}

// ---------- status page ----------
function parseMetric(text, name) {
  const m = (text || '').match(new RegExp('^' + name + '(?:\\{[^}]*\\})?\\s+([-+0-9.eE]+|NaN)\\s*$', 'm'));
  return m ? Number(m[1]) : null;
}

async function renderStatus(g) {
  const imports = renderImports(g); // its own 2-s refresh while an import or re-evaluation runs
  const [sites, units, sensors, latest, modbus, metrics] = await Promise.all([
    api('GET', '/api/v1/sites'), api('GET', '/api/v1/units'), api('GET', '/api/v1/sensors'),
    api('GET', '/api/v1/readings/latest'), api('GET', '/api/v1/modbus/devices'), api('GET', '/metrics'),
  ]);
  // Today's hours (Beijing day), for each unit's and station's completeness.
  const dayStart = beijingDayStart(Date.now());
  const since = encodeURIComponent(new Date(dayStart).toISOString());
  const [cemsToday, airToday] = await Promise.all([
    api('GET', `/api/v1/cems/hourly?from=${since}`), api('GET', `/api/v1/air/hourly?from=${since}`),
  ]);
  if (g !== gen) return;
  const root = $('#status-sites');
  if (!ok(sensors)) { root.innerHTML = `<div class="msg error">${esc(explainStatus(sensors))}</div>`; $('#status-summary').innerHTML = ''; return; }
  const siteList = list(sites.json, 'sites'), unitList = list(units.json, 'units'), sensorList = list(sensors.json, 'sensors');
  const readings = list(latest.json, 'readings');
  const mb = modbus.json || {}, devices = {};
  for (const d of list(mb, 'devices')) devices[d.sensor] = d;
  const mqtt = ok(metrics) ? parseMetric(metrics.text, 'enviromon_mqtt_connected') : null;
  const hj = ok(metrics) ? parseMetric(metrics.text, 'enviromon_hj212_connections') : null;

  // latest per sensor: quantity -> newest reading
  const bySensor = {};
  for (const r of readings) {
    const s = bySensor[r.sensor] || (bySensor[r.sensor] = { q: {}, last: 0 });
    const t = Date.parse(r.ts) || 0;
    if (!s.q[r.quantity] || t >= s.q[r.quantity].t) s.q[r.quantity] = { ...r, t };
    if (t > s.last) s.last = t;
  }

  const devs = Object.values(devices);
  const up = devs.filter(d => d.up).length;
  $('#status-summary').innerHTML = [
    mqtt === null ? '' : `<span class="badge ${mqtt === 1 ? 'link-up' : 'link-down'}">MQTT ${mqtt === 1 ? '已连接 / connected' : '未连接 / disconnected'}</span>`,
    hj === null ? '' : `<span class="badge">HJ 212 连接 / connections: ${esc(hj)}</span>`,
    mb.enabled === false ? '<span class="badge">Modbus 未启用 / disabled</span>' : (devs.length ? `<span class="badge ${up === devs.length ? 'link-up' : 'link-down'}">Modbus ${up}/${devs.length} 在线 / up</span>` : ''),
    `<span class="muted">更新于 / updated ${esc(fmtTime(Date.now()))}</span>`,
  ].join(' ');

  const groups = new Map(siteList.map(s => [s.id, { site: s, sensors: [], units: [] }]));
  const group = id => { if (!groups.has(id)) groups.set(id, { site: { id, name_zh: '未知站点 ' + id, name_en: 'unknown site ' + id }, sensors: [], units: [] }); return groups.get(id); };
  for (const s of sensorList) group(s.site).sensors.push(s);
  for (const u of unitList) group(u.site).units.push(u);

  const link = s => {
    if (s.protocol === 'modbus') {
      if (mb.enabled === false) return '<span class="badge">Modbus 未启用 / disabled</span>';
      const d = devices[s.id];
      if (!d) return `<span class="badge muted">${s.status === 'active' ? '未轮询 / not polled' : '—'}</span>`;
      if (d.up) return `<span class="badge link-up">在线 / up</span> <span class="muted small">${esc(d.endpoint || '')}</span>`;
      const why = d.not_polled || d.hint || d.last_error || '';
      return `<span class="badge link-down">离线 / down</span>` +
        (why ? `<div class="reason small">${esc(why)}${d.hint && d.last_error && d.hint !== d.last_error ? `<br><span class="muted">${esc(d.last_error)}</span>` : ''}</div>` : '') +
        (d.consecutive_failures ? `<div class="muted small">连续失败 / consecutive failures: ${esc(d.consecutive_failures)}</div>` : '');
    }
    if (s.protocol === 'mqtt') {
      if (mqtt === null) return '<span class="muted">—</span>';
      return mqtt === 1 ? '<span class="badge link-up">MQTT 已连接 / connected</span>' : '<span class="badge link-down">MQTT 未连接 / disconnected</span>';
    }
    return hj === null ? '<span class="muted">—</span>' : `<span class="muted small">HJ 212 连接 / connections: ${esc(hj)}</span>`;
  };

  const rows = s => {
    const l = bySensor[s.id];
    const vals = l ? Object.values(l.q).sort((a, b) => a.quantity.localeCompare(b.quantity)).map(r =>
      `<span class="value${r.flag && r.flag !== 'N' ? ' flagged' : ''}" data-quantity="${esc(r.quantity)}" title="${esc(fmtTime(r.ts))} · ${esc(r.source || '')}">` +
      `<span class="q">${esc(r.quantity)}</span> <b class="num">${esc(fmtNum(r.value))}</b> <span class="unit">${esc(r.unit || '')}</span>` +
      ` <span class="flag${r.flag && r.flag !== 'N' ? ' flag-bad' : ''}">${esc(r.flag || '')}</span></span>`).join('') : '<span class="muted">无数据 / no data</span>';
    const stale = l && Date.now() - l.last > 10 * 60e3;
    return `<tr data-sensor="${esc(s.id)}" class="st-row-${esc(s.status)}">
      <td data-label="传感器 / Sensor"><b>${esc(s.name_zh)}</b> / ${esc(s.name_en)}<div class="muted small mono">${esc(s.id)}</div></td>
      <td data-label="协议 / Protocol">${esc(PROTO[s.protocol] || s.protocol)}</td>
      <td data-label="状态 / Status"><span class="badge st-${esc(s.status)}">${esc(STATUS[s.status] || s.status)}</span>${s.status_reason ? `<div class="small muted">${esc(s.status_reason)}</div>` : ''}</td>
      <td data-label="链路 / Link">${link(s)}</td>
      <td data-label="最近 / Last seen" class="${stale ? 'stale' : ''}" title="${esc(l ? fmtTime(l.last) : '')}">${esc(l ? rel(l.last) : '从未 / never')}</td>
      <td data-label="最新值 / Latest" class="values">${vals}</td></tr>`;
  };

  // Completeness today: hours that have ended since 00:00 Beijing time; a unit's pollutant counts
  // its valid hours against the hours it ran (stopped hours are not expected, HJ 75), a station
  // its hours with a valid value of any pollutant.
  const elapsed = Math.floor((Date.now() - dayStart) / 3600e3);
  const cemsHours = ok(cemsToday) ? list(cemsToday.json, 'results') : [];
  const airHours = ok(airToday) ? list(airToday.json, 'results') : [];
  const pct = (n, d) => d > 0 ? ` (${Math.round(100 * n / d)} %)` : '';
  const unitCompleteness = u => {
    const hours = cemsHours.filter(h => h.unit === u.id);
    const parts = Object.keys(u.limits || {}).map(q => {
      const ps = hours.map(h => (h.pollutants || {})[q]).filter(Boolean);
      const valid = ps.filter(p => p.status === 'valid').length, stopped = ps.filter(p => p.status === 'stopped').length;
      const expected = Math.max(0, elapsed - stopped);
      return `${esc(q)} ${valid}/${expected} h${pct(valid, expected)}`;
    });
    return parts.length ? `<div class="completeness small" data-entity="${esc(u.id)}">今日完整率 / completeness today · ${esc(u.name_zh)}: ${parts.join(' · ')}</div>` : '';
  };
  const stationCompleteness = site => {
    if (site.kind !== 'air_station') return '';
    const n = airHours.filter(h => h.station === site.id && Object.values(h.values || {}).some(v => v !== null && v !== undefined)).length;
    return `<div class="completeness small" data-entity="${esc(site.id)}">今日完整率 / completeness today: ${n}/${elapsed} h${pct(n, elapsed)}</div>`;
  };

  root.innerHTML = [...groups.values()].map(({ site, sensors, units }) => `
    <section class="card site-card" data-site="${esc(site.id)}">
      <h2>${esc(site.name_zh)} <span class="en">/ ${esc(site.name_en)}</span></h2>
      <div class="muted small">${esc(KIND[site.kind] || site.kind || '')} · <span class="mono">${esc(site.id)}</span>${site.illustrative ? ' · <span class="badge">示意 / illustrative</span>' : ''}${site.note ? ' · ' + esc(site.note) : ''}</div>
      ${stationCompleteness(site)}${units.map(unitCompleteness).join('')}
      ${units.length ? `<div class="units">${units.map(u => `<a class="unit-link btn" href="#/unit/${esc(encodeURIComponent(u.id))}">${esc(u.name_zh)} / ${esc(u.name_en)}${u.capacity_mw ? ' · ' + esc(u.capacity_mw) + ' MW' : ''} →</a>`).join('')}</div>` : ''}
      ${sensors.length ? `<table class="stack sensors"><thead><tr><th>传感器 / Sensor</th><th>协议 / Protocol</th><th>状态 / Status</th><th>链路 / Link</th><th>最近 / Last seen</th><th>最新值 / Latest values</th></tr></thead>
      <tbody>${sensors.map(rows).join('')}</tbody></table>` : '<p class="muted">无传感器 / no sensors</p>'}
    </section>`).join('') || '<p class="muted">无站点 / no sites</p>';
  await imports;
}

// Imports (GET /api/v1/imports): the latest ones, and the imported hours still waiting for the
// standards' re-evaluation. Hidden when there are none; refreshed every 2 s while one runs.
const IMPORT_STATE = { running: '导入中 / running', done: '完成 / done', failed: '失败 / failed', already_imported: '已导入过 / already imported' };
let importsTimer = null;

async function renderImports(g) {
  if (document.hidden) { scheduleImports(g); return; } // not shown: ask again later
  const r = await api('GET', '/api/v1/imports?limit=5');
  if (g !== gen || current.page !== 'status') return;
  const box = $('#imports'), listEl = $('#imports-list'), msg = $('#imports-msg'), re = $('#reevaluation');
  if (!ok(r)) {
    listEl.innerHTML = ''; listEl._sig = null; re.hidden = true;
    // No token or no role: the notice says so already; another error is shown here.
    if (r.status === 401 || r.status === 403) { box.hidden = true; msg.textContent = ''; }
    else { box.hidden = false; msg.className = 'msg error'; msg.textContent = explainStatus(r); }
    return;
  }
  msg.className = 'msg'; msg.textContent = '';
  const j = r.json || {};
  const jobs = list(j, 'imports');
  const pending = j.reevaluation ? num(j.reevaluation.pending_hours) : null;
  box.hidden = !jobs.length && !(pending > 0);
  const html = jobs.map(x => {
    const refused = Object.entries(x.refused || {});
    const refusedTotal = refused.reduce((n, [, v]) => n + (num(v) || 0), 0);
    return `<li class="import imp-row-${esc(x.state)}" data-job="${esc(x.job)}" data-state="${esc(x.state)}">
      <b class="mono import-name">${esc(x.name)}</b> <span class="badge imp-${esc(x.state)}">${esc(IMPORT_STATE[x.state] || x.state)}</span>
      <div class="small import-counts">行 / rows <b>${esc(x.rows ?? 0)}</b> · 入库 / stored <b>${esc(x.stored ?? 0)}</b> · 重复 / duplicates <b>${esc(x.duplicates ?? 0)}</b>
        · <span class="${refusedTotal ? 'import-refused' : ''}" title="${esc(refused.map(([k, v]) => `${k}: ${v}`).join(', '))}">拒收 / refused <b>${esc(refusedTotal)}</b></span>${x.already_imported ? ` · 已导入过 / already imported <b>${esc(x.already_imported)}</b>` : ''}</div>
      ${x.error ? `<div class="reason small import-error">${esc(x.error)}</div>` : ''}
      <div class="muted small">开始 / started ${esc(fmtTime(x.started))}${x.finished ? ` · 结束 / finished ${esc(fmtTime(x.finished))}` : ''} · <span class="mono">${esc(x.job)}</span></div></li>`;
  }).join('');
  if (listEl._sig !== html) { listEl._sig = html; listEl.innerHTML = html; }
  if (pending === null) { re.hidden = true; re.textContent = ''; }
  else {
    re.hidden = false;
    re.className = 'reevaluation ' + (pending > 0 ? 'pending' : 'done');
    re.textContent = pending > 0 ? `后台重算：剩余 ${pending} 小时 / re-evaluating imported history: ${pending} hours left` : '重算完成 / re-evaluation done';
  }
  if (jobs.some(x => x.state === 'running') || pending > 0) scheduleImports(g);
  else { clearTimeout(importsTimer); importsTimer = null; }
}
function scheduleImports(g) {
  clearTimeout(importsTimer);
  importsTimer = setTimeout(() => { importsTimer = null; if (g === gen && current.page === 'status') renderImports(g).catch(e => console.error(e)); }, 2000);
}

// ---------- unit page ----------
async function renderUnit(g, id) {
  const view = $('#unit-view');
  const [units, sites] = await Promise.all([api('GET', '/api/v1/units'), api('GET', '/api/v1/sites')]);
  if (g !== gen) return;
  if (!ok(units)) { view.innerHTML = `<div class="msg error">${esc(explainStatus(units))}</div>`; return; }
  const all = list(units.json, 'units');
  const pick = all.length ? `<div class="units">${all.map(u => `<a class="unit-link btn${u.id === id ? ' active' : ''}" href="#/unit/${esc(encodeURIComponent(u.id))}">${esc(u.name_zh)} / ${esc(u.name_en)}</a>`).join('')}</div>` : '';
  const unit = all.find(u => u.id === id);
  if (!unit) {
    view.innerHTML = `<div class="card"><h2>机组 / Emission units</h2>${id ? `<p class="msg error">未找到机组 / no unit ${esc(id)}</p>` : ''}${pick || '<p class="muted">无机组 / no units</p>'}</div>`;
    return;
  }
  const now = Date.now(), from = now - 24 * 3600e3;
  const q = `unit=${encodeURIComponent(id)}&from=${encodeURIComponent(new Date(from).toISOString())}&to=${encodeURIComponent(new Date(now + 3600e3).toISOString())}`;
  const hourly = await api('GET', '/api/v1/cems/hourly?' + q);
  if (g !== gen) return;
  const limits = unit.limits || {};
  const hours = (ok(hourly) ? list(hourly.json, 'results') : []).map(r => {
    const src = r.pollutants || r.values || {};
    const p = {};
    for (const [k, v] of Object.entries(src)) {
      const o = (v && typeof v === 'object') ? v : { value: v };
      const val = num(o.corrected) ?? num(o.value) ?? num(o.corrected_mean);
      const limit = num(o.limit) ?? num(limits[k]);
      const valid = o.valid !== undefined ? !!o.valid : (o.status ? o.status === 'valid' : val !== null);
      const exceeded = o.exceeded !== undefined ? !!o.exceeded : (valid && val !== null && limit !== null && val > limit);
      p[k] = { val, limit, valid, exceeded, status: o.status || (valid ? 'valid' : 'invalid') };
    }
    return { ms: num(r.hour_ms) ?? Date.parse(r.hour), o2: num(r.o2_mean), minutes: r.minutes_with_data, p };
  }).filter(h => isFinite(h.ms)).sort((a, b) => a.ms - b.ms);
  const keys = [...new Set([...Object.keys(limits), ...hours.flatMap(h => Object.keys(h.p))])];
  const unitOf = 'mg/m³';
  const so = list(sites.json, 'sites').find(s => s.id === unit.site);
  const site = so ? esc(names(so)) : `<span class="mono">${esc(unit.site || '—')}</span>`;
  let body = `<div class="card"><h2>${esc(unit.name_zh)} <span class="en">/ ${esc(unit.name_en)}</span></h2>
    <div class="kv"><span>站点 / Site: ${site}</span><span>装机容量 / Capacity: <b>${esc(unit.capacity_mw ?? '—')}</b> MW</span>
    ${unit.o2_ref_percent !== undefined ? `<span>基准氧含量 / O2 reference: <b>${esc(unit.o2_ref_percent)}</b> %</span>` : ''}
    ${unit.fuel ? `<span>燃料 / Fuel: ${esc(unit.fuel)}</span>` : ''}</div>
    <div class="kv">排放限值 / Limits: ${Object.entries(limits).map(([k, v]) => `<span class="badge">${esc(k)} ≤ ${esc(v)} ${unitOf}</span>`).join(' ') || '—'}</div>
    ${pick}</div>`;
  if (!ok(hourly)) body += `<div class="card msg error">${esc(explainStatus(hourly))}</div>`;
  body += `<div class="card"><h3>近 24 小时折算浓度 / Corrected hourly values, last 24 h</h3>${chart(hours, keys, limits, from, now)}</div>`;
  const mid = cstMidnight(now);
  const today = hours.filter(h => h.ms > mid && h.ms <= mid + 86400e3);
  const cell = (h, k) => {
    const v = h.p[k];
    if (!v) return '<td class="muted">—</td>';
    const st = v.status === 'stopped' ? '停运 / stopped' : (!v.valid ? '无效 / invalid' : '');
    return `<td data-label="${esc(k)}" class="${v.exceeded ? 'exceeded' : ''}${!v.valid ? ' hour-invalid' : ''}">${esc(fmtNum(v.val))}${v.limit !== null ? ` <span class="muted small">/ ${esc(v.limit)}</span>` : ''}${st ? ` <span class="small">${esc(st)}</span>` : ''}${v.exceeded ? ' <b class="small">超标 / exceeded</b>' : ''}</td>`;
  };
  body += `<div class="card"><h3>今日小时数据 / Today's hours</h3><div class="scroll"><table id="unit-hours">
    <thead><tr><th>时段 / Hour</th>${keys.map(k => `<th>${esc(k)} <span class="small muted">${unitOf}</span></th>`).join('')}<th>O2 %</th><th>有数据分钟 / Minutes</th></tr></thead>
    <tbody>${today.map(h => `<tr class="${keys.some(k => h.p[k] && h.p[k].exceeded) ? 'exceeded' : ''}" data-hour="${esc(new Date(h.ms).toISOString())}"><td>${esc(fmtHour(h.ms - 3600e3))}–${esc(fmtHour(h.ms))}</td>${keys.map(k => cell(h, k)).join('')}<td>${esc(fmtNum(h.o2))}</td><td>${esc(h.minutes ?? '—')}</td></tr>`).join('') ||
    `<tr><td colspan="${keys.length + 3}" class="muted">今日暂无小时数据 / no hourly results today yet</td></tr>`}</tbody></table></div></div>`;
  view.innerHTML = body;
}

// An SVG with one panel per pollutant: its corrected hourly values against its limit line.
function chart(hours, keys, limits, from, to) {
  // Drawn at the width it is shown at, so its text keeps its size on a phone.
  const W = Math.round(Math.max(300, Math.min(860, ($('#unit-view').clientWidth || 672) - 34))), PH = 130, L = 48, R = 12, T = 18, B = 22;
  const svgNS = 'http://www.w3.org/2000/svg';
  if (!keys.length) return '<svg id="unit-chart" xmlns="' + svgNS + '" viewBox="0 0 640 40"><text class="tick"  x="10" y="25">无数据 / no data</text></svg>';
  const x = ms => L + (ms - from) / (to - from) * (W - L - R);
  let out = `<svg id="unit-chart" xmlns="${svgNS}" viewBox="0 0 ${W} ${PH * keys.length}" role="img" aria-label="近 24 小时折算浓度 / corrected hourly values">`;
  keys.forEach((k, i) => {
    const y0 = i * PH, pts = hours.filter(h => h.ms >= from && h.p[k]).map(h => ({ ms: h.ms, ...h.p[k] }));
    const limit = pts.map(p => p.limit).find(v => v !== null) ?? num(limits[k]);
    const max = Math.max(limit !== null ? limit * 1.3 : 1, ...pts.map(p => p.val ?? 0).map(v => v * 1.1)) || 1;
    const y = v => y0 + T + (1 - v / max) * (PH - T - B);
    out += `<g class="panel" data-pollutant="${esc(k)}"><text class="title" x="${L}" y="${y0 + 13}">${esc(k)} (mg/m³)</text>`;
    out += `<line class="axis" x1="${L}" y1="${y(0)}" x2="${W - R}" y2="${y(0)}"/><line class="axis" x1="${L}" y1="${y0 + T}" x2="${L}" y2="${y(0)}"/>`;
    out += `<text class="tick" x="${L - 4}" y="${y(0) + 4}" text-anchor="end">0</text><text class="tick" x="${L - 4}" y="${y(max) + 8}" text-anchor="end">${esc(fmtNum(max))}</text>`;
    for (let t = Math.ceil(from / 21600e3) * 21600e3; t <= to; t += 21600e3) {
      out += `<line class="grid" x1="${x(t)}" y1="${y0 + T}" x2="${x(t)}" y2="${y(0)}"/><text class="tick" x="${x(t)}" y="${y(0) + 14}" text-anchor="middle">${esc(fmtHour(t))}</text>`;
    }
    if (limit !== null) out += `<line class="limit" x1="${L}" y1="${y(limit)}" x2="${W - R}" y2="${y(limit)}"/><text class="limit-label" x="${W - R}" y="${y(limit) - 3}" text-anchor="end">限值 / limit ${esc(limit)}</text>`;
    let seg = [], segs = [], prev = null;
    for (const p of pts) {
      if (p.val === null || (prev !== null && p.ms - prev > 3600e3 * 1.5)) { if (seg.length) segs.push(seg); seg = []; }
      if (p.val !== null) seg.push(`${x(p.ms).toFixed(1)},${y(p.val).toFixed(1)}`);
      prev = p.ms;
    }
    if (seg.length) segs.push(seg);
    for (const s of segs) out += `<polyline class="series" points="${s.join(' ')}"/>`;
    for (const p of pts) if (p.val !== null) out += `<circle class="pt${p.exceeded ? ' exceeded' : ''}" cx="${x(p.ms).toFixed(1)}" cy="${y(p.val).toFixed(1)}" r="${p.exceeded ? 4 : 2.5}"><title>${esc(k)} ${esc(fmtNum(p.val))} mg/m³ · ${esc(fmtTime(p.ms))}${p.exceeded ? ' 超标 / exceeded' : ''}</title></circle>`;
    if (!pts.some(p => p.val !== null)) out += `<text class="tick" x="${(L + W) / 2}" y="${y0 + PH / 2}" text-anchor="middle">无有效小时 / no valid hours</text>`;
    out += '</g>';
  });
  return out + '</svg>';
}

// ---------- field errors (both forms) ----------
function clearErrors(form, summary) {
  for (const e of $$('.field-error', form)) e.textContent = '';
  for (const e of $$('.invalid', form)) e.classList.remove('invalid');
  if (summary) { summary.hidden = true; summary.innerHTML = ''; }
}
// Show each error by the element whose data-path (or name) is its path, else its nearest parent path.
function showErrors(form, errors, summary, title) {
  clearErrors(form, summary);
  for (const e of errors) {
    let p = e.path, el = null;
    while (p && !el) {
      el = form.querySelector(`[data-path="${CSS.escape(p)}"]`) || form.querySelector(`[name="${CSS.escape(p)}"]`);
      if (!el) p = p.includes('.') || p.includes('[') ? p.replace(/(\.[^.\[\]]*|\[\d+\])$/, '') : '';
    }
    if (!el) continue;
    el.classList.add('invalid');
    const box = el.closest('.field');
    const fe = box && (box.querySelector(':scope > .field-error') || box.querySelector('.field-error'));
    if (fe) fe.textContent += (fe.textContent ? '；' : '') + (p === e.path ? '' : e.path + ': ') + e.message;
  }
  if (summary && errors.length) {
    summary.hidden = false;
    summary.innerHTML = `<b>${esc(title || `${errors.length} 处错误 / ${errors.length} error(s)`)}</b><ul>${errors.map(e => `<li>${e.path ? `<code>${esc(e.path)}</code>: ` : ''}${esc(e.message)}</li>`).join('')}</ul>`;
  }
}
function clearOnInput(form) {
  form.addEventListener('input', ev => {
    const box = ev.target.closest('.field');
    if (box) { const fe = box.querySelector(':scope > .field-error'); if (fe) fe.textContent = ''; }
    ev.target.classList.remove('invalid');
  });
}
const REQUIRED = '必填 / required';

// ---------- register page ----------
let reg = { sites: [], units: [], sensors: [], profiles: [] };

async function loadRegister(g) {
  const [sites, units, sensors, profiles] = await Promise.all([
    api('GET', '/api/v1/sites'), api('GET', '/api/v1/units'), api('GET', '/api/v1/sensors'), api('GET', '/api/v1/profiles'),
  ]);
  if (g !== gen) return;
  reg = { sites: list(sites.json, 'sites'), units: list(units.json, 'units'), sensors: list(sensors.json, 'sensors'), profiles: list(profiles.json, 'profiles') };
  fillSelect($('#s-site'), [['', '请选择 / choose'], ...reg.sites.map(s => [s.id, `${names(s)} (${s.id})`])]);
  fillUnits();
  fillSelect($('#s-profile'), [['', reg.profiles.length ? '请选择 / choose' : '无可用档案 / no profiles'], ...reg.profiles.map(p => [p.id, `${p.id} — ${names(p)}`])]);
  profileInfo();
  renderSensorList(sensors);
}
function fillSelect(sel, options) {
  const keep = sel.value;
  const html = options.map(([v, t]) => `<option value="${esc(v)}">${esc(t)}</option>`).join('');
  if (sel._sig === html) return; // unchanged: leave it alone (an open picker stays open)
  sel._sig = html;
  sel.innerHTML = html;
  if (options.some(([v]) => v === keep)) sel.value = keep;
}
function fillUnits() {
  const site = $('#s-site').value;
  const us = reg.units.filter(u => !site || u.site === site);
  fillSelect($('#s-unit'), [['', '— 无 / none'], ...us.map(u => [u.id, `${names(u)} (${u.id})`])]);
}
function profileInfo() {
  const p = reg.profiles.find(x => x.id === $('#s-profile').value);
  $('#profile-info').textContent = p ? '读取 / reads: ' + (p.values || []).map(v => `${v.quantity}${v.unit ? ' [' + v.unit + ']' : ''} @ ${v.register || ''} ${v.address ?? ''}`.trim()).join('; ') : '';
  $('#channels-from-profile').hidden = !p;
}

function channelRow(c = {}) {
  const div = document.createElement('div');
  div.className = 'channel-row field';
  div.innerHTML = `
    <div class="field"><label>量 / Quantity</label><input name="ch-quantity" list="quantities" autocapitalize="off" required><div class="field-error"></div></div>
    <div class="field"><label>单位 / Unit</label><input name="ch-unit" placeholder="按领域默认 / domain default" autocapitalize="off"><div class="field-error"></div></div>
    <div class="field"><label>下限 / Min</label><input name="ch-min" type="number" step="any" inputmode="decimal"><div class="field-error"></div></div>
    <div class="field"><label>上限 / Max</label><input name="ch-max" type="number" step="any" inputmode="decimal"><div class="field-error"></div></div>
    <button type="button" class="btn btn-remove-channel" aria-label="删除通道 / remove channel">✕</button>
    <div class="field-error"></div>`;
  $('[name=ch-quantity]', div).value = c.quantity || '';
  $('[name=ch-unit]', div).value = c.unit || '';
  if (c.min !== undefined && c.min !== null) $('[name=ch-min]', div).value = c.min;
  if (c.max !== undefined && c.max !== null) $('[name=ch-max]', div).value = c.max;
  $('#channels').appendChild(div);
  renumberChannels();
}
function renumberChannels() {
  $$('#channels .channel-row').forEach((row, i) => {
    row.dataset.path = `channels[${i}]`;
    for (const k of ['quantity', 'unit', 'min', 'max']) $(`[name=ch-${k}]`, row).dataset.path = `channels[${i}].${k}`;
  });
}

function showProtocol() {
  const p = $('#s-protocol').value;
  for (const fs of $$('#sensor-form .proto')) fs.hidden = fs.dataset.proto !== p;
}

// The registration body from the form; empty optional fields are left out. Also returns
// client-side errors (required fields) in the server's {path, message} form.
function sensorBody() {
  const f = $('#sensor-form');
  const v = n => (f.elements.namedItem(n).value || '').trim();
  const errors = [];
  const b = {};
  for (const k of ['id', 'site', 'name_zh', 'name_en', 'domain', 'protocol']) { b[k] = v(k); if (!b[k]) errors.push({ path: k, message: REQUIRED }); }
  if (v('unit')) b.unit = v('unit');
  if (b.protocol === 'mqtt' && v('topic')) b.topic = v('topic');
  if (b.protocol === 'modbus') {
    const m = { transport: v('transport') };
    if (v('address')) m.address = v('address'); else errors.push({ path: 'modbus.address', message: REQUIRED + '（主机:端口 / host:port）' });
    if (v('unit_id') !== '') {
      const n = Number(v('unit_id'));
      if (!Number.isInteger(n)) errors.push({ path: 'modbus.unit_id', message: '应为整数 / must be an integer' });
      m.unit_id = n;
    }
    if (v('profile')) m.profile = v('profile'); else errors.push({ path: 'modbus.profile', message: REQUIRED });
    if (v('interval')) m.interval = v('interval');
    b.modbus = m;
  }
  if (b.protocol === 'hj212') {
    if (v('mn')) b.hj212 = { mn: v('mn') }; else errors.push({ path: 'hj212.mn', message: REQUIRED });
  }
  b.channels = $$('#channels .channel-row').map((row, i) => {
    const g = k => ($(`[name=ch-${k}]`, row).value || '').trim();
    const c = { quantity: g('quantity') };
    if (!c.quantity) errors.push({ path: `channels[${i}].quantity`, message: REQUIRED });
    if (g('unit')) c.unit = g('unit');
    for (const k of ['min', 'max']) {
      const el = $(`[name=ch-${k}]`, row);
      if (el.validity && el.validity.badInput) errors.push({ path: `channels[${i}].${k}`, message: '不是数字 / not a number' });
      else if (g(k) !== '') c[k] = Number(g(k));
    }
    return c;
  });
  if (!b.channels.length) errors.push({ path: 'channels', message: '至少一个通道 / at least one channel' });
  return { body: b, errors };
}

// A dry run's or a test's answer, as HTML.
function probeHtml(r) {
  const j = r.json || {};
  const verdict = (cls, text) => `<div class="verdict ${cls}">${text}</div>`;
  if (r.status === 401 || r.status === 403) return verdict('refused', '拒绝 / refused') + `<p class="msg error">${esc(explainStatus(r))}</p>`;
  const expl = e => e ? `<div class="explain">${e.code !== null && e.code !== undefined ? `<b class="mono">0x${esc(Number(e.code).toString(16).toUpperCase().padStart(2, '0'))}</b> ` : ''}${esc(e.name || '')}${e.hint_zh || e.hint_en ? ` — ${esc(e.hint_zh || '')} / ${esc(e.hint_en || '')}` : ''}</div>` : '';
  if (r.status === 502 || r.status === 504) {
    return verdict('check', '需检查 / check') + `<p class="msg error">${esc(errMsg(r))}</p>${expl(j.explanation)}${j.detail ? `<div class="muted small mono">${esc(j.detail)}</div>` : ''}`;
  }
  if (r.status === 422) {
    const errs = errorsOf(j);
    return verdict('refused', '拒绝 / refused') + `<p class="msg error">${esc(errMsg(r))}</p>` + (errs.length ? `<ul>${errs.map(e => `<li>${e.path ? `<code>${esc(e.path)}</code>: ` : ''}${esc(e.message)}</li>`).join('')}</ul>` : '');
  }
  if (!ok(r)) return verdict('refused', '拒绝 / refused') + `<p class="msg error">${esc(errMsg(r))}</p>`;
  const values = Array.isArray(j.values) ? j.values : [], refusals = Array.isArray(j.refusals) ? j.refusals : [];
  const exceptions = Array.isArray(j.exceptions) ? j.exceptions : [], warnings = Array.isArray(j.warnings) ? j.warnings : [];
  const good = values.filter(x => x.ok).length;
  const v = j.ok ? verdict('ok', '通过 / OK') : (good > 0 || (warnings.length && !refusals.length && !exceptions.length)) ? verdict('check', '需检查 / check') : verdict('refused', '拒绝 / refused');
  let h = v + `<div class="muted small">${esc(PROTO[j.protocol] || j.protocol || '')}${j.flag ? ' · flag ' + esc(j.flag) : ''}${j.elapsed_ms !== undefined ? ' · ' + esc(j.elapsed_ms) + ' ms' : ''}${j.dry_run === false ? ' · 已登记传感器测试 / test of a registered sensor' : ''}</div>`;
  if (values.length) h += `<ul class="probe-values">${values.map(x => `<li class="${x.ok ? 'good' : 'bad'}" data-quantity="${esc(x.quantity)}"><b>${esc(x.quantity)}</b> ${esc(fmtNum(x.value))} ${esc(x.unit || '')} ${x.ok ? '✓' : `✗ ${esc(x.refused ? x.refused.reason : '')}${x.refused && x.refused.detail ? ': ' + esc(x.refused.detail) : ''}`}${x.register || x.address !== undefined ? ` <span class="muted small">${esc(x.register || '')} ${esc(x.address ?? '')}</span>` : ''}</li>`).join('')}</ul>`;
  else h += '<p class="muted">无读数 / no values</p>';
  if (refusals.length) h += `<h4>拒收 / Refusals</h4><ul class="refusal-list">${refusals.map(x => `<li>✗ <b>${esc(x.reason)}</b>: ${esc(x.detail)}</li>`).join('')}</ul>`;
  if (exceptions.length) h += `<h4>Modbus 异常 / exceptions</h4><ul>${exceptions.map(x => `<li><span class="mono small">${esc(x.request)}</span> ${expl(x.explanation) || esc(x.exception)}${x.explanation ? `<div class="muted small">${esc(x.exception)}</div>` : ''}</li>`).join('')}</ul>`;
  if (warnings.length) h += `<h4>提醒 / Warnings</h4><ul class="warnings">${warnings.map(w => `<li>⚠ ${esc(w)}</li>`).join('')}</ul>`;
  if (j.payload) h += `<details><summary>报文 / Payload</summary><pre class="mono">${esc(String(j.payload).slice(0, 4096))}</pre></details>`;
  return h;
}

// Ask the API to check the form (no device is read); show its field errors, or clear them.
async function liveCheck() {
  const f = $('#sensor-form'), summary = $('#sensor-errors');
  const { body } = sensorBody();
  if (!body.id || !body.site || !body.domain || !body.protocol) return; // too early to say
  const r = await api('POST', '/api/v1/sensors/dry-run?check=true', body);
  if (r.status === 422) showErrors(f, errorsOf(r.json), summary, '登记前请修正 / to fix before registering');
  else if (ok(r)) clearErrors(f, summary);
}

async function dryRun() {
  const f = $('#sensor-form'), box = $('#dry-run-result'), summary = $('#sensor-errors');
  $('#commit-result').textContent = '';
  const { body, errors } = sensorBody();
  if (errors.length) { showErrors(f, errors, summary, '请先补全 / please complete the form'); box.innerHTML = ''; return; }
  clearErrors(f, summary);
  const btn = $('#dry-run');
  btn.disabled = true;
  box.innerHTML = `<p class="muted">${body.protocol === 'modbus' ? '读取设备… / reading the device…' : '等待消息（最长 15 秒）… / waiting for a message (up to 15 s)…'}</p>`;
  const r = await api('POST', '/api/v1/sensors/dry-run?seconds=15', body);
  btn.disabled = false;
  box.innerHTML = probeHtml(r);
  if (r.status === 422) { const errs = errorsOf(r.json); if (errs.length) showErrors(f, errs, summary); }
}

async function commit() {
  const f = $('#sensor-form'), box = $('#commit-result'), summary = $('#sensor-errors');
  const { body, errors } = sensorBody();
  if (errors.length) { showErrors(f, errors, summary, '请先补全 / please complete the form'); box.textContent = ''; return; }
  clearErrors(f, summary);
  const btn = $('#commit');
  btn.disabled = true;
  box.className = 'result';
  box.textContent = '提交中… / sending…';
  const r = await api('POST', '/api/v1/sensors', body);
  btn.disabled = false;
  if (r.status === 201 || r.status === 200) {
    const id = (r.json && r.json.id) || body.id;
    box.className = 'result success';
    box.textContent = `已登记 / registered ${id}`;
    loadRegister(gen);
  } else {
    box.className = 'result error';
    const errs = r.status === 422 ? errorsOf(r.json) : [];
    box.textContent = errs.length ? `未登记 / not registered: ${errs.length} 处错误 / error(s)` : '未登记 / not registered: ' + explainStatus(r);
    if (errs.length) showErrors(f, errs, summary);
  }
}

async function submitSite(ev) {
  ev.preventDefault();
  const f = $('#site-form'), out = $('#site-result'), summary = $('#site-errors');
  const v = n => (f.elements.namedItem(n).value || '').trim();
  const body = { id: v('id'), name_zh: v('name_zh'), name_en: v('name_en'), kind: v('kind') };
  const errors = ['id', 'name_zh', 'name_en', 'kind'].filter(k => !body[k]).map(k => ({ path: k, message: REQUIRED }));
  if (body.kind === 'air_station') {
    const m = $$('input[name=monitored]:checked', f).map(c => c.value);
    if (m.length) body.monitored = m;
  }
  out.className = 'result';
  if (errors.length) { showErrors(f, errors, summary, '请先补全 / please complete the form'); out.textContent = ''; return; }
  clearErrors(f, summary);
  out.textContent = '提交中… / sending…';
  const r = await api('POST', '/api/v1/sites', body);
  if (r.status === 201 || r.status === 200) {
    out.className = 'result success';
    out.textContent = `已添加站点 / site added ${(r.json && r.json.id) || body.id}`;
    f.reset();
    showMonitored();
    loadRegister(gen);
  } else {
    const errs = r.status === 422 ? errorsOf(r.json) : [];
    out.className = 'result error';
    out.textContent = errs.length ? `未添加 / not added: ${errs.length} 处错误 / error(s)` : '未添加 / not added: ' + explainStatus(r);
    if (errs.length) showErrors(f, errs, summary);
  }
}
function showMonitored() { $('#site-monitored').hidden = $('#site-kind').value !== 'air_station'; }

// Existing sensors, with their actions.
function renderSensorList(r) {
  const box = $('#sensor-list');
  if (r && !ok(r)) { box.innerHTML = `<div class="msg error">${esc(explainStatus(r))}</div>`; return; }
  const siteName = id => { const s = reg.sites.find(x => x.id === id); return s ? names(s) : id; };
  box.innerHTML = reg.sensors.map(s => `
    <div class="sensor-row st-row-${esc(s.status)}" data-sensor="${esc(s.id)}" data-status="${esc(s.status)}">
      <div class="sensor-head"><b>${esc(s.name_zh)}</b> / ${esc(s.name_en)} <span class="mono small">${esc(s.id)}</span>
        <span class="badge st-${esc(s.status)}">${esc(STATUS[s.status] || s.status)}</span>
        <div class="muted small">${esc(siteName(s.site))} · ${esc(PROTO[s.protocol] || s.protocol)} · ${esc(s.domain)}${s.unit ? ' · ' + esc(s.unit) : ''} · ${esc((s.channels || []).map(c => c.quantity).join(', '))}${s.status_reason ? ' · ' + esc(s.status_reason) : ''}</div></div>
      <div class="row-actions">
        <button type="button" class="btn btn-test">测试 / Test</button>
        ${s.status === 'active' ? '<button type="button" class="btn btn-maint-on">维护开 / Maintenance on</button>' : ''}
        ${s.status === 'maintenance' ? '<button type="button" class="btn btn-maint-off">维护关 / Maintenance off</button>' : ''}
        ${s.status !== 'retired' ? '<button type="button" class="btn btn-retire danger">停用 / Retire</button>' : '<button type="button" class="btn btn-restore">恢复 / Restore</button>'}
        <button type="button" class="btn btn-edit">编辑 / Edit</button>
      </div>
      <div class="row-extra"></div>
      <div class="row-result result"></div>
    </div>`).join('') || '<p class="muted">无传感器 / no sensors</p>';
}

async function sensorAction(ev) {
  const btn = ev.target.closest('button');
  const row = btn && btn.closest('.sensor-row');
  if (!row) return;
  const id = row.dataset.sensor, extra = $('.row-extra', row), out = $('.row-result', row);
  const path = '/api/v1/sensors/' + encodeURIComponent(id);
  const after = async (r, done) => {
    if (ok(r)) { await loadRegister(gen); const nr = $(`#sensor-list [data-sensor="${CSS.escape(id)}"] .row-result`); if (nr) { nr.className = 'row-result result success'; nr.textContent = done; } }
    else {
      const errs = errorsOf(r.json);
      out.className = 'row-result result error';
      out.innerHTML = esc(explainStatus(r)) + (errs.length ? `<ul>${errs.map(e => `<li>${e.path ? `<code>${esc(e.path)}</code>: ` : ''}${esc(e.message)}</li>`).join('')}</ul>` : '');
    }
  };
  const askReason = (kind, label, required) => {
    extra.innerHTML = `<div class="reason-box" data-kind="${kind}"><label>${label}<input class="reason-input" placeholder="原因 / reason${required ? '' : '（可选 / optional）'}"></label>
      <button type="button" class="btn btn-confirm ${kind === 'retire' ? 'danger' : 'primary'}">确认 / Confirm</button><button type="button" class="btn btn-cancel">取消 / Cancel</button></div>`;
    $('.reason-input', extra).focus();
  };
  if (btn.classList.contains('btn-test')) {
    btn.disabled = true;
    out.className = 'row-result result';
    out.innerHTML = '<p class="muted">测试中…（最长 15 秒）/ testing… (up to 15 s)</p>';
    const r = await api('POST', path + '/test?seconds=15');
    btn.disabled = false;
    out.innerHTML = probeHtml(r);
  } else if (btn.classList.contains('btn-maint-on')) {
    askReason('maint', '维护原因 / maintenance reason', true);
  } else if (btn.classList.contains('btn-retire')) {
    askReason('retire', `确认停用 ${esc(id)}？/ Retire ${esc(id)}?`, false);
  } else if (btn.classList.contains('btn-cancel')) {
    extra.innerHTML = '';
  } else if (btn.classList.contains('btn-confirm')) {
    const kind = btn.closest('.reason-box').dataset.kind, reason = $('.reason-input', extra).value.trim();
    if (kind === 'maint') {
      if (!reason) { out.className = 'row-result result error'; out.textContent = '请填写原因 / a reason is required'; return; }
      btn.disabled = true;
      await after(await api('POST', path + '/maintenance', { on: true, reason }), '已进入维护 / maintenance on');
    } else {
      btn.disabled = true;
      await after(await api('POST', path + '/retire', reason ? { reason } : {}), '已停用 / retired');
    }
  } else if (btn.classList.contains('btn-maint-off')) {
    btn.disabled = true;
    await after(await api('POST', path + '/maintenance', { on: false }), '已结束维护 / maintenance off');
  } else if (btn.classList.contains('btn-restore')) {
    btn.disabled = true;
    await after(await api('POST', path + '/restore'), '已恢复 / restored');
  } else if (btn.classList.contains('btn-edit')) {
    extra.innerHTML = `<div class="edit-box"><label>JSON 合并补丁 (RFC 7396) / JSON merge patch<textarea class="patch-input mono" rows="5" spellcheck="false">{}</textarea></label>
      <div class="muted small">例如 / e.g. {"name_en": "…", "channels": [{"quantity": "SO2", "max": 500}]}</div>
      <button type="button" class="btn primary btn-send">发送 / Send</button><button type="button" class="btn btn-cancel">取消 / Cancel</button></div>`;
  } else if (btn.classList.contains('btn-send')) {
    let patch;
    try { patch = JSON.parse($('.patch-input', extra).value); } catch (e) { out.className = 'row-result result error'; out.textContent = 'JSON 无效 / invalid JSON: ' + e.message; return; }
    if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) { out.className = 'row-result result error'; out.textContent = '补丁应为 JSON 对象 / the patch must be a JSON object'; return; }
    btn.disabled = true;
    const r = await api('PATCH', path, patch);
    btn.disabled = false;
    await after(r, '已更新 / updated');
  }
}

// ---------- duty page ----------
let lastAlerts = []; // as last fetched: the silence's matchers come from their labels
const rowMsg = {}; // fingerprint -> {text, cls, until}: kept across refreshes for a while
const expanded = new Set(); // refusal keys shown in full

async function renderDuty(g) {
  const fsel = $('#refusal-sensor');
  const sensor = fsel.value;
  const [alerts, dl, sensors] = await Promise.all([
    api('GET', '/api/v1/alerts'),
    api('GET', '/api/v1/deadletter?limit=50' + (sensor ? '&sensor=' + encodeURIComponent(sensor) : '')),
    api('GET', '/api/v1/sensors'),
  ]);
  if (g !== gen) return;
  if (ok(sensors)) fillSelect(fsel, [['', '全部 / all'], ...list(sensors.json, 'sensors').map(s => [s.id, `${s.name_zh} / ${s.name_en} (${s.id})`])]);

  // Alerts: rows are updated in place, so a comment being typed (or composed with an IME) and
  // its input element survive the refresh; only the cells whose content changed are rewritten.
  const tbody = $('#alerts tbody');
  const amsg = $('#alerts-msg');
  if (!ok(alerts)) { amsg.className = 'msg error'; amsg.textContent = explainStatus(alerts); tbody.innerHTML = ''; }
  else {
    amsg.className = 'msg'; amsg.textContent = '';
    const order = { critical: 0, warning: 1, info: 2 };
    lastAlerts = list(alerts.json, 'alerts');
    const as = lastAlerts.slice().sort((a, b) => (order[a.severity] ?? 3) - (order[b.severity] ?? 3) || (a.active_since_ms || 0) - (b.active_since_ms || 0));
    const now = Date.now();
    const rows = new Map($$('tr[data-fingerprint]', tbody).map(tr => [tr.dataset.fingerprint, tr]));
    for (const e of $$('tr.empty', tbody)) e.remove();
    as.forEach((a, i) => {
      const lb = a.labels || {}, an = a.annotations || {};
      const keys = ['site', 'sensor', 'unit'].filter(k => lb[k]);
      const labels = (keys.length ? keys : Object.keys(lb).filter(k => k !== 'alertname')).map(k => `<span class="label"><span class="muted">${esc(k)}=</span>${esc(lb[k])}</span>`).join(' ');
      const summary = an.summary_zh || an.summary_en ? [an.summary_zh, an.summary_en].filter(Boolean).join(' / ') : (an.summary || an.description || '');
      const ack = a.acknowledged;
      const cells = `<td data-label="级别 / Severity"><span class="badge sev-${esc(a.severity)}">${esc(SEV[a.severity] || a.severity)}</span></td>
        <td data-label="规则 / Rule" class="rule"><span class="mono">${esc(a.rule)}</span></td>
        <td data-label="对象 / Labels">${labels || '—'}</td>
        <td data-label="摘要 / Summary">${esc(summary)}${a.value !== null && a.value !== undefined ? ` <span class="muted small">(${esc(fmtNum(a.value))})</span>` : ''}</td>
        <td data-label="开始 / Since" title="${esc(fmtTime(a.active_since_ms))}">${esc(fmtTime(a.active_since_ms))}<div class="muted small">${esc(rel(a.active_since_ms))}</div></td>
        <td data-label="状态 / State" class="states"><span class="badge phase-${esc(a.phase)}">${a.phase === 'firing' ? '触发 / firing' : a.phase === 'pending' ? '待定 / pending' : esc(a.phase)}</span>
          ${a.silenced ? '<span class="badge silenced">静默 / silenced</span>' : ''}${a.suppressed ? '<span class="badge suppressed">抑制 / suppressed</span>' : ''}
          ${ack ? `<span class="badge acknowledged" title="${esc(ack.comment || '')} · ${esc(fmtTime(ack.at_ms))}">已确认 / acknowledged by ${esc(ack.by)}</span>${ack.comment ? `<div class="small muted">${esc(ack.comment)}</div>` : ''}` : ''}</td>`;
      let tr = rows.get(a.fingerprint);
      if (!tr) {
        tr = document.createElement('tr');
        tr.dataset.fingerprint = a.fingerprint;
        tr.innerHTML = `<td data-label="处理 / Action" class="alert-actions"><input class="comment-input" placeholder="说明 / comment" aria-label="说明 / comment">
          <button type="button" class="btn btn-silence">静默 2 小时 / Silence 2 h</button><button type="button" class="btn btn-ack primary">确认 / Acknowledge</button>
          <div class="row-msg"></div></td>`;
      }
      rows.delete(a.fingerprint);
      tr.className = 'sev-row-' + (a.severity || '');
      if (tr._sig !== cells) {
        tr._sig = cells;
        const action = $('.alert-actions', tr);
        while (tr.firstChild !== action) tr.removeChild(tr.firstChild);
        action.insertAdjacentHTML('beforebegin', cells);
      }
      const m = rowMsg[a.fingerprint] && rowMsg[a.fingerprint].until > now ? rowMsg[a.fingerprint] : null;
      const msg = $('.row-msg', tr);
      if (msg.textContent !== (m ? m.text : '')) { msg.className = 'row-msg ' + (m ? m.cls : ''); msg.textContent = m ? m.text : ''; }
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const tr of rows.values()) tr.remove();
    if (!as.length) tbody.innerHTML = '<tr class="empty"><td colspan="7" class="muted">当前无告警 / no active alerts</td></tr>';
  }

  // Refusals.
  const rb = $('#refusals tbody'), rmsg = $('#refusals-msg');
  if (!ok(dl)) { rmsg.className = 'msg error'; rmsg.textContent = explainStatus(dl); rb.innerHTML = ''; return; }
  rmsg.className = 'msg'; rmsg.textContent = '';
  const records = list(dl.json, 'records'), sig = JSON.stringify(records);
  if (rb._sig === sig && rb.children.length) return; // unchanged: keep the rows as they are
  rb._sig = sig;
  rb.innerHTML = records.map(x => {
    const key = `${x.time}|${x.topic}|${x.reason}`;
    const p = String(x.payload ?? ''), long = p.length > 200, open = expanded.has(key);
    return `<tr class="refusal" data-key="${esc(key)}">
      <td data-label="时间 / Time">${esc(fmtTime(x.time))}</td>
      <td data-label="来源 / Source">${esc(x.source)}</td>
      <td data-label="主题 / Topic"><span class="mono small">${esc(x.topic)}</span></td>
      <td data-label="原因 / Reason"><b>${esc(x.reason)}</b>${x.same_message ? ' <span class="muted small">同一消息 / same message</span>' : ''}</td>
      <td data-label="详情 / Detail">${esc(x.detail)}</td>
      <td data-label="报文 / Payload"><code class="payload${long ? ' expandable' : ''}${open ? ' expanded' : ''}" title="${long ? '点击展开 / click to expand' : ''}" data-full="${esc(p)}">${esc(open || !long ? p : p.slice(0, 200) + '…')}</code>
        <div class="muted small">${esc(x.payload_encoding || '')} · ${esc(x.payload_bytes ?? p.length)} B${x.payload_truncated ? ' · 已截断 / truncated' : ''}</div></td></tr>`;
  }).join('') || '<tr><td colspan="6" class="muted">无拒收记录 / no refusals</td></tr>';
}

async function alertAction(ev) {
  const btn = ev.target.closest('button');
  const tr = btn && btn.closest('tr[data-fingerprint]');
  if (!tr) return;
  const fp = tr.dataset.fingerprint, comment = $('.comment-input', tr).value.trim(), msg = $('.row-msg', tr);
  const say = (text, cls) => { rowMsg[fp] = { text, cls, until: Date.now() + 60e3 }; msg.className = 'row-msg ' + cls; msg.textContent = text; };
  const silence = btn.classList.contains('btn-silence');
  if (!silence && !btn.classList.contains('btn-ack')) return;
  if (!comment) { say('请填写说明 / a comment is required', 'error'); $('.comment-input', tr).focus(); return; }
  const a = lastAlerts.find(x => x.fingerprint === fp);
  btn.disabled = true;
  let r;
  if (silence) {
    const matchers = { alertname: a ? a.rule : $('td.rule', tr).textContent.trim(), ...((a && a.labels) || {}) };
    r = await api('POST', '/api/v1/silences', { matchers, comment, duration: '2h' });
  } else {
    r = await api('POST', `/api/v1/alerts/${encodeURIComponent(fp)}/ack`, { comment });
  }
  btn.disabled = false;
  if (ok(r)) {
    say(silence ? '已静默 2 小时 / silenced for 2 h' + (r.json && r.json.warning ? ' — ' + r.json.warning : '') : '已确认 / acknowledged', 'success');
    $('.comment-input', tr).value = '';
    refresh();
  } else {
    const errs = errorsOf(r.json);
    say(explainStatus(r) + (errs.length ? ': ' + errs.map(e => (e.path ? e.path + ': ' : '') + e.message).join('; ') : ''), 'error');
  }
}

// ---------- compare page ----------
// GET /api/v1/compliance/compare: the district's stored daily concentrations under both AQI
// editions — totals, the months' good-days rate as grouped bars, and the days whose grade changes.
const GRADES = ['I', 'II', 'III', 'IV', 'V', 'VI'];
const PLAN_TARGET = 80; // the district plan's good-days rate target, %
let compareSeq = 0; // a newer request's answer wins over an older one still on its way
const fmtRate = v => num(v) === null ? '—' : v.toFixed(1) + '%';
const edHtml = ed => esc(ed).replace(/-/g, '-<wbr>'); // "HJ633-2012" may wrap after its hyphen in a narrow column

async function renderCompare(g) {
  const f = $('#compare-form'), out = $('#compare-result');
  const from = f.elements.namedItem('from').value.trim(), to = f.elements.namedItem('to').value.trim();
  const errors = [['from', from], ['to', to]].filter(([, v]) => !v).map(([k]) => ({ path: k, message: REQUIRED + '（年-月-日 / YYYY-MM-DD）' }));
  if (errors.length) { showErrors(f, errors); out.innerHTML = ''; return; }
  clearErrors(f);
  const seq = ++compareSeq, btn = $('#compare-submit');
  btn.disabled = true;
  out.innerHTML = '<div class="card muted">计算中… / computing…</div>';
  const r = await api('GET', `/api/v1/compliance/compare?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
  if (seq !== compareSeq) return;
  btn.disabled = false;
  if (g !== gen || current.page !== 'compare') return;
  if (!ok(r) || !r.json || !Array.isArray(r.json.editions)) {
    out.innerHTML = `<div class="card"><div class="msg error" id="compare-error">${esc(ok(r) ? '应答无法识别 / unexpected answer' : explainStatus(r))}</div></div>`;
    return;
  }
  const c = r.json;
  const eds = c.editions.map(e => e.edition);
  const edIdx = ed => Math.max(0, eds.indexOf(ed)) % 2; // its colour: ed-0, ed-1
  const months = Array.isArray(c.months) ? c.months : [], changed = Array.isArray(c.changed_days) ? c.changed_days : [];

  // (a) totals
  const totals = `<div class="scroll"><table id="compare-totals" class="compare-totals">
    <thead><tr><th rowspan="2">标准 / Edition</th><th rowspan="2">优良率 / Good rate</th><th rowspan="2">优良/有效天 / Good/valid days</th><th colspan="${GRADES.length}" class="grades-head">各级天数 / Days per grade</th></tr>
      <tr>${GRADES.map(k => `<th class="num">${k}</th>`).join('')}</tr></thead>
    <tbody>${c.editions.map(e => `<tr data-edition="${esc(e.edition)}">
      <td class="edition"><span class="swatch ed-${edIdx(e.edition)}"></span><b>${edHtml(e.edition)}</b></td>
      <td class="num rate">${esc(fmtRate(e.good_rate_percent))}</td>
      <td class="num days">${esc(e.good_days ?? 0)}/${esc(e.days_with_aqi ?? 0)}</td>
      ${GRADES.map(k => `<td class="num grade" data-grade="${k}">${esc(num((e.grades || {})[k]) ?? 0)}</td>`).join('')}</tr>`).join('')}</tbody></table></div>`;
  const primary = c.editions.map(e => {
    const pp = Object.entries(e.primary_pollutants || {}).sort((a, b) => b[1] - a[1]);
    return `<li data-edition="${esc(e.edition)}"><b>${esc(e.edition)}</b> 首要污染物天数 / days as primary pollutant: ${pp.map(([k, v]) => `<span class="badge">${esc(k)} ${esc(v)}</span>`).join(' ') || '—'}${e.withheld_days ? ` <span class="muted">· 无 AQI / no AQI: ${esc(e.withheld_days)} 天 / days</span>` : ''}</li>`;
  }).join('');
  const head = `<div class="muted small">${c.station === 'district' ? '全区 / district' : `<span class="mono">${esc(c.station)}</span>`} · ${esc(c.from)} – ${esc(c.to)} · 有日数据 / days with daily results: <b>${esc(c.days ?? 0)}</b></div>`;

  // (c) the days whose grade changes
  const nGood = changed.filter(d => d.good_day_changes).length;
  const goodText = v => v === true ? '优良 / good' : v === false ? '非优良 / not good' : '无 AQI / no AQI';
  const verdictCell = (d, ed) => {
    const v = (d.editions || []).find(x => x.edition === ed);
    if (!v) return '<td class="muted">—</td>';
    const pp = Array.isArray(v.primary_pollutants) ? v.primary_pollutants : [];
    return `<td data-edition="${esc(ed)}" class="verdict-cell${v.good_day === false ? ' not-good' : ''}"><b class="aqi" title="AQI">${esc(num(v.aqi) ?? '—')}</b>
      <span class="badge grade-badge">${esc(v.grade ?? '—')}</span> <span class="pp">${esc(pp.join(', ') || '—')}</span></td>`;
  };
  const changedHtml = `<p id="changed-summary">${changed.length
    ? `级别改变 ${changed.length} 天，其中优良与否改变 ${nGood} 天 / ${changed.length} days change grade, ${nGood} of them between good and not good`
    : '两版标准下每天的级别相同 / no day changes grade'}</p>
    <div class="hint">每格：AQI · 级别 · 首要污染物 / each cell: AQI · grade · primary pollutants</div>
    <div class="scroll"><table id="changed-days" class="changed-days">
    <thead><tr><th>日期 / Day</th>${eds.map(ed => `<th><span class="swatch ed-${edIdx(ed)}"></span>${edHtml(ed)}</th>`).join('')}<th>优良 / Good</th></tr></thead>
    <tbody>${changed.map(d => {
      const vs = eds.map(ed => (d.editions || []).find(x => x.edition === ed));
      return `<tr data-day="${esc(d.day)}"${d.good_day_changes ? ' class="good-change"' : ''}><td class="day">${esc(d.day)}</td>${eds.map(ed => verdictCell(d, ed)).join('')}
        <td class="good-cell">${d.good_day_changes ? esc(vs.map(v => goodText(v ? v.good_day : null)).join(' → ')) : '<span class="muted">—</span>'}</td></tr>`;
    }).join('') || `<tr class="empty"><td colspan="${eds.length + 2}" class="muted">无 / none</td></tr>`}</tbody></table></div>`;

  out.innerHTML = `<div class="card"><h3>合计 / Totals</h3>${head}${totals}<ul class="compare-primary small">${primary}</ul></div>
    <div class="card"><h3>各月优良天数比例 / Good-days rate by month</h3>${compareChart(months, eds, edIdx)}</div>
    <div class="card"><h3>级别改变的日子 / Days whose grade changes</h3>${changedHtml}</div>`;
}

// Grouped bars: per month, each edition's good-days rate (0–100 %), against the plan's 80 % target.
function compareChart(months, eds, edIdx) {
  const svgNS = 'http://www.w3.org/2000/svg';
  // Drawn at the width it is shown at (as the unit chart), so its text keeps its size on a phone.
  const W = Math.round(Math.max(300, Math.min(860, ($('#compare-result').clientWidth || 380) - 34)));
  if (!months.length) return `<svg id="compare-chart" xmlns="${svgNS}" viewBox="0 0 ${W} 40"><text class="tick" x="10" y="25">无数据 / no data</text></svg>`;
  const H = 220, L = 36, R = 8, T = 34, B = 30, PH = H - T - B;
  const n = months.length, gw = (W - L - R) / n, k = Math.max(1, eds.length);
  const bw = Math.max(1, gw * 0.8 / k), pad = (gw - bw * k) / 2;
  const y = v => T + (1 - v / 100) * PH;
  const every = Math.ceil(n / Math.max(1, Math.floor((W - L - R) / 18))); // month labels that fit
  let out = `<svg id="compare-chart" xmlns="${svgNS}" viewBox="0 0 ${W} ${H}" role="img" aria-label="各月优良天数比例 / good-days rate by month">`;
  // legend
  let lx = L;
  eds.forEach(ed => {
    out += `<rect class="swatch ed-${edIdx(ed)}" data-edition="${esc(ed)}" x="${lx}" y="6" width="12" height="12"/><text class="legend" x="${lx + 16}" y="16">${esc(ed)}</text>`;
    lx += 16 + 7 * String(ed).length + 14;
  });
  for (const v of [0, 50, 100]) {
    out += `<line class="${v ? 'grid' : 'axis'}" x1="${L}" y1="${y(v)}" x2="${W - R}" y2="${y(v)}"/><text class="tick" x="${L - 4}" y="${y(v) + 3.5}" text-anchor="end">${v}%</text>`;
  }
  out += `<line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${y(0)}"/>`;
  let year = '';
  months.forEach((m, i) => {
    const x0 = L + i * gw, mm = String(m.month || '').slice(5, 7), yy = String(m.month || '').slice(0, 4);
    out += `<g class="month" data-month="${esc(m.month)}">`;
    eds.forEach((ed, j) => {
      const e = (m.editions || []).find(x => x.edition === ed) || {};
      const rate = num(e.good_rate_percent), v = rate === null ? 0 : Math.max(0, Math.min(100, rate));
      out += `<rect class="bar ed-${edIdx(ed)}${rate === null ? ' no-data' : ''}" data-edition="${esc(ed)}" data-month="${esc(m.month)}" data-rate="${rate === null ? '' : esc(rate)}" x="${(x0 + pad + j * bw).toFixed(2)}" y="${y(v).toFixed(2)}" width="${bw.toFixed(2)}" height="${(v / 100 * PH).toFixed(2)}">` +
        `<title>${esc(m.month)} ${esc(ed)}: ${esc(fmtRate(rate))}${e.days_with_aqi !== undefined ? ` (${esc(e.good_days ?? 0)}/${esc(e.days_with_aqi)} 天 / days)` : ''}</title></rect>`;
    });
    if (i % every === 0) out += `<text class="tick" x="${(x0 + gw / 2).toFixed(1)}" y="${y(0) + 12}" text-anchor="middle">${esc(mm)}</text>`;
    if (yy !== year) { year = yy; out += `<text class="tick year" x="${(x0 + 1).toFixed(1)}" y="${y(0) + 25}">${esc(yy)}</text>`; }
    out += '</g>';
  });
  out += `<line class="target" x1="${L}" y1="${y(PLAN_TARGET)}" x2="${W - R}" y2="${y(PLAN_TARGET)}"/><text class="target-label" x="${W - R}" y="${y(PLAN_TARGET) - 4}" text-anchor="end">目标 ${PLAN_TARGET}% / target</text>`;
  return out + '</svg>';
}

// ---------- start ----------
function init() {
  const tok = $('#token');
  tok.value = token();
  let t;
  tok.addEventListener('input', () => {
    localStorage.setItem(TOKEN_KEY, tok.value.trim());
    $('#notice').hidden = true;
    clearTimeout(t); t = setTimeout(refresh, 500);
  });
  tok.addEventListener('change', () => { localStorage.setItem(TOKEN_KEY, tok.value.trim()); clearTimeout(t); refresh(); });
  $('#notice-close').addEventListener('click', () => { $('#notice').hidden = true; });

  $('#site-form').addEventListener('submit', submitSite);
  $('#site-kind').addEventListener('change', showMonitored);
  clearOnInput($('#site-form'));
  showMonitored();

  const sf = $('#sensor-form');
  sf.addEventListener('submit', ev => ev.preventDefault());
  clearOnInput(sf);
  $('#s-protocol').addEventListener('change', showProtocol);
  $('#s-site').addEventListener('change', fillUnits);
  $('#s-profile').addEventListener('change', profileInfo);
  $('#add-channel').addEventListener('click', () => channelRow());
  $('#channels-from-profile').addEventListener('click', () => {
    const p = reg.profiles.find(x => x.id === $('#s-profile').value);
    if (!p) return;
    $('#channels').innerHTML = '';
    for (const v of p.values || []) channelRow({ quantity: v.quantity, unit: v.unit });
    if (!(p.values || []).length) channelRow();
  });
  $('#channels').addEventListener('click', ev => {
    const b = ev.target.closest('.btn-remove-channel');
    if (!b) return;
    b.closest('.channel-row').remove();
    renumberChannels();
  });
  // Live validation: as the technician types, the API checks the form as a registration would
  // (nothing is read or saved) and its field errors appear next to their fields.
  let liveTimer = null;
  sf.addEventListener('input', () => {
    clearTimeout(liveTimer);
    liveTimer = setTimeout(liveCheck, 700);
  });
  $('#dry-run').addEventListener('click', dryRun);
  $('#commit').addEventListener('click', commit);
  channelRow();
  showProtocol();
  $('#sensor-list').addEventListener('click', sensorAction);
  $('#sensor-list').addEventListener('keydown', ev => { if (ev.key === 'Enter' && ev.target.classList.contains('reason-input')) { ev.preventDefault(); const c = $('.btn-confirm', ev.target.closest('.reason-box')); if (c) c.click(); } });

  $('#compare-form').addEventListener('submit', ev => { ev.preventDefault(); renderCompare(gen).catch(e => console.error(e)); });
  clearOnInput($('#compare-form'));

  $('#alerts').addEventListener('click', alertAction);
  $('#refusal-sensor').addEventListener('change', () => refresh());
  $('#refusals').addEventListener('click', ev => {
    const c = ev.target.closest('code.payload.expandable');
    if (!c) return;
    const key = c.closest('tr').dataset.key, full = c.dataset.full;
    if (expanded.has(key)) { expanded.delete(key); c.classList.remove('expanded'); c.textContent = full.slice(0, 200) + '…'; }
    else { expanded.add(key); c.classList.add('expanded'); c.textContent = full; }
  });

  window.addEventListener('hashchange', route);
  let ticks = 0;
  setInterval(() => {
    ticks++;
    if (busy || document.hidden) return;
    if (current.page === 'status' || current.page === 'duty' || (current.page === 'unit' && ticks % 6 === 0)) refresh();
  }, 10000);
  route();
}
document.addEventListener('DOMContentLoaded', init);
