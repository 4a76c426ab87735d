// test_hostile_page.js — a page on another site against sdgate's gateway, in
// headless Chromium (issue 10, finding 6). A tiny node HTTP server on another
// loopback port (another origin) serves a page that opens 64 websockets to
// the gateway from its visitor's browser and frames the gateway's UI. The
// gateway must refuse every one of those sockets (403: the Origin is not its
// own), so the visitor's own tab on the gateway still connects and gets an
// image, and the frame must stay empty (X-Frame-Options / frame-ancestors).
// The UI's answers must carry the CSP, X-Frame-Options and nosniff, and the
// UI must run under that CSP without a violation.
//
// Run by ctest (SDGATE_BIN = the build dir); prints "ok"/"FAIL" lines and
// "N passed, M failed".
'use strict';

const http = require('http');
const { check, generate, get, launch, run, startMarketplace, waitUntil } = require('./lib');

const SOCKETS = 64;

// The attacker's page: opens SOCKETS websockets to the gateway and counts
// how they end; frames the gateway's UI.
function hostilePage(gwPort) {
  return `<!doctype html><meta charset="utf-8"><title>cute kittens</title>
<iframe id="victim" src="http://127.0.0.1:${gwPort}/" width="600" height="400"></iframe>
<script>
window.result = { opened: 0, closed: 0, welcomed: 0 };
for (let i = 0; i < ${SOCKETS}; i++) {
  const ws = new WebSocket('ws://127.0.0.1:${gwPort}/ws');
  window['sock' + i] = ws; // kept open as long as the page is
  ws.onopen = () => { window.result.opened++; ws.send('{"type":"hello"}'); };
  ws.onmessage = (e) => { if (JSON.parse(e.data).type === 'welcome') window.result.welcomed++; };
  ws.onclose = () => { window.result.closed++; };
}
</script>`;
}

function serve(html) {
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(html);
    });
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

function metric(text, name) {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : null;
}

async function main() {
  const { gw } = await startMarketplace([['backend', 'Acme GPUs', 'Berlin, DE', 'a100']], '20', []);

  // ---- the UI's headers
  for (const p of ['/', '/app.js', '/app.css', '/no-such-file']) {
    const r = await get(gw.url + p);
    const h = r.headers;
    check(`GET ${p} (${r.status}) carries Content-Security-Policy, X-Frame-Options: DENY, nosniff`,
      /frame-ancestors 'none'/.test(h['content-security-policy'] || '')
        && /script-src 'self'/.test(h['content-security-policy'] || '')
        && (h['x-frame-options'] || '').toUpperCase() === 'DENY' && h['x-content-type-options'] === 'nosniff', h);
  }

  const srv = await serve(hostilePage(gw.port));
  const evil = `http://127.0.0.1:${srv.address().port}`;
  const browser = await launch();
  try {
    // ---- the hostile page, left open in its tab
    const attacker = await browser.newPage();
    await attacker.goto(evil + '/', { waitUntil: 'load' });
    const settled = await waitUntil(() => attacker.evaluate((n) => window.result.opened + window.result.closed >= n
      || window.result.opened >= n, SOCKETS), 20000, 200);
    const result = await attacker.evaluate(() => window.result);
    console.log(`# the page on ${evil} opened ${result.opened} of ${SOCKETS} websockets, ${result.closed} closed, `
      + `${result.welcomed} welcomed`);
    check(`a page of another origin opens none of its ${SOCKETS} websockets`, settled && result.opened === 0
      && result.closed === SOCKETS, result);
    const m = (await get(gw.url + '/metrics')).body;
    const refused = metric(m, 'sdgate_gateway_origin_refused_total');
    console.log(`# the gateway refused ${refused} upgrades for their Origin; ${metric(m, 'sdgate_gateway_connections')} open`);
    check('the gateway counts them refused for their Origin', refused >= SOCKETS, refused);

    // ---- the frame stays empty
    const framed = [];
    for (const f of attacker.frames()) {
      if (f === attacker.mainFrame()) continue;
      let ui = null;
      try { ui = await f.$('#prompt'); } catch (e) { ui = null; }
      framed.push({ url: f.url(), ui: !!ui });
    }
    console.log(`# frames of the page: ${JSON.stringify(framed)}`);
    check('the gateway\'s UI does not render in the other site\'s frame', framed.length === 1 && !framed[0].ui, framed);

    // ---- meanwhile, the visitor's own tab on the gateway
    const page = await browser.newPage();
    const errors = [];
    page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    const resp = await page.goto(gw.url + '/', { waitUntil: 'load' });
    const csp = resp.headers()['content-security-policy'] || '';
    check('the page itself comes with the CSP', /default-src 'self'/.test(csp), resp.headers());
    await page.waitForSelector('#connection[data-state=open]', { timeout: 20000 });
    check('the visitor\'s own tab still connects (the page spent none of the address\'s connections)', true);
    await generate(page, 'a red circle on a blue square', 4, 128);
    await page.waitForSelector('[data-testid=job-card][data-state=done]', { timeout: 60000 });
    const img = page.locator('[data-testid=job-card] [data-testid=job-image]').first();
    await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await img.elementHandle(),
      { timeout: 10000 });
    const w = await img.evaluate((el) => el.naturalWidth);
    check('…and generates an image (128 px wide, shown from a blob: URL under the CSP)', w === 128, w);
    check('the UI runs under its CSP without a violation or an error in the console', errors.length === 0, errors);
  } finally {
    await browser.close();
    srv.close();
  }
}

run('test_hostile_page.js', main);
