// lib.js — what sdgate's browser tests share: "ok"/"FAIL" checks, starting
// the real programs on free loopback ports (and stopping them, checking they
// exit 0 on SIGTERM, which sanitizer reports make fail), plain HTTP GETs,
// headless Chromium (Debian's /usr/bin/chromium via playwright-core), and
// run(main), which prints "N passed, M failed" and exits non-zero on any
// failure.
//
//   const e2e = require('./lib');
//   e2e.run('test_x.js', async () => {
//     const gw = await e2e.start('gateway', 'gateway/sdgate-gateway', [...], '/healthz');
//     e2e.check('it answers', (await e2e.get(gw.url + '/')).status === 200);
//   });
'use strict';

let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (e) {
  console.log('FAIL - playwright-core is not installed: run deploy/install-deps.sh (npm ci --prefix tests/e2e)');
  console.log('0 passed, 1 failed');
  process.exit(1);
}
const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const net = require('net');
const os = require('os');
const path = require('path');

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = process.env.SDGATE_BIN || path.join(ROOT, 'build');
const OUT = path.join(BIN, 'e2e');
const CHROMIUM = process.env.SDGATE_CHROMIUM || '/usr/bin/chromium';
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sdgate-e2e-'));

let passed = 0;
let failed = 0;
const programs = [];

function check(name, cond, detail) {
  if (cond) {
    passed++;
    console.log(`ok   - ${name}`);
  } else {
    failed++;
    let d = typeof detail === 'string' ? detail : JSON.stringify(detail);
    if (d && d.length > 1500) d = d.slice(0, 1500) + '…';
    console.log(`FAIL - ${name}: ${d}`);
  }
  return !!cond;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// GET url: {status, headers, body}; status 0 when it failed.
function get(url, timeoutMs = 2000) {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('timeout', () => { req.destroy(); resolve({ status: 0, headers: {}, body: '' }); });
    req.on('error', () => resolve({ status: 0, headers: {}, body: '' }));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(fn, timeoutMs, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > deadline) return v;
    await sleep(intervalMs);
  }
}

function tail(p, n = 30) {
  try {
    return fs.readFileSync(p.logPath, 'utf8').split('\n').slice(-n).join('\n');
  } catch (e) {
    return '';
  }
}

// Starts BIN/<rel> --listen 127.0.0.1:<free port> ...args; resolves once
// GET readyPath answers 200.
async function start(name, rel, args, readyPath) {
  const exe = path.join(BIN, rel);
  if (!fs.existsSync(exe)) throw new Error(`no ${name} binary at ${exe} (set SDGATE_BIN)`);
  const port = await freePort();
  const logPath = path.join(TMP, `${name}.log`);
  const log = fs.openSync(logPath, 'w');
  const argv = ['--listen', `127.0.0.1:${port}`, ...args];
  const proc = spawn(exe, argv, { stdio: ['ignore', log, log], env: process.env });
  const p = { name, proc, port, url: `http://127.0.0.1:${port}`, logPath, exit: null };
  proc.on('exit', (code, sig) => { p.exit = { code, sig }; });
  programs.push(p);
  const ok = await waitUntil(async () => p.exit === null && (await get(p.url + readyPath)).status === 200, 30000);
  if (!ok) throw new Error(`${name} did not come up: ${tail(p)}`);
  return p;
}

async function stop(p) {
  if (p.exit === null) {
    p.proc.kill('SIGTERM');
    await waitUntil(() => p.exit !== null, 10000, 50);
    if (p.exit === null) p.proc.kill('SIGKILL');
  }
  return p.exit;
}

// Backends (each [name, provider, location, gpu class]), a balancer over
// them (waiting until all are idle) and a gateway with gatewayArgs; returns
// { bal, gw, backends } (the backends in the order given).
async function startMarketplace(backends, paceMs, gatewayArgs) {
  const urls = [], started = [];
  for (const [name, provider, location, gpu] of backends) {
    const be = await start(name, 'backend/sdgate-backend', ['--provider', provider, '--location', location,
      '--gpu-class', gpu, '--pace-ms-per-step', paceMs], '/internal/ping');
    urls.push('--backend', be.url);
    started.push(be);
  }
  const bal = await start('balancer', 'balancer/sdgate-balancer', ['--db', path.join(TMP, 'balancer.db'),
    ...urls, '--progress-interval-ms', '100'], '/healthz');
  await waitUntil(async () => {
    const r = await get(bal.url + '/v1/backends');
    try { return JSON.parse(r.body).backends.filter((b) => b.state === 'idle').length === backends.length; } catch (e) { return false; }
  }, 30000);
  const gw = await start('gateway', 'gateway/sdgate-gateway', ['--balancer', bal.url, '--board-interval-ms', '300',
    ...gatewayArgs], '/healthz');
  return { bal, gw, backends: started };
}

// Fills the UI's form (prompt, steps, a square size) and clicks Generate.
async function generate(page, prompt, steps, size) {
  await page.fill('#prompt', prompt);
  await page.fill('#steps', String(steps));
  await page.selectOption('#width', String(size));
  await page.selectOption('#height', String(size));
  await page.click('#generate');
}

function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

// Runs main, stops every program (last started first), prints the logs
// when anything failed, the time and the summary, and exits.
async function run(script, main) {
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      for (const p of programs) if (p.exit === null) p.proc.kill('SIGKILL');
      process.exit(2);
    });
  }
  const t0 = Date.now();
  try {
    await main();
  } catch (e) {
    check('test body ran to the end without an exception', false, e && e.stack ? e.stack : String(e));
  }
  for (const p of programs.slice().reverse()) {
    const exit = await stop(p);
    check(`${p.name} exits with code 0 on SIGTERM`, exit && exit.code === 0, { exit, log: tail(p, 15) });
  }
  if (failed) for (const p of programs) console.log(`# ---- ${p.name}'s log ----\n${tail(p)}\n# ----`);
  fs.rmSync(TMP, { recursive: true, force: true });
  console.log(`# ${script} took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (passed + failed === 0) failed = 1;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

module.exports = {
  ROOT, BIN, OUT, TMP, check, freePort, get, sleep, waitUntil, start, stop, tail, startMarketplace, generate, launch,
  run,
};
