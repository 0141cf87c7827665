// End-to-end test of the chat page in a real browser: Debian's chromium,
// driven by playwright-core (no browser download). Run by scripts/browser-test,
// which builds the release binary and starts the first server; this script
// restarts it once (SIGTERM, then the same binary on the same port) to check
// that the pages reconnect by themselves.
//
// Environment: WHARF_BIN (the binary), WHARF_PORT, WHARF_PID (the running
// server), WHARF_PIDFILE (every server PID is appended there, for cleanup),
// WHARF_OUT (where the screenshot and logs go).

import { spawn } from "node:child_process";
import { appendFileSync, mkdtempSync, openSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BIN = need("WHARF_BIN");
const PORT = need("WHARF_PORT");
const OUT = need("WHARF_OUT");
const PIDFILE = need("WHARF_PIDFILE");
let serverPid = Number(need("WHARF_PID"));
const BASE = `http://127.0.0.1:${PORT}`;
const STEP_MS = 10_000; // the longest any one step may take
const RECONNECT_MS = 20_000; // the longest the pages may take to come back

const started = Date.now();
const timings = [];
let last = started;
function lap(what) {
  const now = Date.now();
  timings.push([what, now - last]);
  console.log(`  ok  ${what} (${now - last} ms)`);
  last = now;
}

function need(name) {
  const v = process.env[name];
  if (!v) fail(`${name} is not set; run scripts/browser-test`);
  return v;
}

function fail(message) {
  console.error(`browser test FAILED: ${message}`);
  process.exit(1);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// ---- the server ---------------------------------------------------------------

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function portOpen() {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port: Number(PORT) });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

async function until(what, check, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(50);
  }
  throw new Error(`timed out after ${ms} ms: ${what}`);
}

async function stopServer() {
  process.kill(serverPid, "SIGTERM");
  await until(`server ${serverPid} to exit after SIGTERM`, () => !alive(serverPid));
}

async function startServer() {
  const log = openSync(join(OUT, "server-2.log"), "a");
  const child = spawn(BIN, ["--listen", `127.0.0.1:${PORT}`], {
    stdio: ["ignore", log, log],
    env: { ...process.env, WHARF_LOG: "info" },
  });
  serverPid = child.pid;
  appendFileSync(PIDFILE, `${serverPid}\n`);
  child.unref();
  await until("the restarted server to listen", portOpen);
}

// ---- the pages ------------------------------------------------------------------

const PHONE = { width: 390, height: 760 };

async function openChat(context, room, name) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  await page.setViewportSize(PHONE);
  page.on("pageerror", (e) => errors.push(`${name}: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/WebSocket connection|ERR_CONNECTION_REFUSED/.test(m.text())) {
      errors.push(`${name} console: ${m.text()}`);
    }
  });
  await page.goto(`${BASE}/#${room}`);
  await page.fill("#name", name);
  if ((await page.inputValue("#room")) !== room) throw new Error(`${name}: the room was not taken from the URL`);
  await page.click("#join");
  await page.waitForSelector('#status[data-state="open"]');
  await page.waitForSelector("#chat-view:not([hidden])");
  return page;
}

async function online(page, n) {
  await page.waitForFunction(
    (n) => document.getElementById("online").dataset.count === String(n),
    n,
    { timeout: STEP_MS },
  );
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

async function sees(page, who, text) {
  await page.waitForFunction(
    ([who, text]) =>
      [...document.querySelectorAll("#messages .message")].some(
        (li) => li.querySelector(".text").textContent === text && li.querySelector(".from").textContent.startsWith(who),
      ),
    [who, text],
    { timeout: STEP_MS },
  );
}

async function texts(page) {
  return page.$$eval("#messages .message .text", (els) => els.map((e) => e.textContent));
}

async function notSeen(page, text) {
  const all = await texts(page);
  if (all.includes(text)) throw new Error(`a page in another room saw ${JSON.stringify(text)}`);
}

// A page served from another origin (a second port) tries to open the
// chat's WebSocket, as a hostile site a visitor opens would: the server must
// refuse it (403, so the page sees close 1006) and count the refusal.
async function crossOriginIsRefused(context) {
  const elsewhere = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><title>waiting</title><script>
      const ws = new WebSocket("ws://127.0.0.1:${PORT}/chat", "wharf.chat.v1");
      ws.onopen = () => { document.title = "opened"; };
      ws.onclose = (e) => { document.title = "closed " + e.code; };
    </script>`);
  });
  await new Promise((resolve) => elsewhere.listen(0, "127.0.0.1", resolve));
  const page = await context.newPage();
  try {
    page.setDefaultTimeout(STEP_MS);
    await page.goto(`http://127.0.0.1:${elsewhere.address().port}/`);
    await page.waitForFunction(() => document.title !== "waiting");
    const title = await page.title();
    if (title !== "closed 1006") throw new Error(`a cross-origin page's WebSocket ended as ${JSON.stringify(title)}`);
    const metrics = await (await fetch(`${BASE}/metrics`)).text();
    if (!/wharf_handshake_refusals_total\{status="403",reason="origin not allowed/.test(metrics)) {
      throw new Error("the cross-origin refusal is not counted in /metrics");
    }
  } finally {
    await page.close();
    elsewhere.close();
  }
}

// ---- the test -------------------------------------------------------------------------

const errors = [];
const profile = mkdtempSync(join(tmpdir(), "wharf-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  lap("chromium started");

  const ada = await openChat(context, "harbour", "Ada");
  await online(ada, 1);
  // Chromium offers permessage-deflate; the server's default is to accept it.
  const extensions = await ada.evaluate(() => document.body.dataset.extensions);
  if (!String(extensions).startsWith("permessage-deflate")) {
    throw new Error(`expected permessage-deflate to be negotiated, got ${JSON.stringify(extensions)}`);
  }
  lap(`negotiated: ${extensions}`);
  const bob = await openChat(context, "harbour", "Bob");
  await online(bob, 2);
  await online(ada, 2);
  const cy = await openChat(context, "lighthouse", "Cy");
  await online(cy, 1);
  lap("three pages joined (two in #harbour, one in #lighthouse); online counts 2, 2, 1");

  await say(ada, "hello from Ada");
  await sees(ada, "Ada", "hello from Ada");
  await sees(bob, "Ada", "hello from Ada");
  await say(bob, "hi Ada, Bob here");
  await sees(ada, "Bob", "hi Ada, Bob here");
  await sees(bob, "Bob", "hi Ada, Bob here");
  await say(cy, "anyone at the lighthouse?");
  await sees(cy, "Cy", "anyone at the lighthouse?");
  await notSeen(cy, "hello from Ada");
  await notSeen(cy, "hi Ada, Bob here");
  await notSeen(ada, "anyone at the lighthouse?");
  await notSeen(bob, "anyone at the lighthouse?");
  const time = await ada.$eval("#messages .message time", (t) => t.textContent);
  if (!/\d/.test(time)) throw new Error(`messages show no time (got ${JSON.stringify(time)})`);
  lap("messages reach their room only, with sender and time");

  await crossOriginIsRefused(context);
  lap("a page of another origin (another port) cannot open the chat's WebSocket: 403, counted");

  const restartAt = Date.now();
  await stopServer();
  for (const page of [ada, bob, cy]) await page.waitForSelector('#status[data-state="closed"]');
  lap("server stopped (SIGTERM); every page shows it is offline");
  await startServer();
  for (const page of [ada, bob, cy]) {
    await page.waitForSelector('#status[data-state="open"]', { timeout: RECONNECT_MS });
  }
  await online(ada, 2);
  await online(bob, 2);
  await online(cy, 1);
  lap(`server restarted on the same port; pages reconnected and rejoined by themselves (${Date.now() - restartAt} ms from stop)`);

  await say(bob, "back after the restart");
  await sees(ada, "Bob", "back after the restart");
  await sees(bob, "Bob", "back after the restart");
  await say(ada, "welcome back");
  await sees(bob, "Ada", "welcome back");
  await say(cy, "still alone here");
  await sees(cy, "Cy", "still alone here");
  await notSeen(cy, "back after the restart");
  await notSeen(ada, "still alone here");
  lap("chat works again after the restart");

  const shot = join(OUT, "chat.png");
  await ada.screenshot({ path: shot });
  await cy.screenshot({ path: join(OUT, "chat-other-room.png") });
  const size = statSync(shot).size;
  if (size === 0) throw new Error(`${shot} is empty`);
  lap(`screenshot ${shot} (${size} bytes)`);

  if (errors.length) throw new Error(`errors in the pages:\n  ${errors.join("\n  ")}`);
} catch (e) {
  if (context) {
    for (const [i, page] of context.pages().entries()) {
      await page.screenshot({ path: join(OUT, `failure-${i}.png`) }).catch(() => {});
    }
  }
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  fail(`${e.message}\n(screenshots of every page: ${OUT}/failure-*.png; server logs: ${OUT}/server*.log)`);
}
await context.close();
rmSync(profile, { recursive: true, force: true });
console.log(`browser test passed in ${Date.now() - started} ms`);
