// test_ui.js — sdgate's browser end-to-end test: the web UI in headless
// Chromium (Debian's /usr/bin/chromium, driven by playwright-core) against
// the real programs on free loopback ports: two paced sdgate-backends (a100
// in Berlin, rtx3090 in Austin) behind sdgate-balancer, and sdgate-gateway
// serving web/ and the websocket.
//
// It types a prompt, chooses GPUs, generates, and checks the card shows the
// provider, location and GPU, the times the gateway sent in its `done`
// message (the websocket frames are captured; the shown numbers must equal
// them within display rounding), and the image: its pixels must equal a
// direct render of the same request (the `generate` frame the page sent,
// POSTed straight to the backend's /sdapi/v1/txt2img; both PNGs decoded here
// with zlib, and the <img>'s own pixels read back through a canvas); then it
// starts from an image ("Start from an image": a text file and a 8 MiB + 1
// PNG are refused by the page itself, the first job's PNG is taken, shown,
// removed and taken again; the img2img card is done with an image of the
// asked size, and the generate frame carried the data: URL); then it triggers
// validation errors the page catches itself (steps out of range) and ones
// only the gateway can judge (the work rate limit; steps past the gateway's
// limit when the page was told a looser one), and saves a screenshot under
// the build directory ($SDGATE_BIN/e2e/).
//
// Run by ctest (SDGATE_BIN = the build dir). Prints "ok"/"FAIL" lines and
// "N passed, M failed"; exits non-zero on any failure. Every program it
// started must exit 0 on SIGTERM (sanitizer reports make that fail).
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const zlib = require('zlib');
const { OUT, check, generate, launch, startMarketplace } = require('./lib');

const PACE = '60';

// POSTs JSON; resolves { status, json } (json null when the body is not JSON).
function postJson(url, body, timeoutMs = 60000) {
  return new Promise((resolve) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = http.request(url, { method: 'POST', timeout: timeoutMs,
      headers: { 'Content-Type': 'application/json', 'Content-Length': data.length } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch (e) { /* not JSON */ }
        resolve({ status: res.statusCode, json });
      });
    });
    req.on('timeout', () => { req.destroy(); resolve({ status: 0, json: null }); });
    req.on('error', () => resolve({ status: 0, json: null }));
    req.end(data);
  });
}

// Decodes an 8-bit, non-interlaced PNG (grey, grey+alpha, RGB, RGBA) with
// node's zlib: { width, height, channels, pixels } (pixels: rows without
// filter bytes). Throws on anything else; CRCs are not checked (the Python
// harness's decoder does that for the integration tests).
function decodePng(buf) {
  const SIG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (!Buffer.isBuffer(buf) || buf.length < 8 || !buf.subarray(0, 8).equals(SIG)) throw new Error('no PNG signature');
  let pos = 8;
  let ihdr = null;
  const idat = [];
  while (pos + 8 <= buf.length) {
    const len = buf.readUInt32BE(pos);
    const type = buf.toString('latin1', pos + 4, pos + 8);
    const data = buf.subarray(pos + 8, pos + 8 + len);
    pos += 12 + len;
    if (type === 'IHDR') ihdr = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), depth: data[8],
      colour: data[9], interlace: data[12] };
    else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
  }
  const channels = ihdr && { 0: 1, 2: 3, 4: 2, 6: 4 }[ihdr.colour];
  if (!ihdr || ihdr.depth !== 8 || !channels || ihdr.interlace !== 0) throw new Error(`unsupported PNG ${JSON.stringify(ihdr)}`);
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = ihdr.width * channels;
  if (raw.length !== ihdr.height * (stride + 1)) throw new Error(`PNG data is ${raw.length} bytes, not ${ihdr.height * (stride + 1)}`);
  const px = Buffer.alloc(ihdr.height * stride);
  for (let y = 0; y < ihdr.height; y++) {
    const f = raw[y * (stride + 1)];
    for (let x = 0; x < stride; x++) {
      const v = raw[y * (stride + 1) + 1 + x];
      const a = x >= channels ? px[y * stride + x - channels] : 0;
      const b = y > 0 ? px[(y - 1) * stride + x] : 0;
      const c = x >= channels && y > 0 ? px[(y - 1) * stride + x - channels] : 0;
      let pred;
      if (f === 0) pred = 0;
      else if (f === 1) pred = a;
      else if (f === 2) pred = b;
      else if (f === 3) pred = (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else throw new Error(`bad PNG filter ${f} in row ${y}`);
      px[y * stride + x] = (v + pred) & 0xff;
    }
  }
  return { width: ihdr.width, height: ihdr.height, channels, pixels: px };
}

// RGB values of a decoded PNG (drops alpha; grey expands to RGB).
function rgbOf(img) {
  const n = img.width * img.height, out = Buffer.alloc(n * 3);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < 3; k++) out[i * 3 + k] = img.pixels[i * img.channels + (img.channels >= 3 ? k : 0)];
  }
  return out;
}

// { differing: count of RGB values that differ, max: largest difference }.
function compareRgb(a, b) {
  let differing = 0, max = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const d = Math.abs(a[i] - b[i]);
    if (d) differing++;
    if (d > max) max = d;
  }
  return { differing: differing + Math.abs(a.length - b.length), max };
}

// The milliseconds a shown time stands for ("812 ms", "3.42 s") and how far
// display rounding may have moved it; null when it is not such a text.
function shownMs(text) {
  const m = /^(\d+(?:\.(\d+))?) (ms|s)$/.exec(text);
  if (!m) return null;
  const unit = m[3] === 's' ? 1000 : 1;
  return { ms: Number(m[1]) * unit, rounding: 0.5 * unit * 10 ** -(m[2] ? m[2].length : 0) };
}

async function main() {
  // --rate-burst 20: a 1024x1024, 25-step job (26 megapixel-steps) is refused by the gateway alone
  const { gw, backends } = await startMarketplace([['backend-a100', 'Acme GPUs', 'Berlin, DE', 'a100'],
    ['backend-3090', 'Beta Compute', 'Austin, US', 'rtx3090']], PACE, ['--rate-burst', '20', '--rate-refill', '1']);
  const [be1, be2] = backends;

  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const framesSent = [], framesReceived = [];
    const json = (payload) => { try { return JSON.parse(String(payload)); } catch (e) { return null; } };
    page.on('websocket', (ws) => {
      ws.on('framesent', (f) => framesSent.push(json(f.payload)));
      ws.on('framereceived', (f) => framesReceived.push(json(f.payload)));
    });
    const consoleErrors = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    await page.goto(gw.url + '/', { waitUntil: 'load' });
    await page.waitForSelector('#connection[data-state=open]', { timeout: 20000 });
    check('the page connects to the gateway (Connected)', true);

    // GPU toggles with live counts from welcome/board
    await page.waitForSelector('.gpu-toggle input[value=a100]', { timeout: 10000 });
    await page.waitForSelector('.gpu-toggle input[value=rtx3090]', { timeout: 10000 });
    const counts = await page.textContent('[data-testid=gpu-counts-a100]');
    check('GPU toggle a100 shows idle/busy counts', /idle/.test(counts || ''), counts);
    await page.waitForSelector('#board [data-testid=board-row]', { timeout: 10000 });
    const rows = await page.$$eval('#board [data-testid=board-row]', (rs) => rs.map((r) => ({
      gpu: r.dataset.gpu, provider: r.querySelector('[data-testid=board-provider]').textContent,
      simulated: r.dataset.simulated })));
    check('the providers board lists both providers', rows.length === 2
      && rows.some((r) => r.provider.includes('Acme GPUs')) && rows.some((r) => r.provider.includes('Beta Compute')), rows);
    const samplers = await page.$$eval('#sampler option', (os) => os.map((o) => o.value));
    check('the sampler list comes from welcome (DPM++ SDE Karras selected)', samplers.includes('Euler a')
      && (await page.inputValue('#sampler')) === 'DPM++ SDE Karras', samplers);

    // ---- generate on an a100 only
    await page.fill('#prompt', 'a red circle on a blue square');
    await page.fill('#negative-prompt', 'green');
    await page.selectOption('#sampler', 'Euler a');
    await page.fill('#steps', '8');
    await page.selectOption('#width', '128');
    await page.selectOption('#height', '128');
    await page.fill('#seed', '1234');
    await page.uncheck('.gpu-toggle input[value=rtx3090]');
    check('rtx3090 unticked, a100 ticked', !(await page.isChecked('.gpu-toggle input[value=rtx3090]'))
      && (await page.isChecked('.gpu-toggle input[value=a100]')));
    await page.click('#generate');
    const card = page.locator('[data-testid=job-card]').first();
    await page.waitForSelector('[data-testid=job-card][data-state=running], [data-testid=job-card][data-state=done]',
      { timeout: 30000 });
    await page.waitForSelector('[data-testid=job-card][data-state=done]', { timeout: 60000 });
    const text = async (id) => ((await card.locator(`[data-testid=${id}]`).textContent()) || '').trim();
    check('the card shows the provider', (await text('job-provider')) === 'Acme GPUs', await text('job-provider'));
    check('the card shows the location', (await text('job-location')) === 'Berlin, DE', await text('job-location'));
    const gpu = await text('job-gpu');
    check('the card shows the GPU (A100, simulated)', /A100/.test(gpu) && /simulated/.test(gpu), gpu);
    check('the card shows the seed', (await text('job-seed')) === '1234', await text('job-seed'));
    const infMs = Number(await card.locator('[data-testid=job-inference-ms]').getAttribute('data-ms'));
    const totMs = Number(await card.locator('[data-testid=job-total-ms]').getAttribute('data-ms'));
    check('inference time ≥ 8 steps × 60 ms, total ≥ inference', infMs >= 8 * 60 * 0.9 && totMs >= infMs,
      { infMs, totMs, inference: await text('job-inference-ms'), total: await text('job-total-ms') });
    // the websocket: what the page asked for and what the gateway answered
    const gen = framesSent.find((m) => m && m.type === 'generate');
    const done = gen && framesReceived.find((m) => m && m.type === 'done' && m.id === gen.id);
    check('the page sent one generate message and got its done message', gen && done,
      { sent: framesSent.map((m) => m && m.type), received: framesReceived.map((m) => m && m.type) });
    for (const [id, key] of [['job-inference-ms', 'inference_ms'], ['job-total-ms', 'total_ms']]) {
      const el = card.locator(`[data-testid=${id}]`);
      const shown = (await el.textContent() || '').trim();
      const sent = done ? done[key] : undefined;
      const v = shownMs(shown);
      check(`${id}: the card shows the gateway's ${key} (${sent} ms shown as "${shown}")`, typeof sent === 'number'
        && v !== null && Math.abs(v.ms - sent) <= v.rounding && (await el.getAttribute('data-ms')) === String(sent),
      { shown, sent, parsed: v, dataMs: await el.getAttribute('data-ms') });
    }
    const img = card.locator('[data-testid=job-image]');
    await page.waitForFunction((el) => el.complete && el.naturalWidth > 0,
      await img.elementHandle(), { timeout: 10000 });
    const dims = await img.evaluate((el) => ({ w: el.naturalWidth, h: el.naturalHeight, src: el.src, hidden: el.hidden }));
    check('the image is shown, 128x128', dims.w === 128 && dims.h === 128 && !dims.hidden
      && dims.src.startsWith('blob:'), dims);
    // the image the card shows: the PNG behind its blob: URL, and the pixels
    // the <img> element itself draws (read back through a canvas)
    const shown = await img.evaluate(async (el) => {
      const bytes = new Uint8Array(await (await fetch(el.src)).arrayBuffer());
      let bin = '';
      for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
      const c = document.createElement('canvas');
      c.width = el.naturalWidth; c.height = el.naturalHeight;
      const g = c.getContext('2d');
      g.drawImage(el, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      const rgb = [];
      for (let i = 0; i < d.length; i += 4) rgb.push(d[i], d[i + 1], d[i + 2]);
      return { png: btoa(bin), rgb };
    });
    // the same request straight to the backend that ran it, with the seed it used
    const direct = Object.assign({}, gen || {});
    for (const k of ['type', 'id', 'gpus', 'max_price', 'prefer']) delete direct[k];
    if (done && done.seed != null) direct.seed = done.seed;
    const ran = { 'Acme GPUs': be1, 'Beta Compute': be2 }[done && done.provider] || be1;
    const r = await postJson(ran.url + '/sdapi/v1/txt2img', direct);
    let want = null, got = null, why = '';
    try {
      want = rgbOf(decodePng(Buffer.from(r.json.images[0], 'base64')));
      got = decodePng(Buffer.from(shown.png, 'base64'));
    } catch (e) {
      why = String(e);
    }
    const byPng = want && got ? compareRgb(rgbOf(got), want) : null;
    const byCanvas = want ? compareRgb(Buffer.from(shown.rgb), want) : null;
    const colours = want ? new Set(Array.from({ length: want.length / 3 }, (_, i) =>
      (want[i * 3] >> 4) * 256 + (want[i * 3 + 1] >> 4) * 16 + (want[i * 3 + 2] >> 4))).size : 0;
    check(`the image is not blank (${colours} colours in 4-bit bins)`, colours > 3, colours);
    check(`the image shown equals a direct render of the same request on ${ran.name} (${want ? want.length : 0} RGB `
      + `values; differing: ${byPng && byPng.differing} in the PNG, ${byCanvas && byCanvas.differing} as drawn)`,
    got && got.width === 128 && got.height === 128 && byPng.differing === 0 && byCanvas.differing === 0,
    { why, status: r.status, direct, byPng, byCanvas });
    check('the image joins the history', (await page.locator('[data-testid=history-item]').count()) === 1);
    const dl = await card.locator('[data-testid=job-download]').getAttribute('download');
    check('a PNG download link is offered', /\.png$/.test(dl || ''), dl);
    fs.mkdirSync(OUT, { recursive: true });
    const shot = path.join(OUT, 'test_ui-done.png');
    await page.screenshot({ path: shot, fullPage: true });
    check(`screenshot saved (${shot})`, fs.statSync(shot).size > 10000, fs.statSync(shot).size);

    // ---- a validation error the page catches itself
    await page.fill('#steps', '999');
    await page.click('#generate');
    await page.waitForFunction(() => (document.querySelector('[data-testid=field-error-steps]') || {}).textContent, null,
      { timeout: 5000 });
    const stepsErr = await page.textContent('[data-testid=field-error-steps]');
    check('steps 999 → an error under Steps', /150/.test(stepsErr || ''), stepsErr);
    check('…and no job was sent', (await page.locator('[data-testid=job-card]').count()) === 1);
    await page.screenshot({ path: path.join(OUT, 'test_ui-field-error.png'), fullPage: true });

    // ---- a request only the gateway refuses: more GPU work than the rate limit's burst
    await page.fill('#steps', '25');
    await page.selectOption('#width', '1024');
    await page.selectOption('#height', '1024');
    await page.check('.gpu-toggle input[value=rtx3090]');
    await page.selectOption('#prefer', 'cheapest');
    await page.click('#generate');
    await page.waitForSelector('[data-testid=job-card][data-state=error]', { timeout: 15000 });
    const gens = framesSent.filter((m) => m && m.type === 'generate');
    check('"the cheapest" sends prefer: "cheapest" (the first job, with the default, sent none)',
      gens.length >= 2 && gens[gens.length - 1].prefer === 'cheapest' && !('prefer' in gens[0]),
      gens.map((m) => m.prefer));
    const errText = await page.locator('[data-testid=job-card][data-state=error] [data-testid=job-error]').first().textContent();
    check('the gateway\'s refusal is shown on the card (rate limit in megapixel-steps)',
      /megapixel-steps/.test(errText || ''), errText);
    await page.screenshot({ path: path.join(OUT, 'test_ui-server-error.png'), fullPage: true });

    // ---- img2img: "Start from an image"
    check('the strength slider is hidden without an image', await page.isHidden('#strength-field'));
    const initErr = async (file, re, name) => {
      await page.setInputFiles('#init-image', file);
      await page.waitForFunction(() => (document.querySelector('[data-testid=field-error-init_image]') || {}).textContent,
        null, { timeout: 5000 });
      const t = await page.textContent('[data-testid=field-error-init_image]');
      check(`${name} → an error under "Start from an image", no image chosen`, re.test(t || '')
        && await page.isHidden('#init-chosen') && await page.isHidden('#strength-field'), t);
    };
    await initErr({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not an image') },
      /PNG, JPEG or WebP/, 'a text file');
    const huge = Buffer.alloc((8 << 20) + 1);
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(huge);
    await initErr({ name: 'huge.png', mimeType: 'image/png', buffer: huge }, /At most 8 MiB/, 'a PNG of 8 MiB + 1 byte');
    const initPng = Buffer.from(r.json.images[0], 'base64');
    const chooseInit = async () => {
      await page.setInputFiles('#init-image', { name: 'start.png', mimeType: 'image/png', buffer: initPng });
      await page.waitForSelector('#init-chosen:not([hidden])', { timeout: 5000 });
    };
    await chooseInit();
    const preview = await page.getAttribute('#init-preview', 'src');
    check('the chosen image is previewed (a data: URL) and the strength slider shows',
      (preview || '').startsWith('data:image/png;base64,') && await page.isVisible('#strength-field')
      && !(await page.textContent('[data-testid=field-error-init_image]')), (preview || '').slice(0, 40));
    await page.click('#init-remove');
    check('Remove image hides the preview and the slider and returns focus to the file input',
      await page.isHidden('#init-chosen') && await page.isHidden('#strength-field')
      && await page.evaluate(() => document.activeElement && document.activeElement.id === 'init-image'));
    await chooseInit();
    await page.fill('#strength', '0.5');
    await page.fill('#steps', '6');
    await page.selectOption('#width', '128');
    await page.selectOption('#height', '96');
    await page.selectOption('#prefer', 'fastest');
    await page.click('#generate');
    await page.waitForSelector('[data-testid=job-card][data-mode=img2img][data-state=done]', { timeout: 60000 });
    const i2i = page.locator('[data-testid=job-card][data-mode=img2img]').first();
    const i2iDims = await i2i.locator('[data-testid=job-image]').evaluate((el) => ({ w: el.naturalWidth,
      h: el.naturalHeight, hidden: el.hidden }));
    check('the img2img card is done, marked img2img, with a 128x96 image',
      (await i2i.locator('[data-testid=job-mode]').isVisible()) && i2iDims.w === 128 && i2iDims.h === 96
      && !i2iDims.hidden, i2iDims);
    const i2iGen = framesSent.filter((m) => m && m.type === 'generate').pop() || {};
    check('the page sent the image as a data: URL with denoising_strength 0.5',
      (i2iGen.init_image || '').startsWith('data:image/png;base64,')
      && Buffer.from(i2iGen.init_image.split(',')[1], 'base64').equals(initPng) && i2iGen.denoising_strength === 0.5,
      { init_image: (i2iGen.init_image || '').slice(0, 40), denoising_strength: i2iGen.denoising_strength });
    await page.screenshot({ path: path.join(OUT, 'test_ui-img2img.png'), fullPage: true });

    // ---- the gateway is the authority: a page told a looser limit gets the gateway's field error
    const page2 = await browser.newPage();
    let routed = false;
    if (typeof page2.routeWebSocket === 'function') {
      await page2.routeWebSocket(/\/ws$/, (ws) => {
        const server = ws.connectToServer();
        server.onMessage((message) => {
          try {
            const m = JSON.parse(message);
            if (m.type === 'welcome') { m.limits.max_steps = 500; routed = true; }
            ws.send(JSON.stringify(m));
          } catch (e) {
            ws.send(message);
          }
        });
      });
    }
    await page2.goto(gw.url + '/', { waitUntil: 'load' });
    await page2.waitForSelector('#connection[data-state=open]', { timeout: 20000 });
    check('a second page connects (welcome with a loosened max_steps)', routed);
    await generate(page2, 'a yellow triangle', 200, 64);
    await page2.waitForSelector('[data-testid=job-card][data-state=error]', { timeout: 15000 });
    const fieldErr = await page2.textContent('[data-testid=field-error-steps]');
    check('steps 200 → the gateway\'s error under Steps', /less than or equal to 150/.test(fieldErr || ''), fieldErr);
    await page2.screenshot({ path: path.join(OUT, 'test_ui-gateway-field-error.png'), fullPage: true });
    await page2.close();

    check('no errors in the page console', consoleErrors.length === 0, consoleErrors);
  } finally {
    await browser.close();
  }
}

require('./lib').run('test_ui.js', main);
