//! Drives the test SMART app (tests/browser/app) through Portico's authorization pages in Debian's
//! headless Chromium with puppeteer-core, as a person would: it opens the launch page, signs in,
//! picks a patient when asked, answers the consent page, and waits for the app's JSON.
//!
//! Usage: node drive.cjs NODE_MODULES_DIR, with one JSON object on standard input:
//!   {"launchUrl": "...", "username": "...", "password": "...",
//!    "pick": {"id": "2", "query": "family name"} | null, "consent": "allow" | "deny",
//!    "chromium": "/usr/bin/chromium", "timeoutMs": 90000}
//! Prints one JSON line: {"app": <what the app wrote>, "pages": ["login", "picker", "consent"]
//! (with "search" after "picker" when the patient had to be found by name),
//! "consentScopes": [...], "authorizeRequests": [...]}. On failure it prints the page's URL and
//! visible text on standard error (never a password: input values are not part of the text) and
//! exits non-zero. A run that takes longer than timeoutMs is stopped.
"use strict";

const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const modules = process.argv[2];
if (!modules) {
  console.error("usage: node drive.cjs NODE_MODULES_DIR < settings.json");
  process.exit(64);
}
const puppeteer = require(path.join(modules, "puppeteer-core"));

const CHROMIUM_FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

// What is on the page now: the app's result, one of Portico's forms, or "unknown" for a loaded
// page outside the app that is none of them (an error page: no use waiting for it to change).
function pageKind(appOrigin) {
  const result = document.querySelector("#result");
  if (result && result.textContent.trim()) return "result";
  if (document.querySelector("input#username")) return "login";
  if (document.querySelector("input[name=patient]") || document.querySelector("button#select")) {
    return "picker";
  }
  if (document.querySelector("button#allow")) return "consent";
  if (location.origin !== appOrigin && document.readyState === "complete") return "unknown";
  return null;
}

async function main() {
  const settings = JSON.parse(fs.readFileSync(0, "utf8"));
  const timeoutMs = settings.timeoutMs || 90000;
  const deadline = Date.now() + timeoutMs;
  const remaining = () => Math.max(1000, deadline - Date.now());
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-chromium-"));
  const browser = await puppeteer.launch({
    executablePath: settings.chromium || "/usr/bin/chromium",
    headless: true,
    args: [...CHROMIUM_FLAGS, `--user-data-dir=${userDataDir}`],
    userDataDir,
    timeout: 30000,
  });
  let page;
  const consoleLines = [];
  const stop = setTimeout(() => {
    fail(page, `no result within ${timeoutMs} ms`, consoleLines)
      .then(() => browser.close())
      .catch(() => {})
      .finally(() => {
        fs.rmSync(userDataDir, { recursive: true, force: true });
        process.exit(3);
      });
  }, timeoutMs);
  try {
    page = await browser.newPage();
    page.on("console", (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => consoleLines.push(`pageerror: ${error.message}`));
    const authorizeRequests = [];
    page.on("request", (request) => {
      if (new URL(request.url()).pathname.endsWith("/authorize")) {
        authorizeRequests.push(request.url());
      }
    });

    const pages = [];
    let consentScopes = null;
    const appOrigin = new URL(settings.launchUrl).origin;
    await page.goto(settings.launchUrl, { waitUntil: "load", timeout: remaining() });
    for (;;) {
      const handle = await page.waitForFunction(
        pageKind,
        { timeout: remaining(), polling: 100 },
        appOrigin,
      );
      const kind = await handle.jsonValue();
      if (kind === "result") break;
      if (kind === "unknown") throw new Error("a page that is neither the app nor a form");
      pages.push(kind);
      if (pages.filter((seen) => seen === kind).length > 2) {
        throw new Error(`the ${kind} page came back a third time`);
      }
      if (kind === "login") {
        await page.type("input#username", settings.username);
        await page.type("input#password", settings.password);
        await submit(page, "button#login", remaining());
      } else if (kind === "picker") {
        if (!settings.pick) throw new Error("a patient picker was shown, none was expected");
        const radio = `input[name=patient][value="${settings.pick.id}"]`;
        if (!(await page.$(radio)) && settings.pick.query && (await page.$("input#q"))) {
          await page.type("input#q", settings.pick.query);
          await submit(page, "button#search", remaining());
          pages.push("search");
          await page.waitForFunction(pageKind, { timeout: remaining(), polling: 100 }, appOrigin);
        }
        if (!(await page.$(radio))) throw new Error(`the picker offers no Patient/${settings.pick.id}`);
        await page.click(radio);
        await submit(page, "button#select", remaining());
      } else if (kind === "consent") {
        consentScopes = await page.$$eval("input[name=scope]", (boxes) =>
          boxes.map((box) => ({ scope: box.value, checked: box.checked })),
        );
        const button = settings.consent === "deny" ? "button#deny" : "button#allow";
        await submit(page, button, remaining());
      }
    }
    const text = await page.$eval("#result", (element) => element.textContent);
    const app = JSON.parse(text);
    process.stdout.write(JSON.stringify({ app, pages, consentScopes, authorizeRequests }) + "\n");
  } catch (error) {
    await fail(page, String(error && error.stack ? error.stack : error), consoleLines);
    process.exitCode = 1;
  } finally {
    clearTimeout(stop);
    await browser.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

// Clicks a form's submit button and waits for the page it leads to.
async function submit(page, selector, timeout) {
  await Promise.all([
    page.waitForNavigation({ waitUntil: "load", timeout }),
    page.click(selector),
  ]);
}

// Says where the run stopped: the URL and the visible text of the page, and the console.
async function fail(page, reason, consoleLines = []) {
  let url = "(no page)";
  let text = "";
  if (page) {
    url = page.url();
    text = await page
      .evaluate(() => (document.body ? document.body.innerText : ""))
      .catch((error) => `(no text: ${error})`);
  }
  console.error(
    `drive.cjs: ${reason}\nat ${url}\n--- page text ---\n${text}\n--- console ---\n${consoleLines.join("\n")}`,
  );
}

main().catch((error) => {
  console.error(`drive.cjs: ${error && error.stack ? error.stack : error}`);
  process.exit(1);
});
