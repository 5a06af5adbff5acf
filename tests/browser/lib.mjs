// Shared helpers of the browser tests: locate web/ (npm tree, assembled SAO)
// and launch Debian's chromium through playwright-core (never a downloaded
// browser).
import fs from 'node:fs';
import path from 'node:path';
import {createRequire} from 'node:module';
import {fileURLToPath} from 'node:url';

export const REPO = path.resolve(
    path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const WEB_DIR = path.join(REPO, 'web');
export const SAO_DIR = path.resolve(
    process.env.SAO_DIR || path.join(WEB_DIR, 'build', 'sao'));
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// playwright-core is installed in web/node_modules, not next to this file.
export function playwright() {
    const require = createRequire(path.join(WEB_DIR, 'package.json'));
    try {
        return require('playwright-core');
    } catch (error) {
        throw new Error(
            `playwright-core not found in ${WEB_DIR}/node_modules ` +
            `(run make browser-deps): ${error.message}`);
    }
}

export async function launch() {
    if (!fs.existsSync(CHROMIUM)) {
        throw new Error(`${CHROMIUM} missing (run make browser-deps)`);
    }
    return playwright().chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--no-sandbox', '--disable-gpu',
            '--disable-background-networking', '--disable-component-update',
            '--no-first-run'],
    });
}
