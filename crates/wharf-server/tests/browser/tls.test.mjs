// The chat page over https:// and wss:// in a real browser: Debian's
// chromium, driven by playwright-core, trusting the test certificate by its
// public key (--ignore-certificate-errors-spki-list; any other certificate
// is still refused). Run by scripts/browser-test, which makes the
// certificate and starts the server with --tls-cert and --tls-key.
//
// Environment: WHARF_TLS_PORT, WHARF_SPKI (base64 SHA-256 of the
// certificate's SubjectPublicKeyInfo), WHARF_OUT (where the screenshot goes).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const PORT = need("WHARF_TLS_PORT");
const SPKI = need("WHARF_SPKI");
const OUT = need("WHARF_OUT");
const BASE = `https://localhost:${PORT}`;
const STEP_MS = 10_000;

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`browser TLS test FAILED: ${name} is not set; run scripts/browser-test`);
    process.exit(1);
  }
  return v;
}

const sockets = [];
const errors = [];

async function openChat(context, name) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on("pageerror", (e) => errors.push(`${name}: ${e.message}`));
  page.on("websocket", (ws) => sockets.push(ws.url()));
  await page.goto(`${BASE}/#harbour`);
  await page.fill("#name", name);
  await page.click("#join");
  await page.waitForSelector('#status[data-state="open"]');
  return page;
}

async function sees(page, text) {
  await page.waitForFunction(
    (text) => [...document.querySelectorAll("#messages .message .text")].some((e) => e.textContent === text),
    text,
    { timeout: STEP_MS },
  );
}

const profile = mkdtempSync(join(tmpdir(), "wharf-chromium-tls-"));
let context;
let failed = false;
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
      `--ignore-certificate-errors-spki-list=${SPKI}`,
    ],
  });
  const ada = await openChat(context, "Ada");
  const bob = await openChat(context, "Bob");
  if (!(await ada.evaluate(() => window.isSecureContext))) throw new Error("the page is not a secure context");
  await ada.fill("#text", "hello over wss");
  await ada.press("#text", "Enter");
  await sees(bob, "hello over wss");
  await sees(ada, "hello over wss");
  const wss = sockets.filter((u) => u.startsWith(`wss://localhost:${PORT}/`));
  if (wss.length < 2 || wss.length !== sockets.length) throw new Error(`expected wss:// sockets, saw ${sockets}`);
  await ada.screenshot({ path: join(OUT, "chat-tls.png") });
  if (errors.length) throw new Error(errors.join("\n"));
  console.log(`  ok  two pages chat over ${BASE} (${wss.length} wss:// sockets)`);
} catch (e) {
  failed = true;
  console.error(`browser TLS test FAILED: ${e.stack || e}`);
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
