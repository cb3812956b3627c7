//! Watches Portico's /status page in Debian's headless Chromium with puppeteer-core, as an
//! operator would, while the test cuts and restores the PMS database: the browser is sent to the
//! page's sign-in form, signs in as an admin user, and the page is then never reloaded, so every
//! change it shows came through its own refresh.
//!
//! Usage: node status.cjs NODE_MODULES_DIR. Standard input: one JSON line
//!   {"url": ".../status", "username": "...", "password": "...", "chromium": "/usr/bin/chromium",
//!    "screenshot": "/path/raised.png", "timeoutMs": 60000}
//! then one line ("next") each time the test has done its part. Standard output, one JSON line
//! per step: {"state": "healthy"}, then (after the first "next") {"state": "raised", "banner":
//! "...", "msAfterNext": N} with a screenshot written, then (after the second) {"state":
//! "cleared", "msAfterNext": N}. Exits non-zero with the page's text on standard error when a
//! state does not come within timeoutMs.
"use strict";

const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const readline = require("node:readline");

const modules = process.argv[2];
if (!modules) {
  console.error("usage: node status.cjs NODE_MODULES_DIR < settings");
  process.exit(64);
}
const puppeteer = require(path.join(modules, "puppeteer-core"));

async function main() {
  const input = readline.createInterface({ input: process.stdin });
  const lines = input[Symbol.asyncIterator]();
  const settings = JSON.parse((await lines.next()).value);
  const timeout = settings.timeoutMs || 60000;
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-chromium-"));
  const browser = await puppeteer.launch({
    executablePath: settings.chromium || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", `--user-data-dir=${userDataDir}`],
    userDataDir,
    timeout: 30000,
  });
  const page = await browser.newPage();
  try {
    await page.setViewport({ width: 420, height: 1400 });
    const form = await page.goto(settings.url, { waitUntil: "load", timeout });
    if (!form || form.status() !== 200 || !page.url().endsWith("/status/sign-in")) {
      throw new Error(`no sign-in form: ${form && form.status()} at ${page.url()}`);
    }
    await page.type("#username", settings.username);
    await page.type("#password", settings.password);
    const [response] = await Promise.all([
      page.waitForNavigation({ waitUntil: "load", timeout }),
      page.click("#login"),
    ]);
    if (!response || response.status() !== 200 || page.url() !== settings.url) {
      throw new Error(`signing in answered ${response && response.status()} at ${page.url()}`);
    }
    const viewer = await page.$eval("#viewer", (element) => element.textContent);
    if (viewer !== settings.username) {
      throw new Error(`signed in as ${viewer}`);
    }
    await page.waitForSelector(".banner.ok", { timeout });
    console.log(JSON.stringify({ state: "healthy" }));

    await lines.next();
    let started = Date.now();
    await page.waitForSelector(".banner.raised", { timeout });
    const banner = await page.$eval(".banner.raised", (element) => element.textContent);
    await page.screenshot({ path: settings.screenshot, fullPage: true });
    console.log(JSON.stringify({ state: "raised", banner, msAfterNext: Date.now() - started }));

    await lines.next();
    started = Date.now();
    await page.waitForSelector(".banner.ok", { timeout });
    console.log(JSON.stringify({ state: "cleared", msAfterNext: Date.now() - started }));
  } catch (error) {
    const text = await page.evaluate(() => document.body && document.body.innerText).catch(() => "");
    console.error(`${error.message}\nat ${page.url()}\n${text}`);
    process.exitCode = 1;
  } finally {
    input.close();
    await browser.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
