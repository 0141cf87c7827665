// Two chat pages in Chromium, on two wharf nodes that share rooms through
// Redis, both behind nginx (the configuration in docs/DEPLOYMENT.md, which
// scripts/browser-test extracts from the document): they chat in one room
// as if on one node. nginx balances round-robin; a page's node is read from
// its connection id (the node's number is in the id's high bits: the id of
// the page's own messages, `data-from`), and the second page is reopened,
// after one more request to shift the round-robin, until it lands on the
// other node. Run by scripts/browser-test.
//
// Environment: WHARF_LB_PORT (nginx), WHARF_OUT (screenshots).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const LB = process.env.WHARF_LB_PORT;
const OUT = process.env.WHARF_OUT;
if (!LB || !OUT) fail("WHARF_LB_PORT and WHARF_OUT must be set; run scripts/browser-test");
const BASE = `http://127.0.0.1:${LB}`;
const STEP_MS = 5_000;
const LOCAL_BITS = 2 ** 37; // wharf::backplane::LOCAL_BITS
const started = Date.now();

function fail(message) {
  console.error(`cluster browser test FAILED: ${message}`);
  process.exit(1);
}

function log(line) {
  console.log(`  ${String(Date.now() - started).padStart(5)} ms  ${line}`);
}

const nodeOf = (id) => Math.floor(id / LOCAL_BITS);

async function open(context, name) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on("pageerror", (e) => errors.push(`${name}: ${e.message}`));
  await page.goto(`${BASE}/#docks`);
  await page.fill("#name", name);
  await page.click("#join");
  await page.waitForSelector('#status[data-state="open"]');
  await page.waitForSelector("#chat-view:not([hidden])");
  return page;
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

// The sender id of the first message with this text that `page` shows.
async function senderOf(page, text) {
  const handle = await page.waitForFunction(
    (text) => {
      const li = [...document.querySelectorAll("#messages .message")].find(
        (li) => li.querySelector(".text").textContent === text,
      );
      return li ? li.dataset.from : null;
    },
    text,
    { timeout: STEP_MS },
  );
  return Number(await handle.jsonValue());
}

async function online(page, n) {
  await page.waitForFunction(
    (n) => document.getElementById("online").dataset.count === String(n),
    n,
    { timeout: STEP_MS },
  );
}

const errors = [];
const profile = mkdtempSync(join(tmpdir(), "wharf-chromium-cluster-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  const ada = await open(context, "Ada");
  await say(ada, "Ada here");
  const adaId = await senderOf(ada, "Ada here");
  log(`Ada joined #docks through nginx: id ${adaId}, node ${nodeOf(adaId)}`);

  let bob;
  let bobId;
  for (let attempt = 1; ; attempt++) {
    bob = await open(context, "Bob");
    const hello = `Bob here (${attempt})`;
    await say(bob, hello);
    bobId = await senderOf(bob, hello);
    if (nodeOf(bobId) !== nodeOf(adaId)) break;
    log(`Bob landed on Ada's node (${nodeOf(bobId)}): one more request through nginx, and his page again`);
    if (attempt === 8) throw new Error("nginx never sent Bob's page to the other node");
    await bob.close();
    // A page load is an even number of requests here: shift round-robin.
    await fetch(`${BASE}/healthz`);
  }
  log(`Bob joined #docks through nginx: id ${bobId}, node ${nodeOf(bobId)}`);

  await online(ada, 2);
  await online(bob, 2);
  log("both pages show 2 online (presence is cluster-wide)");
  await say(ada, "hello Bob, from the other node");
  if ((await senderOf(bob, "hello Bob, from the other node")) !== adaId) throw new Error("wrong sender id");
  log(`Bob's page shows Ada's message, from id ${adaId}`);
  await say(bob, "hello Ada, Bob here");
  if ((await senderOf(ada, "hello Ada, Bob here")) !== bobId) throw new Error("wrong sender id");
  log(`Ada's page shows Bob's message, from id ${bobId}`);

  await bob.close();
  await online(ada, 1);
  log("Bob closed his page: Ada's shows 1 online");
  await ada.screenshot({ path: join(OUT, "cluster.png") });
  if (errors.length) throw new Error(`errors in the pages:\n  ${errors.join("\n  ")}`);
} catch (e) {
  if (context) {
    for (const [i, page] of context.pages().entries()) {
      await page.screenshot({ path: join(OUT, `failure-cluster-${i}.png`) }).catch(() => {});
    }
  }
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  fail(e.message);
}
await context.close();
rmSync(profile, { recursive: true, force: true });
console.log(`cluster browser test passed in ${Date.now() - started} ms`);
