// hifitrt service page. Plain browser JavaScript, no dependencies, no build step.
//
// It uses only the public API, like any client: GET /v1/voices, POST /v1/audio/speech and
// POST /v1/vocode (streamed raw s16le PCM, played chunk by chunk with Web Audio as it
// arrives), GET /metrics (Prometheus text, polled for the live panel).
// Test hooks: #result carries data-state (idle|running|done|error), data-samples (decoded),
// data-chunks (network chunks decoded), data-scheduled (Web Audio buffers started),
// data-first-audio-ms, data-sample-rate, data-total-ms; #live carries data-polls.
'use strict';

(() => {
  // The page never hangs: a request with no data for IDLE_TIMEOUT_MS (``?timeout_s=N`` in the
  // page's address sets it, for slow links) or unfinished after REQUEST_TIMEOUT_MS is dropped
  // with a one-line message and a Retry button.
  const PAGE_TIMEOUT_S = Number(new URLSearchParams(window.location.search).get('timeout_s'));
  const IDLE_TIMEOUT_MS = PAGE_TIMEOUT_S > 0 ? PAGE_TIMEOUT_S * 1000 : 30000;
  const REQUEST_TIMEOUT_MS = Math.max(120000, 4 * IDLE_TIMEOUT_MS);
  const METRICS_EVERY_MS = 1500;
  const BATCH_WINDOW_MS = 60000;
  const START_AHEAD_S = 0.05; // schedule the first chunk slightly ahead of "now"

  // Metric names (see the module docstring of hifitrt.serving.metrics).
  const METRICS = {
    inFlight: 'hifitrt_requests_in_flight',
    queueDepth: 'hifitrt_queue_depth',
    batchSize: 'hifitrt_batch_size', // histogram: _sum / _count
    audioSeconds: 'hifitrt_audio_seconds_total',
    errors: 'hifitrt_errors_total', // counter labelled by kind
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    key: null, // the API key, in memory only
    voices: [], // served voices (engines), as /v1/voices lists them
    choices: [], // the picker's entries: {speech: model voice | null, served: voice}
    textToSpeech: true,
    retry: null,
    busy: false,
    audio: null, // AudioContext, made on the first click
    player: null,
    downloadUrl: null,
    history: [], // [{t, sum, count}] of the batch size histogram
  };

  class ApiError extends Error {
    constructor(message, status = 0) {
      super(message);
      this.status = status;
    }
  }

  function oneLine(text) {
    const line = String(text ?? '').split(/\r?\n/).map((s) => s.trim()).find(Boolean) || '';
    return line.length > 300 ? `${line.slice(0, 297)}...` : line;
  }

  async function errorFrom(response) {
    let message = '';
    try {
      const body = await response.json();
      const err = body && body.error;
      if (err && typeof err === 'object' && err.message) message = err.message;
      else if (typeof err === 'string') message = err;
      else if (body && typeof body.detail === 'string') message = body.detail;
      else if (body && Array.isArray(body.detail) && body.detail[0] && body.detail[0].msg) message = body.detail[0].msg;
    } catch (_) {
      // not JSON: fall back to the status line
    }
    if (!message) message = `the service answered HTTP ${response.status} ${response.statusText}`;
    return new ApiError(oneLine(message), response.status);
  }

  // A deadline for one request: a total limit and an idle limit between received chunks.
  function deadline(totalMs, idleMs) {
    const controller = new AbortController();
    let reason = '';
    const abort = (why) => {
      if (!reason) {
        reason = why;
        controller.abort();
      }
    };
    const total = setTimeout(() => abort(`no complete answer within ${totalMs / 1000} s`), totalMs);
    let idle = null;
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => abort(`no data for ${idleMs / 1000} s`), idleMs);
    };
    touch();
    return {
      signal: controller.signal,
      touch,
      reason: () => reason,
      // Clears the timers and drops the connection if its body was left unread (an error
      // answer after the headers); after a complete answer the abort changes nothing.
      done() {
        clearTimeout(total);
        clearTimeout(idle);
        controller.abort();
      },
    };
  }

  function authHeaders(extra) {
    const headers = new Headers(extra || {});
    if (state.key) headers.set('Authorization', `Bearer ${state.key}`);
    return headers;
  }

  // fetch + the service's error shape -> Response (2xx) or ApiError with one line.
  async function call(path, init, limit) {
    let response;
    try {
      response = await fetch(path, { ...init, headers: authHeaders(init && init.headers), signal: limit.signal });
    } catch (err) {
      throw transportError(err, limit);
    }
    if (response.ok) return response;
    if (response.status === 401) askForKey();
    throw await errorFrom(response);
  }

  function transportError(err, limit) {
    if (err instanceof ApiError) return err;
    if (limit && limit.reason()) return new ApiError(`timed out: ${limit.reason()}`);
    if (err instanceof TypeError && /fetch|network/i.test(err.message)) {
      return new ApiError('cannot reach the service (is it still running?)');
    }
    return new ApiError(oneLine(err && err.message ? err.message : err));
  }

  async function getJson(path) {
    const limit = deadline(15000, 15000);
    try {
      const response = await call(path, { method: 'GET' }, limit);
      return await response.json();
    } catch (err) {
      throw transportError(err, limit);
    } finally {
      limit.done();
    }
  }

  // ---- voices -----------------------------------------------------------------------------

  // /v1/voices: {default, voices: [{name, sample_rate, backend, precision, ...}], speech,
  // speech_voices: [model voice], speech_engines: {model voice: served voice}}.
  function servedVoices(body) {
    const list = Array.isArray(body) ? body : (body && (body.voices || body.data)) || [];
    return list.map((v) => (typeof v === 'string' ? { name: v } : { ...v, name: v.name || v.id }));
  }

  // What the picker offers: with text to speech, the model's voices (each vocoded by a served
  // voice); vocoder only, the served voices themselves.
  function choicesFrom(body, served) {
    const byName = new Map(served.map((v) => [v.name, v]));
    const fallback = byName.get(body && body.default) || served[0];
    if (!state.textToSpeech || !Array.isArray(body.speech_voices) || !body.speech_voices.length) {
      return served.map((v) => ({ speech: null, served: v }));
    }
    const engines = body.speech_engines || {};
    return body.speech_voices.map((name) => ({
      speech: name, served: byName.get(engines[name]) || byName.get(name) || fallback,
    }));
  }

  function describe(choice) {
    const v = choice.served || {};
    const parts = [v.sample_rate ? `${v.sample_rate} Hz` : '', v.backend || '', v.precision || ''].filter(Boolean);
    let label = choice.speech || v.name;
    if (choice.speech && v.name && v.name !== choice.speech) label += ` → ${v.name}`;
    return parts.length ? `${label} (${parts.join(', ')})` : label;
  }

  function reportUrl(name) {
    return `/v1/voices/${encodeURIComponent(name)}/report`;
  }

  async function loadVoices() {
    setStatus($('service-status'), 'Loading voices…');
    let body;
    try {
      body = await getJson('/v1/voices');
    } catch (err) {
      setStatus($('service-status'), `Cannot list voices: ${err.message}`);
      return;
    }
    state.voices = servedVoices(body);
    state.textToSpeech = textToSpeechFrom(body);
    state.choices = choicesFrom(body, state.voices);
    const select = $('voice');
    select.replaceChildren(...state.choices.map((c, i) => new Option(describe(c), String(i))));
    select.disabled = state.choices.length === 0;
    fillVoiceTable();
    describeMel();
    applyMode();
    const n = state.voices.length;
    const mode = state.textToSpeech ? 'text to speech and vocoding' : 'vocoder only (no --model): upload a mel';
    setStatus($('service-status'), `${n} engine${n === 1 ? '' : 's'} · ${mode}`);
  }

  // The service says whether it has a text-to-speech model (``speech``). Without the field a
  // Speak is still offered, and a service without a model answers it with its own one line.
  function textToSpeechFrom(body) {
    if (body && typeof body === 'object' && typeof body.speech === 'boolean') return body.speech;
    return true;
  }

  function describeMel() {
    const choice = selected();
    const channels = choice && choice.served.in_channels ? choice.served.in_channels : 'channels';
    $('mel-shape').textContent = `[${channels}, frames]`;
  }

  function applyMode() {
    const ready = state.choices.length > 0 && !state.busy;
    $('result').setAttribute('aria-busy', String(state.busy));
    $('speak').textContent = state.busy ? 'Working…' : 'Speak';
    $('vocode').textContent = state.busy ? 'Working…' : 'Vocode';
    $('speak-form').hidden = !state.textToSpeech;
    $('speak').disabled = !ready || !state.textToSpeech;
    $('vocode').disabled = !ready;
    if (!state.textToSpeech) $('mel-panel').open = true;
  }

  function fillVoiceTable() {
    const rows = state.voices.map((v) => {
      const tr = document.createElement('tr');
      const cell = (text, cls) => {
        const td = document.createElement('td');
        td.textContent = text ?? '–';
        if (cls) td.className = cls;
        return td;
      };
      const th = document.createElement('th');
      th.scope = 'row';
      th.textContent = v.name;
      const link = document.createElement('a');
      link.href = reportUrl(v.name);
      link.target = '_blank';
      link.textContent = 'report';
      link.setAttribute('aria-label', `parity report of ${v.name} (opens in a new tab)`);
      link.addEventListener('click', (event) => openReport(event, v.name));
      const reportCell = document.createElement('td');
      reportCell.append(link);
      const rate = cell(v.sample_rate ? `${v.sample_rate} Hz` : null, 'num');
      tr.append(th, rate, cell(v.backend), cell(v.precision), reportCell);
      checkReport(v.name, reportCell);
      return tr;
    });
    $('voices').tBodies[0].replaceChildren(...rows);
  }

  // HEAD the report so a voice whose engine has none says so instead of linking to a 404.
  async function checkReport(name, cellEl) {
    try {
      const response = await fetch(reportUrl(name), { method: 'HEAD', headers: authHeaders() });
      if (response.status === 404) cellEl.textContent = 'none';
    } catch (_) {
      // keep the link: it will show the error itself
    }
  }

  // Without a key the link opens directly; with one, the page fetches the report with the key
  // and opens it from memory (a link cannot carry an Authorization header).
  async function openReport(event, name) {
    if (!state.key) return;
    event.preventDefault();
    const win = window.open('', '_blank');
    const limit = deadline(15000, 15000);
    try {
      const response = await call(reportUrl(name), { method: 'GET' }, limit);
      const blob = await response.blob();
      const url = URL.createObjectURL(new Blob([blob], { type: 'text/html' }));
      if (win) win.location = url;
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (err) {
      if (win) win.close();
      showError(transportError(err, limit).message, null);
    } finally {
      limit.done();
    }
  }

  // ---- speaking and vocoding --------------------------------------------------------------

  function selected() {
    return state.choices[Number($('voice').value)] || state.choices[0];
  }

  function speak() {
    const choice = selected();
    const text = $('text').value.trim();
    if (!text) {
      showError('type some text first', null);
      return;
    }
    const voice = choice.speech || choice.served.name;
    const body = JSON.stringify({ model: 'hifitrt', input: text, voice, response_format: 'pcm', stream: true });
    run(() => speak(), choice.served, '/v1/audio/speech', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body,
    }, 'speech.wav');
  }

  async function vocode() {
    const voice = selected().served;
    const file = $('mel-file').files[0];
    if (!file) {
      showError('choose a .npy mel file first', null);
      return;
    }
    const body = await file.arrayBuffer();
    const query = new URLSearchParams({ voice: voice.name, format: 'pcm', stream: 'true' });
    const name = `${file.name.replace(/\.npy$/i, '') || 'mel'}.wav`;
    run(() => vocode(), voice, `/v1/vocode?${query}`, {
      method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body,
    }, name);
  }

  async function run(again, voice, path, init, downloadName) {
    if (state.busy) return;
    state.busy = true;
    state.retry = again;
    applyMode();
    resetResult();
    stopPlayback();
    const ctx = audioContext();
    const result = $('result');
    result.dataset.state = 'running';
    setStatus($('result-status'), `Sending to ${voice.name}…`);
    const t0 = performance.now();
    const limit = deadline(REQUEST_TIMEOUT_MS, IDLE_TIMEOUT_MS);
    try {
      const response = await call(path, init, limit);
      const rate = Number(response.headers.get('X-Sample-Rate')) || Number(voice.sample_rate);
      if (!rate) throw new ApiError('the answer has no X-Sample-Rate header');
      result.dataset.sampleRate = String(rate);
      const player = new StreamPlayer(ctx, rate);
      state.player = player;
      const reader = response.body.getReader();
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (err) {
          throw limit.reason() ? transportError(err, limit) : new ApiError('the stream broke off before the end');
        }
        if (chunk.done) break;
        limit.touch();
        const added = player.push(chunk.value);
        if (added > 0 && !result.dataset.firstAudioMs) {
          result.dataset.firstAudioMs = (performance.now() - t0).toFixed(1);
          setStatus($('result-status'), 'Playing as it streams in…');
        }
        result.dataset.samples = String(player.samples);
        result.dataset.chunks = String(player.chunks.length);
        result.dataset.scheduled = String(player.scheduled);
      }
      const totalMs = performance.now() - t0;
      result.dataset.totalMs = totalMs.toFixed(1);
      showFigures(player, totalMs);
      showDownload(player, downloadName);
      result.dataset.state = 'done';
      const where = ctx ? '' : ' (this browser has no audio output; the audio was decoded, not played)';
      setStatus($('result-status'), `Done: ${player.samples} samples at ${rate} Hz${where}.`);
    } catch (err) {
      result.dataset.state = 'error';
      showError(transportError(err, limit).message, again);
      setStatus($('result-status'), 'Failed.');
    } finally {
      limit.done();
      state.busy = false;
      applyMode();
    }
  }

  function audioContext() {
    if (!state.audio) {
      try {
        const Ctx = window.AudioContext || window.webkitAudioContext;
        state.audio = Ctx ? new Ctx() : null;
      } catch (_) {
        state.audio = null;
      }
    }
    if (state.audio && state.audio.state === 'suspended') state.audio.resume().catch(() => {});
    return state.audio;
  }

  function stopPlayback() {
    if (state.player) state.player.stop();
    state.player = null;
  }

  // Raw s16le bytes in, AudioBufferSourceNodes scheduled back to back as the bytes arrive.
  class StreamPlayer {
    constructor(ctx, rate) {
      this.ctx = ctx;
      this.rate = rate;
      this.carry = null; // an odd trailing byte waits for the next chunk
      this.chunks = []; // Int16Array pieces, for the download
      this.samples = 0;
      this.next = 0;
      this.scheduled = 0; // AudioBufferSourceNodes started, one per decoded chunk
      this.sources = [];
    }

    push(bytes) {
      if (this.carry) {
        const joined = new Uint8Array(bytes.length + 1);
        joined[0] = this.carry;
        joined.set(bytes, 1);
        bytes = joined;
        this.carry = null;
      }
      const even = bytes.length - (bytes.length % 2);
      if (even < bytes.length) this.carry = bytes[even];
      if (even === 0) return 0;
      const view = new DataView(bytes.buffer, bytes.byteOffset, even);
      const pcm = new Int16Array(even / 2);
      for (let i = 0; i < pcm.length; i += 1) pcm[i] = view.getInt16(2 * i, true);
      this.chunks.push(pcm);
      this.samples += pcm.length;
      if (this.ctx) this.schedule(pcm);
      return pcm.length;
    }

    schedule(pcm) {
      const buffer = this.ctx.createBuffer(1, pcm.length, this.rate);
      const channel = buffer.getChannelData(0);
      for (let i = 0; i < pcm.length; i += 1) channel[i] = pcm[i] / 32768;
      const source = this.ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(this.ctx.destination);
      const now = this.ctx.currentTime;
      if (this.next < now) this.next = now + START_AHEAD_S; // first chunk, or the stream fell behind
      source.start(this.next);
      this.next += buffer.duration;
      this.scheduled += 1;
      this.sources.push(source);
      source.onended = () => {
        this.sources = this.sources.filter((s) => s !== source);
      };
    }

    stop() {
      for (const source of this.sources) {
        try {
          source.stop();
        } catch (_) {
          // already ended
        }
      }
      this.sources = [];
    }
  }

  function wavBlob(chunks, samples, rate) {
    const header = new DataView(new ArrayBuffer(44));
    const text = (offset, s) => [...s].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
    text(0, 'RIFF');
    header.setUint32(4, 36 + samples * 2, true);
    text(8, 'WAVE');
    text(12, 'fmt ');
    header.setUint32(16, 16, true);
    header.setUint16(20, 1, true); // PCM
    header.setUint16(22, 1, true); // mono
    header.setUint32(24, rate, true);
    header.setUint32(28, rate * 2, true);
    header.setUint16(32, 2, true);
    header.setUint16(34, 16, true);
    text(36, 'data');
    header.setUint32(40, samples * 2, true);
    const body = chunks.map((pcm) => {
      const bytes = new DataView(new ArrayBuffer(pcm.length * 2));
      pcm.forEach((v, i) => bytes.setInt16(2 * i, v, true));
      return bytes;
    });
    return new Blob([header, ...body], { type: 'audio/wav' });
  }

  // ---- result display ---------------------------------------------------------------------

  function setStatus(el, text) {
    el.textContent = text;
  }

  function resetResult() {
    const result = $('result');
    Object.assign(result.dataset, {
      samples: '0', chunks: '0', scheduled: '0', firstAudioMs: '', sampleRate: '', totalMs: '',
    });
    $('error').hidden = true;
    $('figures').hidden = true;
    $('download').hidden = true;
  }

  function showError(message, again) {
    $('error-text').textContent = oneLine(message);
    $('retry').hidden = !again;
    $('error').hidden = false;
  }

  function showFigures(player, totalMs) {
    const first = Number($('result').dataset.firstAudioMs);
    const seconds = player.samples / player.rate;
    $('fig-first').textContent = Number.isFinite(first) && first > 0 ? `${first.toFixed(0)} ms` : '–';
    $('fig-total').textContent = `${(totalMs / 1000).toFixed(2)} s`;
    $('fig-duration').textContent = `${seconds.toFixed(2)} s`;
    $('fig-rtf').textContent = seconds > 0 ? (totalMs / 1000 / seconds).toFixed(3) : '–';
    $('fig-chunks').textContent = String(player.chunks.length);
    $('figures').hidden = false;
  }

  function showDownload(player, name) {
    if (state.downloadUrl) URL.revokeObjectURL(state.downloadUrl);
    state.downloadUrl = URL.createObjectURL(wavBlob(player.chunks, player.samples, player.rate));
    const link = $('download');
    link.href = state.downloadUrl;
    link.download = name;
    link.textContent = `Download WAV (${(player.samples / player.rate).toFixed(2)} s)`;
    link.hidden = player.samples === 0;
  }

  // ---- API key ----------------------------------------------------------------------------

  function askForKey() {
    const panel = $('key-panel');
    if (panel.hidden) {
      panel.hidden = false;
      $('api-key').focus();
    }
  }

  function useKey(event) {
    event.preventDefault();
    const value = $('api-key').value.trim();
    if (!value) return;
    state.key = value;
    $('api-key').value = '';
    $('key-panel').hidden = true;
    loadVoices();
  }

  // ---- live panel -------------------------------------------------------------------------

  function parseMetrics(text) {
    const out = new Map();
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
      if (!out.has(m[1])) out.set(m[1], []);
      out.get(m[1]).push({ labels, value: Number(m[3]) });
    }
    return out;
  }

  function sum(metrics, name) {
    const samples = metrics.get(name);
    return samples ? samples.reduce((acc, s) => acc + s.value, 0) : null;
  }

  function meanBatch(metrics, now) {
    const total = sum(metrics, `${METRICS.batchSize}_sum`);
    const count = sum(metrics, `${METRICS.batchSize}_count`);
    if (total === null || count === null) return ['–', ''];
    state.history.push({ t: now, sum: total, count });
    // keep the last minute, plus the newest sample older than it as the baseline
    while (state.history.length > 1 && state.history[1].t <= now - BATCH_WINDOW_MS) state.history.shift();
    const base = state.history[0];
    const batches = count - base.count;
    if (batches > 0) {
      return [((total - base.sum) / batches).toFixed(2), `${batches} engine call${batches === 1 ? '' : 's'}`];
    }
    return ['idle', count > 0 ? `${(total / count).toFixed(2)} overall` : ''];
  }

  function showErrors(metrics) {
    const byKind = new Map();
    for (const s of metrics.get(METRICS.errors) || []) {
      const kind = s.labels.kind || s.labels.type || s.labels.reason || 'other';
      byKind.set(kind, (byKind.get(kind) || 0) + s.value);
    }
    const items = [...byKind].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).map(([kind, n]) => {
      const li = document.createElement('li');
      li.textContent = `${kind}: ${n}`;
      return li;
    });
    if (!items.length) {
      const li = document.createElement('li');
      li.className = 'muted';
      li.textContent = 'none';
      items.push(li);
    }
    $('m-errors').replaceChildren(...items);
  }

  const number = (v, digits = 0) => (v === null ? '–' : v.toFixed(digits));

  async function pollMetrics() {
    if (document.hidden || (!state.key && !$('key-panel').hidden)) return;
    const limit = deadline(5000, 5000);
    try {
      const response = await call('/metrics', { method: 'GET' }, limit);
      const metrics = parseMetrics(await response.text());
      const now = Date.now();
      // this scrape is itself a request in flight while the gauge is read: leave it out
      const inFlight = sum(metrics, METRICS.inFlight);
      $('m-inflight').textContent = number(inFlight === null ? null : Math.max(0, inFlight - 1));
      $('m-queue').textContent = number(sum(metrics, METRICS.queueDepth));
      const [batch, note] = meanBatch(metrics, now);
      $('m-batch').textContent = batch;
      $('m-batch-note').textContent = note;
      const audio = sum(metrics, METRICS.audioSeconds);
      $('m-audio').textContent = audio === null ? '–' : `${audio.toFixed(1)} s`;
      showErrors(metrics);
      $('m-updated').textContent = `Updated ${new Date(now).toLocaleTimeString()}`;
      const live = $('live');
      live.dataset.polls = String(Number(live.dataset.polls) + 1);
    } catch (err) {
      $('m-updated').textContent = `Metrics unavailable: ${transportError(err, limit).message}`;
    } finally {
      limit.done();
    }
  }

  // ---- wiring -----------------------------------------------------------------------------

  function start() {
    $('speak-form').addEventListener('submit', (event) => {
      event.preventDefault();
      speak();
    });
    $('mel-form').addEventListener('submit', (event) => {
      event.preventDefault();
      vocode();
    });
    $('text').addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        speak();
      }
    });
    $('retry').addEventListener('click', () => state.retry && state.retry());
    $('voice').addEventListener('change', describeMel);
    $('key-form').addEventListener('submit', useKey);
    loadVoices();
    pollMetrics();
    setInterval(pollMetrics, METRICS_EVERY_MS);
  }

  start();
})();
