// test_ui.js — sdgate's browser end-to-end test: the web UI in headless
// Chromium (Debian's /usr/bin/chromium, driven by playwright-core) against
// the real programs on free loopback ports: two paced sdgate-backends (a100
// in Berlin, rtx3090 in Austin) behind sdgate-balancer, and sdgate-gateway
// serving web/ and the websocket.
//
// It types a prompt, chooses GPUs, generates, and checks the card shows the
// provider, location, GPU, timings and the image; then it triggers
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
const path = require('path');
const { OUT, check, generate, launch, startMarketplace } = require('./lib');

const PACE = '60';

async function main() {
  // --rate-burst 20: a 1024x1024, 25-step job (26 megapixel-steps) is refused by the gateway alone
  const { gw } = await startMarketplace([['backend-a100', 'Acme GPUs', 'Berlin, DE', 'a100'],
    ['backend-3090', 'Beta Compute', 'Austin, US', 'rtx3090']], PACE, ['--rate-burst', '20', '--rate-refill', '1']);

  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
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
    check('times are shown as text', /\d/.test(await text('job-inference-ms')) && /\d/.test(await text('job-total-ms')));
    const img = card.locator('[data-testid=job-image]');
    await page.waitForFunction((el) => el.complete && el.naturalWidth > 0,
      await img.elementHandle(), { timeout: 10000 });
    const dims = await img.evaluate((el) => ({ w: el.naturalWidth, h: el.naturalHeight, src: el.src, hidden: el.hidden }));
    check('the image is shown, 128x128', dims.w === 128 && dims.h === 128 && !dims.hidden
      && dims.src.startsWith('blob:'), dims);
    const colours = await img.evaluate((el) => {
      const c = document.createElement('canvas');
      c.width = el.naturalWidth; c.height = el.naturalHeight;
      const g = c.getContext('2d');
      g.drawImage(el, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      for (let i = 0; i < d.length; i += 4 * 37) seen.add((d[i] >> 4) * 256 + (d[i + 1] >> 4) * 16 + (d[i + 2] >> 4));
      return seen.size;
    });
    check('the image is not blank', colours > 3, colours);
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
    await page.click('#generate');
    await page.waitForSelector('[data-testid=job-card][data-state=error]', { timeout: 15000 });
    const errText = await page.locator('[data-testid=job-card][data-state=error] [data-testid=job-error]').first().textContent();
    check('the gateway\'s refusal is shown on the card (rate limit in megapixel-steps)',
      /megapixel-steps/.test(errText || ''), errText);
    await page.screenshot({ path: path.join(OUT, 'test_ui-server-error.png'), fullPage: true });

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
