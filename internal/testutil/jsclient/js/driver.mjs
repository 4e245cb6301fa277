// Driver for one matrix-js-sdk client in headless Chromium, controlled by the Go
// package internal/testutil/jsclient.
//
//   node driver.mjs --chromium /usr/bin/chromium --user-data-dir DIR --console-log FILE
//
// Protocol: newline-delimited JSON. Go writes commands on stdin:
//   {"id": 1, "cmd": "start", "args": {...}}
// and the driver answers each on stdout with the same id:
//   {"id": 1, "ok": true, "result": ...}  or  {"id": 1, "ok": false, "error": "..."}
// The first line on stdout is {"event": "ready", "pid": <driver pid>,
// "browserPid": <chromium pid>, "url": "http://127.0.0.1:PORT/"} once the page
// has loaded; on a startup failure it is {"event": "fatal", "error": "..."}.
// stdout carries nothing else; the driver's own diagnostics go to stderr and the
// browser console goes to the --console-log file.
//
// The driver exits (closing Chromium) on the "close" command, on stdin EOF (the
// Go test process went away) and on SIGTERM/SIGINT.

import http from "node:http";
import { createWriteStream, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import readline from "node:readline";
import puppeteer from "puppeteer-core";
import { bundle } from "./bundle.mjs";

const { values: flags } = parseArgs({
	options: {
		chromium: { type: "string", default: "/usr/bin/chromium" },
		"user-data-dir": { type: "string" },
		"console-log": { type: "string" },
		"launch-timeout-ms": { type: "string", default: "30000" },
		// "36": bundle the page with matrix-js-sdk 36 and serve libolm.
		sdk: { type: "string", default: "" },
		// "rtc": the MatrixRTC page (rtcpage.js) instead of the mesh one.
		page: { type: "string", default: "page" },
	},
});
if (!flags["user-data-dir"] || !flags["console-log"]) {
	process.stderr.write("driver: --user-data-dir and --console-log are required\n");
	process.exit(2);
}

// Flags known to work for headless Debian Chromium in this environment.
const CHROMIUM_ARGS = [
	"--headless",
	"--use-fake-device-for-media-stream",
	"--use-fake-ui-for-media-stream",
	"--allow-loopback-in-peer-connection",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-background-networking",
	"--disable-component-update",
	"--disable-sync",
	"--no-first-run",
	"--disable-quic",
	// Screen sharing: pick the current tab without a picker.
	"--auto-accept-this-tab-capture",
	"--auto-select-desktop-capture-source=Entire screen",
	// Keep timers and media running at full speed in a hidden headless tab.
	"--disable-background-timer-throttling",
	"--disable-renderer-backgrounding",
	"--disable-backgrounding-occluded-windows",
	"--autoplay-policy=no-user-gesture-required",
];

const consoleLog = createWriteStream(flags["console-log"], { flags: "a" });
const t0 = Date.now();
function logConsole(line) {
	consoleLog.write(`[+${((Date.now() - t0) / 1000).toFixed(3)}s] ${line}\n`);
}
function diag(msg) {
	process.stderr.write(`driver: ${msg}\n`);
}
function emit(obj) {
	process.stdout.write(JSON.stringify(obj) + "\n");
}

let browser = null;
let server = null;
let page = null;
let closing = null;

const MODULES = path.join(path.dirname(fileURLToPath(import.meta.url)), "node_modules");
const OLM_DIR = path.join(MODULES, "@matrix-org", "olm");
// Files the pages load besides the bundle, read when first asked for: the
// Rust crypto's wasm (the package fetches it relative to the bundle's URL,
// /pkg/…) and livekit-client's E2EE worker.
const FILES = {
	"/pkg/matrix_sdk_crypto_wasm_bg.wasm": {
		path: path.join(MODULES, "@matrix-org", "matrix-sdk-crypto-wasm", "pkg", "matrix_sdk_crypto_wasm_bg.wasm"),
		type: "application/wasm",
	},
	"/e2ee-worker.mjs": {
		path: path.join(MODULES, "livekit-client", "dist", "livekit-client.e2ee.worker.mjs"),
		type: "text/javascript; charset=utf-8",
	},
};
const legacy = flags.sdk === "36";

// With the legacy crypto page, libolm is loaded first as a classic script: it
// defines the global Olm that matrix-js-sdk 36 uses.
const INDEX_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>jsclient</title></head>
<body>${legacy ? '<script src="/olm.js"></script>' : ""}<script type="module" src="/bundle.js"></script></body></html>`;

async function serve(script) {
	const olm = legacy ? { js: readFileSync(path.join(OLM_DIR, "olm.js")), wasm: readFileSync(path.join(OLM_DIR, "olm.wasm")) } : null;
	const srv = http.createServer((req, res) => {
		const url = new URL(req.url, "http://127.0.0.1");
		if (url.pathname === "/") {
			res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
			res.end(INDEX_HTML);
		} else if (url.pathname === "/bundle.js") {
			res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" });
			res.end(script);
		} else if (olm && url.pathname === "/olm.js") {
			res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" });
			res.end(olm.js);
		} else if (olm && url.pathname === "/olm.wasm") {
			res.writeHead(200, { "content-type": "application/wasm" });
			res.end(olm.wasm);
		} else if (Object.hasOwn(FILES, url.pathname)) {
			const f = FILES[url.pathname];
			let data;
			try {
				data = f.data ??= readFileSync(f.path);
			} catch (e) {
				diag(`cannot serve ${url.pathname}: ${e}`);
				res.writeHead(500);
				res.end();
				return;
			}
			res.writeHead(200, { "content-type": f.type });
			res.end(data);
		} else if (url.pathname === "/favicon.ico") {
			res.writeHead(204);
			res.end();
		} else {
			res.writeHead(404);
			res.end();
		}
	});
	await new Promise((resolve, reject) => {
		srv.once("error", reject);
		srv.listen(0, "127.0.0.1", resolve);
	});
	return srv;
}

async function launch() {
	const script = await bundle(flags.page, flags.sdk);
	server = await serve(script);
	const url = `http://127.0.0.1:${server.address().port}/`;

	browser = await puppeteer.launch({
		executablePath: flags.chromium,
		headless: true,
		pipe: true,
		userDataDir: flags["user-data-dir"],
		args: CHROMIUM_ARGS,
		timeout: Number(flags["launch-timeout-ms"]),
		protocolTimeout: 120000,
		// Signals are handled here so the browser is closed in order.
		handleSIGINT: false,
		handleSIGTERM: false,
		handleSIGHUP: false,
		dumpio: false,
	});
	browser.on("disconnected", () => {
		if (!closing) {
			diag("browser disconnected unexpectedly");
			shutdown(1);
		}
	});
	page = await browser.newPage();
	page.on("console", (msg) => logConsole(`${msg.type()}: ${msg.text()}`));
	page.on("pageerror", (err) => logConsole(`pageerror: ${err.stack || err}`));
	page.on("requestfailed", (req) => logConsole(`requestfailed: ${req.method()} ${req.url()} ${req.failure()?.errorText}`));
	page.on("crash", () => logConsole("page crashed"));
	await page.goto(url, { waitUntil: "load" });
	await page.waitForFunction(() => typeof window.harness === "object", { timeout: 30000 });
	return { url, browserPid: browser.process()?.pid ?? 0 };
}

const commands = {
	start: (args) => page.evaluate((a) => window.harness.start(a), args),
	state: () => page.evaluate(() => window.harness.state()),
	setMicMuted: (args) => page.evaluate((m) => window.harness.setMicMuted(m), !!args.muted),
	setVideoMuted: (args) => page.evaluate((m) => window.harness.setVideoMuted(m), !!args.muted),
	setScreensharing: async (args) => {
		// getDisplayMedia needs transient user activation: click the page first.
		await page.bringToFront();
		await page.mouse.click(1, 1);
		return page.evaluate((e) => window.harness.setScreensharing(e), !!args.enabled);
	},
	leave: (args) => page.evaluate((t) => window.harness.leave(t), args.timeoutMs ?? 10000),
	sendText: (args) => page.evaluate((b) => window.harness.sendText(b), String(args.body ?? "")),
	messages: () => page.evaluate(() => window.harness.messages()),
	close: async () => {
		// Answered first; the exit follows.
		setImmediate(() => shutdown(0));
		return null;
	},
};

async function handle(line) {
	let msg;
	try {
		msg = JSON.parse(line);
	} catch (e) {
		diag(`bad command line: ${line}`);
		return;
	}
	const fn = commands[msg.cmd];
	if (!fn) {
		emit({ id: msg.id, ok: false, error: `unknown command ${msg.cmd}` });
		return;
	}
	try {
		await launched; // commands wait for the page
		const result = await fn(msg.args || {});
		emit({ id: msg.id, ok: true, result: result ?? null });
	} catch (e) {
		emit({ id: msg.id, ok: false, error: String(e?.message || e) });
	}
}

function shutdown(code) {
	if (closing) return closing;
	closing = (async () => {
		try {
			if (page) {
				// Best effort: stop syncing so no request is in flight at close.
				await Promise.race([page.evaluate(() => window.harness?.stop()), new Promise((r) => setTimeout(r, 1000))]).catch(() => {});
			}
		} catch {}
		try {
			if (browser) await browser.close();
		} catch (e) {
			diag(`browser.close failed: ${e}`);
			try {
				browser?.process()?.kill("SIGKILL");
			} catch {}
		}
		server?.close();
		await new Promise((r) => consoleLog.end(r));
		process.exit(code);
	})();
	return closing;
}

process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
	if (line.trim()) void handle(line);
});
rl.on("close", () => shutdown(0));

const launched = launch();
try {
	const { url, browserPid } = await launched;
	emit({ event: "ready", pid: process.pid, browserPid, url });
} catch (e) {
	emit({ event: "fatal", error: String(e?.stack || e) });
	await shutdown(1);
}
