/* sdgate web UI — plain JS, no build step, nothing loaded from elsewhere.
 *
 * Talks to the gateway over the websocket at /ws (same origin); protocol in web/README.md.
 *
 * Stable hooks for end-to-end tests (ids are unique; data-testid may repeat per card):
 *   Form:     #gen-form, #prompt, #negative-prompt, #sampler, #steps, #cfg, #width, #height,
 *             #seed, #seed-random, #refiner-switch (range 0..1; 0 = no refiner),
 *             #refiner-value, #gpu-toggles with .gpu-toggle input[type=checkbox][value=<class>]
 *             and [data-testid=gpu-counts-<class>] (text "N idle · N busy[ · N down]"),
 *             #init-image (file input "Start from an image", also a drop on #drop-zone),
 *             #init-chosen with #init-preview, #init-name, #init-remove (shown with an image),
 *             #strength (range 0..1, denoising_strength; #strength-field is shown only with
 *             an image), #generate (also Enter in an input, Ctrl/Cmd+Enter in the form).
 *   Errors:   [data-testid=field-error-<field>] next to each input, <field> being the request
 *             field: prompt, negative_prompt, sampler_name, steps, cfg_scale, width, height,
 *             seed, refiner_switch_at, gpus, init_image, denoising_strength. #status /
 *             [data-testid=status]: other errors and notices (data-kind="error"|"info").
 *   Link:     #connection / [data-testid=connection], data-state = connecting|open|closed;
 *             #reconnect (retry now).
 *   Jobs:     #jobs holds [data-testid=job-card] (newest first), data-job-id = client id,
 *             data-server-job = accepted.job, data-state = sending|accepted|queued|running|
 *             done|error|cancelled, data-mode = txt2img|img2img. Inside: job-prompt, job-state,
 *             job-mode ("img2img", shown for a job started from an image), queue-position, progress
 *             (<progress> value/max = step/steps), job-preview (live <img>), job-image (final
 *             <img>), job-error, job-provider, job-location, job-gpu, job-seed,
 *             job-inference-ms, job-total-ms (text like "3.42 s"; raw ms in data-ms),
 *             job-download (<a download>), job-cancel, job-reuse-seed.
 *   History:  #history with [data-testid=history-item] buttons (newest first) opening
 *             #viewer / [data-testid=viewer] with viewer-image, viewer-download, viewer-close.
 *   Board:    #board (table) with tbody rows [data-testid=board-row] (data-state, data-gpu,
 *             data-simulated); cells data-testid board-provider, board-location, board-gpu,
 *             board-state, board-jobs, board-mean, board-price.
 */
(function () {
  'use strict';

  const $ = (sel, root) => (root || document).querySelector(sel);
  const DEFAULT_SAMPLER = 'DPM++ SDE Karras';
  const MAX_CARDS = 12;
  const FIELD_INPUT = {
    prompt: 'prompt', negative_prompt: 'negative-prompt', sampler_name: 'sampler',
    scheduler: 'sampler', steps: 'steps', cfg_scale: 'cfg', width: 'width', height: 'height',
    seed: 'seed', refiner_switch_at: 'refiner-switch', gpus: 'gpu-toggles',
    init_image: 'init-image', denoising_strength: 'strength',
  };
  const INIT_TYPES = ['image/png', 'image/jpeg', 'image/webp'];

  const state = {
    ws: null,
    connected: false,      // welcome received on the current socket
    retry: 0,
    retryTimer: null,
    countdownTimer: null,
    limits: {
      max_steps: 150, min_steps: 1, max_cfg: 30, min_cfg: 1, max_width: 2048,
      max_height: 2048, min_size: 64, max_prompt: 2000, size_multiple: 8,
      max_init_image_bytes: 8 << 20, init_image_types: INIT_TYPES,
    },
    initImage: null,       // {dataUrl, name, size} of "Start from an image", or null
    samplers: [],
    gpus: new Map(),       // class -> {class, idle, busy, down, simulated}
    gpuChoice: new Map(),  // class -> checked (user's choice survives re-renders)
    backends: [],
    jobs: new Map(),       // client id -> job record
    seq: 0,
  };

  const el = {
    form: $('#gen-form'), prompt: $('#prompt'), negative: $('#negative-prompt'),
    sampler: $('#sampler'), steps: $('#steps'), cfg: $('#cfg'), width: $('#width'),
    height: $('#height'), seed: $('#seed'), refiner: $('#refiner-switch'), prefer: $('#prefer'),
    refinerValue: $('#refiner-value'), gpuToggles: $('#gpu-toggles'), generate: $('#generate'),
    status: $('#status'), conn: $('#connection'), connText: $('#connection-text'),
    reconnect: $('#reconnect'), jobs: $('#jobs'), jobsEmpty: $('#jobs-empty'),
    history: $('#history'), historyEmpty: $('#history-empty'), board: $('#board'),
    boardSummary: $('#board-summary'), viewer: $('#viewer'), announce: $('#announce'),
    promptCount: $('#prompt-count'), template: $('#job-template'),
    initInput: $('#init-image'), dropZone: $('#drop-zone'), initChosen: $('#init-chosen'),
    initPreview: $('#init-preview'), initName: $('#init-name'), initRemove: $('#init-remove'),
    strength: $('#strength'), strengthField: $('#strength-field'), strengthValue: $('#strength-value'),
  };

  /* ---------- small helpers ---------- */

  function h(tag, attrs, ...kids) {
    const n = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === 'text') n.textContent = attrs[k];
      else if (k === 'class') n.className = attrs[k];
      else if (attrs[k] !== undefined && attrs[k] !== null && attrs[k] !== false) n.setAttribute(k, attrs[k]);
    }
    for (const c of kids) if (c != null) n.append(c);
    return n;
  }

  function gpuLabel(cls) {
    if (!cls) return '—';
    const s = String(cls).toUpperCase();
    return s.replace(/^(RTX|GTX|RX)(\d)/, '$1 $2');
  }

  function fmtMs(ms) {
    if (typeof ms !== 'number' || !isFinite(ms)) return '—';
    return ms < 1000 ? Math.round(ms) + ' ms' : (ms / 1000).toFixed(2) + ' s';
  }

  function fmtSeconds(s) {
    return typeof s === 'number' && isFinite(s) && s > 0 ? fmtMs(s * 1000) : '—';
  }

  function fmtPrice(p) {
    return typeof p === 'number' && isFinite(p) ? p.toFixed(2) : '—';
  }

  function codePoints(s) { return Array.from(s).length; }

  // The only types an image Blob is ever made with. A hostile provider once
  // sent `data:text/html;base64,...` with PNG magic in front: a Blob of that
  // type, opened in a new tab, runs script in this origin.
  const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/webp'];

  // type: the message's image_type / preview_type (absent: image/png); a
  // data: prefix inside the payload is dropped and its type ignored.
  function b64ToBlobUrl(b64, type) {
    const mime = type == null ? 'image/png' : String(type);
    if (!IMAGE_TYPES.includes(mime)) throw new Error('not an image type: ' + mime);
    let data = String(b64 || '');
    const m = /^data:[^,]{0,200},/.exec(data);
    if (m) data = data.slice(m[0].length);
    const bin = atob(data);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return URL.createObjectURL(new Blob([bytes], { type: mime }));
  }

  function imageFilename(job) {
    const slug = job.params.prompt.toLowerCase().replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '').slice(0, 40).replace(/-+$/, '') || 'image';
    const seed = job.seed != null ? job.seed : 'x';
    return `sdgate-${slug}-${seed}-${job.params.width}x${job.params.height}.png`;
  }

  function setStatus(msg, kind) {
    el.status.textContent = msg || '';
    el.status.dataset.kind = kind || 'info';
  }

  function announce(msg) {
    el.announce.textContent = '';
    setTimeout(() => { el.announce.textContent = msg; }, 30);
  }

  /* ---------- limits, samplers, sizes ---------- */

  function applyLimits(l) {
    Object.assign(state.limits, l || {});
    const L = state.limits;
    el.steps.min = L.min_steps; el.steps.max = L.max_steps;
    el.cfg.min = L.min_cfg; el.cfg.max = L.max_cfg;
    fillSizes(el.width, L.max_width);
    fillSizes(el.height, L.max_height);
    updatePromptCount();
  }

  function fillSizes(select, max) {
    const L = state.limits;
    const mult = Math.max(1, L.size_multiple | 0 || 8);
    const min = Math.max(mult, Math.ceil((L.min_size || mult) / mult) * mult);
    const prev = parseInt(select.value, 10) || 512;
    select.textContent = '';
    for (let v = min; v <= max; v += mult) {
      select.append(h('option', { value: v, text: String(v) }));
    }
    if (!select.options.length) return;
    // keep the previous choice, or the closest allowed size
    let best = select.options[0];
    for (const o of select.options) {
      if (Math.abs(o.value - prev) < Math.abs(best.value - prev)) best = o;
    }
    select.value = best.value;
  }

  function applySamplers(list) {
    if (!Array.isArray(list) || !list.length) return;
    state.samplers = list.map(String);
    const prev = el.sampler.value;
    el.sampler.textContent = '';
    for (const s of state.samplers) el.sampler.append(h('option', { value: s, text: s }));
    el.sampler.value = state.samplers.includes(prev) ? prev
      : state.samplers.includes(DEFAULT_SAMPLER) ? DEFAULT_SAMPLER : state.samplers[0];
  }

  /* ---------- GPU toggles ---------- */

  function updateGpus(list, fromBoard) {
    if (!Array.isArray(list)) return;
    const seen = new Set();
    for (const g of list) {
      if (!g || typeof g.class !== 'string') continue;
      seen.add(g.class);
      const old = state.gpus.get(g.class) || {};
      state.gpus.set(g.class, {
        class: g.class, idle: g.idle | 0, busy: g.busy | 0, down: g.down | 0,
        simulated: g.simulated !== undefined ? !!g.simulated : !!old.simulated,
      });
      if (!state.gpuChoice.has(g.class)) state.gpuChoice.set(g.class, true);
    }
    // a class that vanished from a full list is shown as gone (0 of everything), not removed,
    // so a ticked choice never disappears under the user's finger
    if (!fromBoard || list.length) {
      for (const [cls, g] of state.gpus) if (!seen.has(cls)) Object.assign(g, { idle: 0, busy: 0, down: 0 });
    }
    renderGpus();
  }

  function simulatedClassesFromBoard() {
    const sim = new Map();
    for (const b of state.backends) {
      if (!b || !b.gpu_class) continue;
      const cur = sim.get(b.gpu_class);
      sim.set(b.gpu_class, (cur === undefined ? true : cur) && !!b.simulated);
    }
    return sim;
  }

  // Updated in place (a board arrives every few seconds; rebuilding would eat clicks and focus).
  function renderGpus() {
    const sim = simulatedClassesFromBoard();
    const classes = [...state.gpus.keys()].sort();
    if (!classes.length) return;
    const have = [...el.gpuToggles.querySelectorAll('.gpu-toggle input')].map((i) => i.value);
    if (have.join() !== classes.join()) {
      const focused = document.activeElement;
      el.gpuToggles.textContent = '';
      for (const cls of classes) {
        const input = h('input', { type: 'checkbox', name: 'gpus', value: cls, id: 'gpu-' + cls });
        input.checked = state.gpuChoice.get(cls) !== false;
        input.addEventListener('change', () => {
          state.gpuChoice.set(cls, input.checked);
          clearFieldError('gpus');
        });
        el.gpuToggles.append(h('label', { class: 'gpu-toggle', for: 'gpu-' + cls, 'data-testid': 'gpu-toggle-' + cls },
          input, h('span', { class: 'gpu-name', text: gpuLabel(cls) }),
          h('span', { class: 'tag', text: 'simulated', hidden: true }),
          h('span', { class: 'gpu-counts', 'data-testid': 'gpu-counts-' + cls })));
        if (focused && focused.value === cls && focused.name === 'gpus') input.focus();
      }
    }
    for (const label of el.gpuToggles.querySelectorAll('.gpu-toggle')) {
      const cls = label.querySelector('input').value;
      const g = state.gpus.get(cls);
      label.classList.toggle('unavailable', g.idle + g.busy === 0);
      label.querySelector('.tag').hidden = !(g.simulated || sim.get(cls) === true);
      label.querySelector('.gpu-counts').textContent =
        `${g.idle} idle · ${g.busy} busy` + (g.down ? ` · ${g.down} down` : '');
    }
  }

  function chosenGpus() {
    const all = [...state.gpus.keys()];
    const chosen = all.filter((c) => state.gpuChoice.get(c) !== false);
    return { all, chosen };
  }

  /* ---------- board ---------- */

  const STATE_ORDER = { idle: 0, busy: 1, down: 2 };

  function renderBoard(msg) {
    state.backends = Array.isArray(msg.backends) ? msg.backends.filter((b) => b && typeof b === 'object') : [];
    if (Array.isArray(msg.gpus)) updateGpus(msg.gpus, true); else renderGpus();
    const tbody = el.board.tBodies[0];
    tbody.textContent = '';
    const rows = state.backends.slice().sort((a, b) =>
      (STATE_ORDER[a.state] ?? 3) - (STATE_ORDER[b.state] ?? 3) ||
      String(a.gpu_class).localeCompare(String(b.gpu_class)) ||
      String(a.provider).localeCompare(String(b.provider)));
    if (!rows.length) {
      tbody.append(h('tr', { class: 'placeholder' }, h('td', { colspan: 7, class: 'muted', text: 'No providers online.' })));
    }
    const n = { idle: 0, busy: 0, down: 0 };
    for (const b of rows) {
      const st = String(b.state || 'unknown');
      if (st in n) n[st]++;
      const loc = String(b.location || '—') + (b.country && !String(b.location || '').includes(b.country) ? ` (${b.country})` : '');
      tbody.append(h('tr', {
        'data-testid': 'board-row', 'data-state': st, 'data-gpu': b.gpu_class || '',
        'data-simulated': b.simulated ? 'true' : 'false',
      },
      h('td', { 'data-testid': 'board-provider', 'data-label': 'Provider', text: String(b.provider || '—') }),
      h('td', { 'data-testid': 'board-location', 'data-label': 'Location', text: loc }),
      h('td', { 'data-testid': 'board-gpu', 'data-label': 'GPU' }, gpuLabel(b.gpu_class),
        b.simulated ? h('span', { class: 'tag', text: 'simulated' }) : null),
      h('td', { 'data-testid': 'board-state', 'data-label': 'State' }, h('span', { class: 'badge st-' + st, text: st })),
      h('td', { 'data-testid': 'board-jobs', 'data-label': 'Jobs', class: 'num', text: String(b.jobs_done ?? '—') }),
      h('td', { 'data-testid': 'board-mean', 'data-label': 'Mean time', class: 'num', text: fmtSeconds(b.mean_inference_s) }),
      h('td', { 'data-testid': 'board-price', 'data-label': 'Price / h', class: 'num', text: fmtPrice(b.price_per_hour) })));
    }
    el.boardSummary.textContent = rows.length ? `(${n.idle} idle, ${n.busy} busy, ${n.down} down)` : '';
  }

  function backendFor(provider, location) {
    return state.backends.find((b) => b.provider === provider && b.location === location);
  }

  /* ---------- field errors and validation ---------- */

  function fieldLabel(field) {
    const input = fieldInput(field);
    const lab = input && (input.labels && input.labels[0] || input.closest('fieldset') && input.closest('fieldset').querySelector('legend'));
    return lab ? lab.firstChild.textContent.trim() : field;
  }

  function fieldInput(field) { return document.getElementById(FIELD_INPUT[field] || ''); }

  function setFieldError(field, msg) {
    const slot = document.getElementById('error-' + field);
    const input = fieldInput(field);
    if (!slot) return false;
    slot.textContent = msg;
    if (input) input.setAttribute('aria-invalid', 'true');
    return true;
  }

  function clearFieldError(field) {
    const slot = document.getElementById('error-' + field);
    if (slot) slot.textContent = '';
    const input = fieldInput(field);
    if (input) input.removeAttribute('aria-invalid');
  }

  function clearAllFieldErrors() {
    for (const f of Object.keys(FIELD_INPUT)) clearFieldError(f);
  }

  function readParams() {
    const num = (input) => (input.value.trim() === '' ? NaN : Number(input.value));
    const refiner = Number(el.refiner.value);
    const p = {
      prompt: el.prompt.value,
      negative_prompt: el.negative.value,
      sampler_name: el.sampler.value,
      steps: num(el.steps),
      cfg_scale: num(el.cfg),
      width: parseInt(el.width.value, 10),
      height: parseInt(el.height.value, 10),
      seed: num(el.seed),
      gpus: [],
    };
    if (refiner > 0) p.refiner_switch_at = Math.min(1, refiner);
    if (state.initImage) {
      p.init_image = state.initImage.dataUrl;   // a data: URL; the gateway checks it again
      p.denoising_strength = num(el.strength);
    }
    if (el.prefer.value === 'cheapest') p.prefer = 'cheapest';   // else the balancer's default: the earliest finish
    const { all, chosen } = chosenGpus();
    p.gpus = chosen.length === all.length ? [] : chosen;   // every class ticked = any GPU
    return { p, noGpu: all.length > 0 && chosen.length === 0 };
  }

  function validate(p, noGpu) {
    const L = state.limits;
    const errs = {};
    const mult = L.size_multiple || 8;
    if (!p.prompt.trim()) errs.prompt = 'Write a prompt.';
    else if (codePoints(p.prompt) > L.max_prompt) errs.prompt = `At most ${L.max_prompt} characters (now ${codePoints(p.prompt)}).`;
    if (codePoints(p.negative_prompt) > L.max_prompt) errs.negative_prompt = `At most ${L.max_prompt} characters.`;
    if (state.samplers.length && !state.samplers.includes(p.sampler_name)) errs.sampler_name = 'Pick a sampler from the list.';
    if (!Number.isInteger(p.steps) || p.steps < L.min_steps || p.steps > L.max_steps) errs.steps = `Whole number from ${L.min_steps} to ${L.max_steps}.`;
    if (!isFinite(p.cfg_scale) || p.cfg_scale < L.min_cfg || p.cfg_scale > L.max_cfg) errs.cfg_scale = `From ${L.min_cfg} to ${L.max_cfg}.`;
    for (const [k, max] of [['width', L.max_width], ['height', L.max_height]]) {
      const v = p[k];
      if (!Number.isInteger(v) || v < L.min_size || v > max || v % mult) errs[k] = `Multiple of ${mult} from ${L.min_size} to ${max}.`;
    }
    if (!Number.isInteger(p.seed) || p.seed < -1 || p.seed > 4294967295) errs.seed = 'Whole number, -1 for random.';
    if (noGpu) errs.gpus = 'Tick at least one GPU class.';
    if (p.init_image !== undefined && !(p.denoising_strength >= 0 && p.denoising_strength <= 1)) errs.denoising_strength = 'From 0 to 1.';
    return errs;
  }

  function updatePromptCount() {
    const n = codePoints(el.prompt.value);
    el.promptCount.textContent = n ? `${n} / ${state.limits.max_prompt}` : '';
    el.promptCount.classList.toggle('over', n > state.limits.max_prompt);
  }

  /* ---------- "Start from an image" (img2img) ---------- */

  // The same checks as the gateway's (type by the file's MIME type here, by
  // its bytes there; size decoded), before reading the file at all.
  function setInitImage(file) {
    clearFieldError('init_image');
    const L = state.limits;
    const types = L.init_image_types || INIT_TYPES;
    if (!types.includes(file.type)) {
      removeInitImage();
      setFieldError('init_image', 'Choose a PNG, JPEG or WebP image.');
      return;
    }
    if (file.size > L.max_init_image_bytes) {
      removeInitImage();
      setFieldError('init_image', `At most ${(L.max_init_image_bytes / 1048576).toFixed(0)} MiB (this one is ${(file.size / 1048576).toFixed(1)} MiB).`);
      return;
    }
    const reader = new FileReader();
    reader.onload = () => {
      const dataUrl = String(reader.result);
      if (!dataUrl.startsWith('data:' + file.type + ';base64,')) {
        setFieldError('init_image', 'The image could not be read.');
        return;
      }
      state.initImage = { dataUrl, name: file.name, size: file.size };
      el.initPreview.src = dataUrl;
      el.initName.textContent = `${file.name} (${(file.size / 1024).toFixed(0)} KiB)`;
      el.initChosen.hidden = false;
      el.strengthField.hidden = false;
      announce('Image chosen: the new image starts from ' + file.name);
    };
    reader.onerror = () => setFieldError('init_image', 'The image could not be read.');
    reader.readAsDataURL(file);
  }

  function removeInitImage() {
    const had = state.initImage !== null;
    state.initImage = null;
    el.initInput.value = '';
    el.initPreview.removeAttribute('src');
    el.initName.textContent = '';
    el.initChosen.hidden = true;
    el.strengthField.hidden = true;
    clearFieldError('denoising_strength');
    if (had) announce('Image removed: the new image starts from noise');
  }

  /* ---------- jobs ---------- */

  const STATE_TEXT = {
    sending: 'Sending', accepted: 'Accepted', queued: 'Queued', running: 'Running',
    done: 'Done', error: 'Failed', cancelled: 'Cancelled',
  };

  function submit() {
    clearAllFieldErrors();
    const { p, noGpu } = readParams();
    const errs = validate(p, noGpu);
    const fields = Object.keys(errs);
    if (fields.length) {
      for (const f of fields) setFieldError(f, errs[f]);
      const first = fieldInput(fields[0]);
      if (first) (first.querySelector ? first.querySelector('input') || first : first).focus();
      setStatus('Please fix the highlighted field' + (fields.length > 1 ? 's.' : '.'), 'error');
      return;
    }
    if (!state.connected) {
      setStatus('Not connected to the gateway yet — wait for “Connected”.', 'error');
      return;
    }
    const id = 'j' + Date.now().toString(36) + '-' + (++state.seq);
    const msg = Object.assign({ type: 'generate', id }, p);
    const params = Object.assign({}, p, { img2img: p.init_image !== undefined });
    delete params.init_image;   // the card needs no copy of the image
    const job = createJob(id, params);
    try {
      state.ws.send(JSON.stringify(msg));
      setStatus('');
    } catch (e) {
      failJob(job, 'Could not send the request: ' + e.message);
    }
  }

  function createJob(id, params) {
    const card = el.template.content.firstElementChild.cloneNode(true);
    const q = (t) => card.querySelector(`[data-testid=${t}]`);
    const job = {
      id, params, card, state: 'sending', seed: null, imageUrl: null, previewUrl: null,
      provider: null, location: null, gpu: null,
      els: {
        state: q('job-state'), position: q('queue-position'), progress: q('progress'),
        preview: q('job-preview'), image: q('job-image'), error: q('job-error'),
        provider: q('job-provider'), location: q('job-location'), gpu: q('job-gpu'),
        seed: q('job-seed'), inference: q('job-inference-ms'), total: q('job-total-ms'),
        download: q('job-download'), cancel: q('job-cancel'), reuse: q('job-reuse-seed'),
        actions: card.querySelector('.actions'),
      },
    };
    card.dataset.jobId = id;
    card.dataset.mode = params.img2img ? 'img2img' : 'txt2img';
    q('job-mode').hidden = !params.img2img;
    card.setAttribute('aria-label', 'Job: ' + params.prompt.slice(0, 80));
    q('job-prompt').textContent = params.prompt;
    q('job-prompt').title = params.prompt;
    job.els.seed.textContent = params.seed === -1 ? 'random' : String(params.seed);
    job.els.image.alt = 'Generated image: ' + params.prompt.slice(0, 200);
    card.querySelector('.frame').style.aspectRatio = `${params.width} / ${params.height}`;
    job.els.cancel.addEventListener('click', () => cancelJob(job));
    job.els.reuse.addEventListener('click', () => {
      if (job.seed == null) return;
      el.seed.value = job.seed;
      clearFieldError('seed');
      el.seed.focus();
    });
    state.jobs.set(id, job);
    el.jobsEmpty.hidden = true;
    el.jobs.prepend(card);
    // keep the page light: drop the oldest finished cards (their images stay in history)
    const cards = [...el.jobs.querySelectorAll('[data-testid=job-card]')];
    for (const c of cards.slice(MAX_CARDS)) {
      const old = state.jobs.get(c.dataset.jobId);
      if (old && isFinal(old)) { c.remove(); state.jobs.delete(old.id); }
    }
    setJobState(job, 'sending');
    // one column (phone): bring the new card into view, the form stays a scroll away
    if (window.matchMedia('(max-width: 860px)').matches) card.scrollIntoView({ block: 'start', behavior: 'smooth' });
    return job;
  }

  function isFinal(job) { return job.state === 'done' || job.state === 'error' || job.state === 'cancelled'; }

  function setJobState(job, st, extra) {
    job.state = st;
    job.card.dataset.state = st;
    job.els.state.textContent = STATE_TEXT[st] + (extra ? ' ' + extra : '');
    job.els.state.className = 'badge st-' + st;
    job.els.cancel.hidden = isFinal(job);
    if (st !== 'queued') job.els.position.textContent = '';
  }

  function cancelJob(job) {
    if (isFinal(job)) return;
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: 'cancel', id: job.id }));
      job.els.cancel.disabled = true;
      job.els.state.textContent = 'Cancelling…';
    } else {
      setJobState(job, 'cancelled');
    }
  }

  function failJob(job, message, code) {
    if (isFinal(job)) return;
    const cancelled = code === 'cancelled';
    setJobState(job, cancelled ? 'cancelled' : 'error');
    job.els.error.textContent = cancelled ? 'Cancelled at your request.' : message;
    job.els.error.hidden = false;
    job.els.preview.hidden = true;
    announce(cancelled ? 'Job cancelled.' : 'Job failed: ' + message);
  }

  function setIdentity(job, m) {
    if (m.provider != null) job.provider = String(m.provider);
    if (m.location != null) job.location = String(m.location);
    if (m.gpu != null) job.gpu = String(m.gpu);
    job.els.provider.textContent = job.provider || '—';
    job.els.location.textContent = job.location || '—';
    const b = backendFor(job.provider, job.location);
    job.els.gpu.textContent = job.gpu ? gpuLabel(job.gpu) + (b && b.simulated ? ' (simulated)' : '') : '—';
  }

  function onJobMessage(job, m) {
    const els = job.els;
    switch (m.type) {
      case 'accepted':
        if (m.job != null) job.card.dataset.serverJob = String(m.job);
        if (job.state === 'sending') setJobState(job, 'accepted');
        break;
      case 'queued': {
        if (isFinal(job)) break;
        setJobState(job, 'queued');
        const pos = Number(m.position);
        els.position.textContent = pos > 0 ? `Position ${pos} in queue` : 'Next in line';
        els.position.dataset.position = String(pos);
        break;
      }
      case 'assigned':
        if (isFinal(job)) break;
        setIdentity(job, m);
        setJobState(job, 'running');
        break;
      case 'progress': {
        if (isFinal(job)) break;
        if (job.state !== 'running') setJobState(job, 'running');
        const steps = Math.max(1, Number(m.steps) || job.params.steps);
        const step = Math.min(steps, Math.max(0, Number(m.step) || 0));
        els.progress.max = steps;
        els.progress.value = step;
        els.progress.setAttribute('aria-valuetext', `step ${step} of ${steps}`);
        job.els.state.textContent = `Running ${step}/${steps}`;
        if (m.preview) {
          try {
            const url = b64ToBlobUrl(m.preview, m.preview_type);
            if (job.previewUrl) URL.revokeObjectURL(job.previewUrl);
            job.previewUrl = url;
            els.preview.src = url;
            els.preview.hidden = false;
          } catch (e) { /* a bad preview is not worth failing the job */ }
        }
        break;
      }
      case 'done': {
        if (isFinal(job)) break;
        try {
          job.imageUrl = b64ToBlobUrl(m.image, m.image_type);
        } catch (e) {
          failJob(job, 'The gateway sent an unreadable image.');
          break;
        }
        if (m.seed != null) job.seed = m.seed;
        setIdentity(job, m);
        setJobState(job, 'done');
        els.progress.max = 1; els.progress.value = 1;
        els.image.src = job.imageUrl;
        els.image.hidden = false;
        els.preview.hidden = true;
        if (job.previewUrl) { URL.revokeObjectURL(job.previewUrl); job.previewUrl = null; }
        els.seed.textContent = job.seed != null ? String(job.seed) : '—';
        job.inference_ms = m.inference_ms; job.total_ms = m.total_ms;
        els.inference.textContent = fmtMs(m.inference_ms);
        els.inference.dataset.ms = String(m.inference_ms);
        els.total.textContent = fmtMs(m.total_ms);
        els.total.dataset.ms = String(m.total_ms);
        els.download.href = job.imageUrl;
        els.download.download = imageFilename(job);
        els.actions.hidden = false;
        addHistory(job);
        announce(`Image ready: ${fmtMs(m.inference_ms)} on ${gpuLabel(job.gpu)} by ${job.provider || 'unknown'}, ${job.location || ''}.`);
        break;
      }
      case 'cancelled':
        failJob(job, 'Cancelled.', 'cancelled');
        break;
      case 'error': {
        const text = String(m.message || m.code || 'Unknown error');
        if (m.field && !isFinal(job)) setFieldError(m.field, text);
        failJob(job, (m.field ? fieldLabel(m.field) + ': ' : '') + text, m.code);
        break;
      }
    }
  }

  /* ---------- history and viewer ---------- */

  function addHistory(job) {
    el.historyEmpty.hidden = true;
    const btn = h('button', {
      type: 'button', class: 'thumb', 'data-testid': 'history-item', 'data-job-id': job.id,
      'aria-label': 'View image: ' + job.params.prompt.slice(0, 100),
    }, h('img', { src: job.imageUrl, alt: '' }));
    btn.addEventListener('click', () => openViewer(job));
    el.history.prepend(h('li', null, btn));
  }

  function openViewer(job) {
    $('#viewer-title').textContent = job.params.prompt.slice(0, 120) || 'Image';
    $('#viewer-image').src = job.imageUrl;
    $('#viewer-image').alt = 'Generated image: ' + job.params.prompt.slice(0, 200);
    const dl = $('#viewer-download');
    dl.href = job.imageUrl;
    dl.download = imageFilename(job);
    const meta = $('#viewer-meta');
    meta.textContent = '';
    const rows = [
      ['Provider', job.provider], ['Location', job.location], ['GPU', gpuLabel(job.gpu)],
      ['Seed', job.seed], ['Size', `${job.params.width}×${job.params.height}`],
      ['Sampler', `${job.params.sampler_name}, ${job.params.steps} steps, CFG ${job.params.cfg_scale}`],
      ['Inference', fmtMs(job.inference_ms)], ['Total', fmtMs(job.total_ms)],
    ];
    for (const [k, v] of rows) meta.append(h('div', null, h('dt', { text: k }), h('dd', { text: v == null ? '—' : String(v) })));
    if (typeof el.viewer.showModal === 'function') el.viewer.showModal(); else el.viewer.setAttribute('open', '');
    $('#viewer-close').focus();
  }

  /* ---------- websocket ---------- */

  function setConn(st, text) {
    el.conn.dataset.state = st;
    el.connText.textContent = text;
    el.reconnect.hidden = st !== 'closed';
    el.generate.disabled = st !== 'open';
  }

  function connect() {
    clearTimeout(state.retryTimer);
    clearInterval(state.countdownTimer);
    setConn('connecting', state.retry ? 'Reconnecting…' : 'Connecting…');
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    let ws;
    try { ws = new WebSocket(url); } catch (e) { scheduleReconnect(); return; }
    state.ws = ws;
    ws.onopen = () => { ws.send(JSON.stringify({ type: 'hello' })); };
    ws.onmessage = (ev) => {
      if (state.ws !== ws) return;
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m && typeof m === 'object') onMessage(m);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      const wasConnected = state.connected;
      state.connected = false;
      // the gateway cancels a closed connection's jobs: say so on every unfinished card
      for (const job of state.jobs.values()) {
        if (!isFinal(job)) failJob(job, 'Connection lost; the job was cancelled. Generate again once reconnected.', 'connection_lost');
      }
      if (wasConnected) setStatus('Connection to the gateway lost.', 'error');
      scheduleReconnect();
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  function scheduleReconnect() {
    const delay = Math.min(30000, 500 * Math.pow(2, state.retry)) * (0.8 + Math.random() * 0.4);
    state.retry++;
    const until = Date.now() + delay;
    const tick = () => {
      const s = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      setConn('closed', `Disconnected — retrying in ${s} s`);
    };
    tick();
    state.countdownTimer = setInterval(tick, 1000);
    state.retryTimer = setTimeout(connect, delay);
  }

  function onMessage(m) {
    switch (m.type) {
      case 'welcome':
        state.connected = true;
        state.retry = 0;
        applyLimits(m.limits);
        applySamplers(m.samplers);
        updateGpus(m.gpus, false);
        setConn('open', 'Connected');
        if (el.status.dataset.kind === 'error' && /connect/i.test(el.status.textContent)) setStatus('');
        return;
      case 'board':
        renderBoard(m);
        return;
    }
    const job = m.id != null ? state.jobs.get(String(m.id)) : null;
    if (job) { onJobMessage(job, m); return; }
    if (m.type === 'error') {
      const text = String(m.message || m.code || 'Error');
      if (m.field && setFieldError(m.field, text)) return;
      setStatus(text, 'error');
      announce('Error: ' + text);
    }
  }

  /* ---------- wiring ---------- */

  el.form.addEventListener('submit', (e) => { e.preventDefault(); submit(); });
  el.form.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
  });
  el.form.addEventListener('input', (e) => {
    const name = e.target.name;
    if (name && name !== 'gpus') clearFieldError(name);
  });
  el.prompt.addEventListener('input', updatePromptCount);
  el.refiner.addEventListener('input', () => {
    const v = Number(el.refiner.value);
    el.refinerValue.textContent = v > 0 ? `at ${Math.round(v * 100)}% of steps` : 'off';
  });
  el.initInput.addEventListener('change', () => {
    const f = el.initInput.files && el.initInput.files[0];
    if (f) setInitImage(f); else removeInitImage();
  });
  el.initRemove.addEventListener('click', () => { removeInitImage(); el.initInput.focus(); });
  el.dropZone.addEventListener('dragover', (e) => { e.preventDefault(); el.dropZone.classList.add('over'); });
  el.dropZone.addEventListener('dragleave', () => el.dropZone.classList.remove('over'));
  el.dropZone.addEventListener('drop', (e) => {
    e.preventDefault();
    el.dropZone.classList.remove('over');
    const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) setInitImage(f);
  });
  el.strength.addEventListener('input', () => { el.strengthValue.textContent = Number(el.strength.value).toFixed(2); });
  $('#seed-random').addEventListener('click', () => { el.seed.value = -1; clearFieldError('seed'); });
  el.reconnect.addEventListener('click', () => { state.retry = 0; connect(); });
  $('#viewer-close').addEventListener('click', () => el.viewer.close());
  el.viewer.addEventListener('click', (e) => { if (e.target === el.viewer) el.viewer.close(); });

  applyLimits();
  connect();
})();
