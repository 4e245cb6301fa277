// Bundles page.js (and matrix-js-sdk) for the browser with esbuild, in memory.
//
// Used by driver.mjs at startup; `node bundle.mjs OUTFILE` writes the bundle to a
// file for debugging.

import { fileURLToPath } from "node:url";
import path from "node:path";
import { writeFile } from "node:fs/promises";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));

// bundle returns the page script as a string: page.js (mesh GroupCall) or,
// for entry "rtc", rtcpage.js (MatrixRTC session + livekit-client). With sdk
// "36" the page is built against matrix-js-sdk 36 (the npm alias
// matrix-js-sdk-36), the last release with the legacy Olm/Megolm crypto
// (initLegacyCrypto, libolm from @matrix-org/olm, which the driver serves
// next to the bundle).
export async function bundle(entry = "page", sdk = "") {
	const alias = sdk === "36" ? { "matrix-js-sdk": "matrix-js-sdk-36" } : {};
	const result = await esbuild.build({
		alias,
		entryPoints: [path.join(here, entry === "rtc" ? "rtcpage.js" : "page.js")],
		bundle: true,
		write: false,
		format: "esm",
		platform: "browser",
		target: "chrome120",
		sourcemap: "inline",
		logLevel: "warning",
		define: { "process.env.NODE_ENV": '"production"' },
	});
	return result.outputFiles[0].text;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
	const out = process.argv[2];
	if (!out) {
		console.error("usage: node bundle.mjs OUTFILE");
		process.exit(2);
	}
	await writeFile(out, await bundle(process.argv[3] ?? ""));
}
