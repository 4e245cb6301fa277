// Recorder operator page: plain JS, no framework, no build step.
// Every API call sends the token in the Authorization header; media are
// fetched the same way and played from blob: URLs, so the token never
// appears in a URL.
'use strict';

const TOKEN_KEY = 'recorder.api_token';
const CALLS_POLL_MS = 3000;
const PAGE_SIZE = 50;
const DRIFT_S = 0.3; // re-seek a media element that drifted further than this

const $ = (sel) => document.querySelector(sel);

let token = '';
try { token = localStorage.getItem(TOKEN_KEY) || ''; } catch (e) { /* storage disabled */ }

class ApiError extends Error {
  constructor(status, errcode, message) {
    super(message);
    this.status = status;
    this.errcode = errcode;
  }
}

async function api(path, opts = {}) {
  const headers = { Authorization: 'Bearer ' + token };
  let body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  const res = await fetch(path, { method: opts.method || 'GET', headers, body, signal: opts.signal });
  if (!res.ok) {
    let data = {};
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    const err = new ApiError(res.status, data.errcode || '', data.error || res.statusText);
    if (res.status === 401) showLogin('The token was not accepted: ' + err.message);
    throw err;
  }
  return res;
}

async function apiJSON(path, opts) {
  return (await api(path, opts)).json();
}

// ---- small helpers ----

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function fmtDuration(seconds) {
  if (!isFinite(seconds) || seconds < 0) seconds = 0;
  const s = Math.floor(seconds % 60), m = Math.floor(seconds / 60) % 60, h = Math.floor(seconds / 3600);
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

// fmtOffset is fmtDuration with tenths of a second.
function fmtOffset(seconds) {
  if (!isFinite(seconds) || seconds < 0) seconds = 0;
  const tenths = Math.floor((seconds * 10) % 10);
  return `${fmtDuration(seconds)}.${tenths}`;
}

function fmtBytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1024 / 1024).toFixed(1) + ' MiB';
}

let statusTimer = 0;
function status(msg, isError = false) {
  const s = $('#status');
  s.textContent = msg;
  s.classList.toggle('error', isError);
  clearTimeout(statusTimer);
  if (msg && !isError) statusTimer = setTimeout(() => { s.textContent = ''; }, 6000);
}

function reportError(what, err) {
  if (err && err.name === 'AbortError') return;
  if (err instanceof ApiError && err.status === 401) return; // the login form says it
  status(`${what}: ${err && err.message ? err.message : err}`, true);
}

// ---- token ----

function showLogin(msg) {
  stopPolling();
  $('#app').hidden = true;
  $('#logout').hidden = true;
  $('#login').hidden = false;
  if (msg) status(msg, true);
  $('#token').focus();
}

function showApp() {
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#logout').hidden = false;
  startPolling();
  loadRecordings(false);
  const m = location.hash.match(/^#rec=(.+)$/);
  if (m) openRecording(decodeURIComponent(m[1]));
}

$('#token-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  token = $('#token').value.trim();
  try {
    await api('/api/v1/recordings?limit=1');
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) reportError('Checking the token failed', err);
    return;
  }
  try { localStorage.setItem(TOKEN_KEY, token); } catch (e) { /* kept for this page only */ }
  $('#token').value = '';
  status('Token saved.');
  showApp();
});

$('#logout').addEventListener('click', () => {
  try { localStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing kept */ }
  token = '';
  closePlayer();
  showLogin('');
  status('Token forgotten.');
});

// ---- active calls ----

let pollTimer = 0;
let lastCallsKey = '';

function startPolling() {
  stopPolling();
  const tick = async () => {
    if (!document.hidden) await loadCalls();
    pollTimer = setTimeout(tick, CALLS_POLL_MS);
  };
  tick();
}

function stopPolling() {
  clearTimeout(pollTimer);
  pollTimer = 0;
}

document.addEventListener('visibilitychange', () => { if (!document.hidden && token && pollTimer) loadCalls(); });

async function loadCalls() {
  let data;
  try {
    data = await apiJSON('/api/v1/calls');
  } catch (err) {
    if (err instanceof ApiError && err.status === 503) {
      $('#calls-empty').textContent = 'Call control is not available: ' + err.message;
      $('#calls-empty').hidden = false;
      return;
    }
    reportError('Loading calls failed', err);
    return;
  }
  const tbody = $('#calls tbody');
  tbody.replaceChildren();
  for (const c of data.calls) {
    const people = c.participants.map((p) => p.user_id + (p.state ? ` (${p.state})` : '') +
      (p.encrypted ? (p.keys_held ? ' 🔒 decrypting' : ' 🔒 no key yet') : '') + (p.note ? ` — ${p.note}` : '')).join(', ') || '—';
    tbody.append(el('tr', {},
      el('td', { class: 'mono', text: c.room_id }),
      el('td', { class: 'mono', text: c.conf_id || '—' }),
      el('td', { text: people }),
      el('td', { text: fmtTime(c.since) }),
      el('td', {}, el('button', {
        type: 'button', text: 'Stop', 'aria-label': 'Stop recording ' + c.room_id,
        onclick: () => stopRecording(c.room_id),
      }))));
  }
  $('#calls').hidden = data.calls.length === 0;
  $('#calls-empty').textContent = 'No call is being recorded.';
  $('#calls-empty').hidden = data.calls.length > 0;
  // When a call starts or ends the recordings change too.
  const key = data.calls.map((c) => c.room_id + c.recording_id).join('|');
  if (lastCallsKey && key !== lastCallsKey) loadRecordings(false);
  lastCallsKey = key;
}

$('#start-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const room = $('#start-room').value.trim();
  const btn = ev.submitter || $('#start-form button');
  btn.disabled = true;
  status('Joining the call in ' + room + '…');
  try {
    const c = await apiJSON('/api/v1/calls', { method: 'POST', json: { room_id: room } });
    status(`Recording ${room}` + (c.recording_id ? ` (recording ${c.recording_id}).` : '.'));
    $('#start-room').value = '';
  } catch (err) {
    reportError('Could not start recording', err);
  } finally {
    btn.disabled = false;
  }
  loadCalls();
  loadRecordings(false);
});

async function stopRecording(room) {
  status('Stopping the recording in ' + room + '…');
  try {
    await api('/api/v1/calls/' + encodeURIComponent(room), { method: 'DELETE' });
    status('Stopped recording ' + room + '.');
  } catch (err) {
    reportError('Could not stop recording', err);
  }
  loadCalls();
  loadRecordings(false);
}

// ---- recordings list ----

let nextCursor = '';
let listAbort = null;

function listQuery() {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const room = $('#filter-room').value.trim();
  const state = $('#filter-state').value;
  if (room) q.set('room_id', room);
  if (state) q.set('state', state);
  return q;
}

async function loadRecordings(more) {
  if (listAbort) listAbort.abort();
  listAbort = new AbortController();
  const q = listQuery();
  if (more && nextCursor) q.set('cursor', nextCursor);
  let data;
  try {
    data = await apiJSON('/api/v1/recordings?' + q, { signal: listAbort.signal });
  } catch (err) {
    reportError('Loading recordings failed', err);
    return;
  }
  const tbody = $('#recordings tbody');
  if (!more) tbody.replaceChildren();
  for (const r of data.recordings) tbody.append(recordingRow(r));
  nextCursor = data.next_cursor || '';
  $('#more').hidden = !nextCursor;
  const empty = tbody.children.length === 0;
  $('#recordings').hidden = empty;
  $('#recs-empty').hidden = !empty;
  const rooms = new Set([...$('#rooms').options].map((o) => o.value));
  for (const r of data.recordings) {
    if (!rooms.has(r.room_id)) {
      rooms.add(r.room_id);
      $('#rooms').append(el('option', { value: r.room_id }));
    }
  }
  markCurrentRow();
}

// names maps a recording's participants to their display names at
// recording time (the ids stay in the title, shown on hover).
function names(r) {
  const byUser = new Map();
  for (const t of r.tracks || []) if (t.display_name && !byUser.has(t.user_id)) byUser.set(t.user_id, t.display_name);
  return r.participants.map((u) => ({ id: u, name: byUser.get(u) || u }));
}

function peopleCell(r) {
  const people = names(r);
  if (people.length === 0) return el('td', { text: '—' });
  const td = el('td', {});
  people.forEach((p, i) => {
    if (i > 0) td.append(', ');
    td.append(el('span', { text: p.name, title: p.id }));
  });
  return td;
}

function recordingRow(r) {
  const started = fmtTime(r.started_at);
  return el('tr', { 'data-id': r.id },
    el('td', r.room_name ? { text: r.room_name, title: r.room_id } : { class: 'mono', text: r.room_id }),
    el('td', {}, el('time', { datetime: r.started_at, text: started })),
    el('td', { text: fmtDuration(r.duration_ms / 1000) }),
    peopleCell(r),
    el('td', {}, el('span', { class: 'state state-' + r.state, text: r.state, title: r.error || null }),
      r.stop_reason ? el('span', { class: 'sub', text: ' ' + stopReasonText(r.stop_reason) }) : null),
    el('td', {}, el('button', {
      type: 'button', text: 'Open', 'aria-label': `Open recording of ${r.room_name || r.room_id} from ${started}`,
      onclick: () => openRecording(r.id),
    })));
}

function markCurrentRow() {
  for (const tr of $('#recordings tbody').children) {
    tr.classList.toggle('current', !!current && tr.dataset.id === current.rec.id);
  }
}

$('#filter-form').addEventListener('submit', (ev) => { ev.preventDefault(); loadRecordings(false); });
$('#filter-clear').addEventListener('click', () => {
  $('#filter-room').value = '';
  $('#filter-state').value = '';
  loadRecordings(false);
});
$('#more').addEventListener('click', () => loadRecordings(true));

// ---- player: all tracks on one timeline ----

// Timeline keeps one clock for every media element of a recording. Each
// element plays at (clock - its offset); before its start or after its end
// it waits paused. The clock runs on performance.now() while playing.
class Timeline {
  constructor(length) {
    this.length = length;
    this.items = [];
    this.playing = false;
    this.pos = 0;
    this.startPos = 0;
    this.startWall = 0;
    this.raf = 0;
    this.onTick = () => {};
  }

  add(media, offset, duration, lane) {
    this.items.push({ media, offset, duration, lane });
    this.length = Math.max(this.length, offset + duration);
  }

  position() {
    if (!this.playing) return this.pos;
    return Math.min(this.length, this.startPos + (performance.now() - this.startWall) / 1000);
  }

  play() {
    if (this.pos >= this.length) this.pos = 0;
    this.startPos = this.pos;
    this.startWall = performance.now();
    this.playing = true;
    this.sync(true);
    this.loop();
  }

  pause() {
    this.pos = this.position();
    this.playing = false;
    cancelAnimationFrame(this.raf);
    for (const it of this.items) it.media.pause();
    this.sync(true);
  }

  seek(t) {
    this.pos = Math.max(0, Math.min(this.length, t));
    if (this.playing) {
      this.startPos = this.pos;
      this.startWall = performance.now();
    }
    this.sync(true);
  }

  loop() {
    cancelAnimationFrame(this.raf);
    const step = () => {
      if (!this.playing) return;
      if (this.position() >= this.length) {
        this.pos = this.length;
        this.pause();
        return;
      }
      this.sync(false);
      this.raf = requestAnimationFrame(step);
    };
    this.raf = requestAnimationFrame(step);
  }

  itemLength(it) {
    const d = it.media.duration;
    return isFinite(d) && d > 0 ? d : it.duration;
  }

  sync(force) {
    const t = this.position();
    for (const it of this.items) {
      const m = it.media;
      if (!m.src) continue; // still loading
      const local = t - it.offset;
      if (local < 0 || local >= this.itemLength(it)) {
        if (!m.paused) m.pause();
        const rest = local < 0 ? 0 : this.itemLength(it);
        if (force && isFinite(rest) && Math.abs(m.currentTime - rest) > 0.05) m.currentTime = rest;
        continue;
      }
      if (force || Math.abs(m.currentTime - local) > DRIFT_S) m.currentTime = local;
      if (this.playing && m.paused) m.play().catch((err) => { if (err.name !== 'AbortError') reportError('Playback failed', err); });
      if (!this.playing && !m.paused) m.pause();
    }
    this.onTick(t);
  }

  destroy() {
    this.playing = false;
    cancelAnimationFrame(this.raf);
    for (const it of this.items) it.media.pause();
  }
}

let current = null; // { rec, timeline, urls: Map(file -> blob URL), abort }

function closePlayer() {
  if (!current) return;
  current.abort.abort();
  current.timeline.destroy();
  for (const url of current.urls.values()) URL.revokeObjectURL(url);
  current = null;
  clearTimeout(mixdownTimer);
  $('#tracks').replaceChildren();
  $('#mixdown-media').replaceChildren();
  $('#player').hidden = true;
  markCurrentRow();
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
}

function fileURL(recID, name) {
  return `/api/v1/recordings/${encodeURIComponent(recID)}/files/${encodeURIComponent(name)}`;
}

async function fetchBlob(recID, name, signal) {
  const res = await api(fileURL(recID, name), { signal });
  return URL.createObjectURL(await res.blob());
}

async function openRecording(recID) {
  closePlayer();
  let rec;
  try {
    rec = await apiJSON('/api/v1/recordings/' + encodeURIComponent(recID));
  } catch (err) {
    reportError('Opening the recording failed', err);
    return;
  }
  const abort = new AbortController();
  const minOffset = Math.min(0, ...rec.tracks.map((t) => t.offset_ms));
  const timeline = new Timeline(Math.max(0, rec.duration_ms - minOffset) / 1000);
  current = { rec, timeline, urls: new Map(), abort };
  history.replaceState(null, '', '#rec=' + encodeURIComponent(rec.id));

  $('#player-h').textContent = 'Recording of ' + (rec.room_name || rec.room_id);
  const meta = $('#rec-meta');
  meta.replaceChildren();
  const add = (k, v) => meta.append(el('dt', { text: k }), el('dd', { text: v }));
  add('Recording', rec.id);
  meta.append(el('dt', { text: 'Room' }), el('dd', { text: rec.room_name ? `${rec.room_name} (${rec.room_id})` : rec.room_id }));
  add('Started', fmtTime(rec.started_at));
  add('Ended', rec.ended_at ? fmtTime(rec.ended_at) : 'still recording');
  add('Duration', fmtDuration(rec.duration_ms / 1000));
  add('State', rec.state + (rec.error ? ' — ' + rec.error : ''));
  if (rec.stop_reason) add('Stopped', stopReasonText(rec.stop_reason));
  add('Participants', names(rec).map((p) => (p.name === p.id ? p.id : `${p.name} (${p.id})`)).join(', ') || '—');
  if (rec.expires_at) add('Expires', fmtTime(rec.expires_at));
  showMixdown(rec, abort);

  const list = $('#tracks');
  list.replaceChildren();
  $('#tracks-empty').hidden = rec.tracks.length > 0;
  rec.tracks.forEach((t, i) => {
    const offset = (t.offset_ms - minOffset) / 1000;
    const duration = t.duration_ms / 1000;
    const who = `${t.user_id}${t.device_id ? ' · ' + t.device_id : ''}`;
    const label = `${who}${t.purpose ? ' (' + t.purpose + ')' : ''}`;
    const media = el(t.kind === 'video' ? 'video' : 'audio', {
      preload: 'auto', playsinline: true, 'aria-label': `${t.kind} of ${label}`, 'data-file': t.file,
    });
    const head = el('div', { class: 'head' });
    const lane = el('div', { class: 'lane', role: 'img', 'aria-label': `Starts at ${fmtDuration(offset)}, lasts ${fmtDuration(duration)}` },
      el('div', { class: 'span' }), head);
    const state = el('span', { class: 'sub', text: 'Loading…' });
    const muteBtn = el('button', { type: 'button', 'aria-pressed': 'false', text: 'Mute', 'aria-label': 'Mute ' + label });
    muteBtn.addEventListener('click', () => {
      media.muted = !media.muted;
      muteBtn.setAttribute('aria-pressed', String(media.muted));
      muteBtn.textContent = media.muted ? 'Unmute' : 'Mute';
    });
    const dl = el('button', { type: 'button', text: 'Download', 'aria-label': 'Download ' + t.file, onclick: () => download(rec.id, t.file) });
    const item = el('li', { class: 'track', 'data-index': String(i) },
      el('h3', { text: t.display_name || t.user_id, title: t.user_id }),
      el('span', { class: 'sub', text: [t.device_id, t.purpose].filter(Boolean).join(' · ') || '\u00a0' }),
      el('span', { class: 'sub', text: `${t.kind} · ${t.codec || t.container} · ${fmtBytes(t.bytes)} · from ${fmtOffset(offset)}, ${fmtOffset(duration)} long` }),
      t.kind === 'video' ? media : el('div', { class: 'audio-face', 'aria-hidden': 'true', text: '♪ audio' }),
      t.kind === 'video' ? null : media,
      lane, state,
      el('div', { class: 'buttons' }, muteBtn, dl));
    list.append(item);
    timeline.add(media, offset, duration, { lane, head, offset, duration, mutes: t.mute_intervals, started: t.started_at });

    fetchBlob(rec.id, t.file, abort.signal).then((url) => {
      if (current === null || current.abort !== abort) { URL.revokeObjectURL(url); return; }
      current.urls.set(t.file, url);
      media.src = url;
      state.textContent = '';
      media.addEventListener('loadedmetadata', () => { drawLanes(); timeline.sync(true); }, { once: true });
    }).catch((err) => {
      if (err.name === 'AbortError') return;
      state.textContent = 'Could not load: ' + err.message;
    });
  });

  timeline.onTick = (t) => {
    $('#clock').textContent = `${fmtDuration(t)} / ${fmtDuration(timeline.length)}`;
    const seek = $('#seek');
    seek.max = String(timeline.length);
    if (!seeking) seek.value = String(t);
    seek.setAttribute('aria-valuetext', `${fmtDuration(t)} of ${fmtDuration(timeline.length)}`);
    for (const it of timeline.items) {
      it.lane.head.style.left = timeline.length > 0 ? `${(t / timeline.length) * 100}%` : '0';
    }
    const btn = $('#play');
    btn.textContent = timeline.playing ? 'Pause' : 'Play';
    btn.setAttribute('aria-label', timeline.playing ? 'Pause all tracks' : 'Play all tracks');
  };
  drawLanes();
  timeline.sync(true);

  $('#player').hidden = false;
  markCurrentRow();
  $('#player-h').focus();
}

// ---- mixdown: the whole call as one file, shown first ----

let mixdownTimer = 0;

function setPerParticipant(show) {
  $('#per-participant').hidden = !show;
  const btn = $('#show-tracks');
  btn.setAttribute('aria-expanded', String(show));
  btn.textContent = show ? 'Hide participants' : 'Each participant';
}

// showMixdown plays the mixdown (the WebM when there is video) when there
// is one; the per-participant view is then one click away.
function showMixdown(rec, abort) {
  const m = rec.mixdown;
  const files = (m && m.files) || [];
  const file = files.find((f) => f.container === 'webm') || files.find((f) => f.container === 'ogg');
  const box = $('#mixdown-media');
  box.replaceChildren();
  $('#mixdown-download').hidden = !file;
  $('#mixdown-make').hidden = rec.state === 'recording';
  $('#mixdown-make').textContent = file ? 'Make again' : 'Make mixdown';
  let text = '';
  if (!m) text = rec.state === 'recording' ? 'Made when the recording ends.' : 'No mixdown yet.';
  else if (m.state === 'queued') text = 'Mixdown waiting…';
  else if (m.state === 'running') text = `Mixing down… ${Math.round((m.progress || 0) * 100)} %`;
  else if (m.state === 'failed') text = 'Mixdown failed: ' + (m.error || 'unknown error');
  $('#mixdown-state').textContent = text;
  setPerParticipant(!file);
  $('#show-tracks').hidden = !file;
  if (m && (m.state === 'queued' || m.state === 'running')) {
    mixdownTimer = setTimeout(() => refreshMixdown(rec.id, abort), 2000);
  }
  if (!file) return;
  const media = el(file.container === 'webm' ? 'video' : 'audio', {
    controls: true, preload: 'auto', playsinline: true, 'data-file': file.file, 'aria-label': 'The whole call, all participants mixed',
  });
  box.append(media);
  $('#mixdown-download').onclick = () => download(rec.id, file.file);
  fetchBlob(rec.id, file.file, abort.signal).then((url) => {
    if (current === null || current.abort !== abort) { URL.revokeObjectURL(url); return; }
    current.urls.set(file.file, url);
    media.src = url;
  }).catch((err) => {
    if (err.name !== 'AbortError') $('#mixdown-state').textContent = 'Could not load: ' + err.message;
  });
}

async function refreshMixdown(recID, abort) {
  if (!current || current.abort !== abort) return;
  let rec;
  try {
    rec = await apiJSON('/api/v1/recordings/' + encodeURIComponent(recID), { signal: abort.signal });
  } catch (err) {
    if (err.name !== 'AbortError') reportError('Loading the mixdown state failed', err);
    return;
  }
  if (!current || current.abort !== abort) return;
  current.rec.mixdown = rec.mixdown;
  const wasShown = !$('#per-participant').hidden;
  showMixdown(rec, abort);
  if (wasShown) setPerParticipant(true);
}

$('#show-tracks').addEventListener('click', () => {
  const show = $('#per-participant').hidden;
  if (show) for (const m of $('#mixdown-media').querySelectorAll('audio, video')) m.pause();
  else if (current) current.timeline.pause();
  setPerParticipant(show);
});

$('#mixdown-make').addEventListener('click', async () => {
  if (!current) return;
  const { rec, abort } = current;
  try {
    await api('/api/v1/recordings/' + encodeURIComponent(rec.id) + '/mixdown', { method: 'POST' });
  } catch (err) {
    reportError('Asking for a mixdown failed', err);
    return;
  }
  status('Mixdown queued.');
  clearTimeout(mixdownTimer);
  refreshMixdown(rec.id, abort);
});

// drawLanes places each file's span and mute intervals on its lane.
function drawLanes() {
  if (!current) return;
  const tl = current.timeline;
  const pct = (s) => (tl.length > 0 ? `${Math.max(0, Math.min(100, (s / tl.length) * 100))}%` : '0');
  for (const it of tl.items) {
    const l = it.lane;
    const span = l.lane.querySelector('.span');
    span.style.left = pct(l.offset);
    span.style.width = pct(tl.itemLength(it));
    for (const old of l.lane.querySelectorAll('.muted')) old.remove();
    const start = Date.parse(l.started);
    for (const m of l.mutes || []) {
      const a = (Date.parse(m.start) - start) / 1000 + l.offset;
      const b = (Date.parse(m.end) - start) / 1000 + l.offset;
      if (!(b > a)) continue;
      const mark = el('div', { class: 'muted', title: 'muted' });
      mark.style.left = pct(a);
      mark.style.width = pct(b - a);
      l.lane.insertBefore(mark, l.head);
    }
  }
}

let seeking = false;
$('#play').addEventListener('click', () => {
  if (!current) return;
  if (current.timeline.playing) current.timeline.pause(); else current.timeline.play();
});
$('#seek').addEventListener('input', (ev) => {
  seeking = true;
  if (current) current.timeline.seek(parseFloat(ev.target.value));
});
$('#seek').addEventListener('change', () => { seeking = false; });
$('#close').addEventListener('click', () => {
  closePlayer();
  const btn = $('#recordings tbody button');
  if (btn) btn.focus();
});

async function download(recID, name) {
  let url = current && current.rec.id === recID ? current.urls.get(name) : undefined;
  let temporary = false;
  try {
    if (!url) {
      url = await fetchBlob(recID, name);
      temporary = true;
    }
    const a = el('a', { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) {
    reportError('Download failed', err);
  } finally {
    if (temporary) setTimeout(() => URL.revokeObjectURL(url), 60000);
  }
}

$('#download-manifest').addEventListener('click', () => { if (current) download(current.rec.id, 'manifest.json'); });

$('#delete').addEventListener('click', async () => {
  if (!current) return;
  const rec = current.rec;
  if (!confirm(`Delete the recording of ${rec.room_id} from ${fmtTime(rec.started_at)} and all its files? This cannot be undone.`)) return;
  try {
    await api('/api/v1/recordings/' + encodeURIComponent(rec.id), { method: 'DELETE' });
  } catch (err) {
    reportError('Delete failed', err);
    return;
  }
  closePlayer();
  status('Recording deleted.');
  loadRecordings(false);
});

// Space toggles playback when the focus is not on a control that uses it.
document.addEventListener('keydown', (ev) => {
  if (!current || $('#player').hidden || ev.key !== ' ') return;
  const tag = document.activeElement && document.activeElement.tagName;
  if (['INPUT', 'SELECT', 'TEXTAREA', 'BUTTON', 'A'].includes(tag)) return;
  ev.preventDefault();
  $('#play').click();
});

if (token) showApp(); else showLogin('');

// stopReasonText says why a recording stopped (the API's stop_reason).
function stopReasonText(reason) {
  return {
    stopped: 'stopped on request',
    empty: 'everyone else left',
    no_media: 'no media arrived',
    max_duration: 'maximum length reached',
    call_ended: 'the call ended',
    removed: 'recorder removed from the room',
    shutdown: 'recorder shut down',
    size_limit: 'size limit reached',
    disk_full: 'no disk space left',
    recorder_restarted: 'the call ended while the recorder restarted',
    interrupted: 'recorder interrupted (files repaired)',
  }[reason] || reason;
}
