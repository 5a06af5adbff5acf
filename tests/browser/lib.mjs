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

// ---- Steps of a browser test: numbered log lines, checks ----------------
export class Failure extends Error {}

export function reporter() {
    let step = 0;
    return {
        log(message) {
            console.log(`[${++step}] ${message}`);
        },
        check(condition, message) {
            if (!condition) {
                throw new Failure(message);
            }
            console.log(`    ok: ${message}`);
        },
        stepNumber: () => step,
    };
}

// What a failed step leaves: the message, open dialogs, page errors, a
// screenshot of shotPage at failurePath; sets the exit code to 1.
export async function reportFailure(error, {step, page, shotPage, errors,
        failurePath, extra = []}) {
    console.error(`FAILED at step ${step}: ${error.message}`);
    if (!(error instanceof Failure)) {
        console.error(error.stack);
    }
    const open = await dialogs(page).catch(() => []);
    if (open.length) {
        console.error(`open dialogs: ${JSON.stringify(open)}`);
    }
    if (errors.length) {
        console.error(`page errors: ${JSON.stringify(errors)}`);
    }
    for (const line of extra) {
        console.error(line);
    }
    await (shotPage || page).screenshot({path: failurePath}).then(
        () => console.error(`screenshot ${failurePath}`), () => {});
    process.exitCode = 1;
}

// Text of the visible SAO dialogs (errors, warnings), for failure messages.
export async function dialogs(page) {
    return page.evaluate(() => Array.from(
        document.querySelectorAll('.modal.in'))
        .filter(el => !el.classList.contains('wizard-dialog'))
        .map(el => el.innerText.trim().replace(/\s+/g, ' '))
        .filter(Boolean));
}

// Log into SAO at url (database db) as login; a refused password fails.
export async function loginSao(page, {url, db, login, password},
        {log, check}) {
    const address = new URL(url);
    address.hash = db;
    log(`open ${address.href}`);
    await page.goto(address.href);
    const loginInput = page.locator('.login-dialog #login');
    await loginInput.waitFor({state: 'visible'});
    log(`log in as ${login} on database ${db}`);
    await loginInput.fill(login);
    await page.locator('.login-dialog button[type=submit]').click();
    const passwordInput = page.locator('.ask-dialog #ask-dialog-entry');
    await passwordInput.waitFor({state: 'visible'});
    await passwordInput.fill(password);
    await page.locator('.ask-dialog .btn-primary').click();
    // a wrong password is asked again
    const logged = page.locator('#global-search-entry');
    await Promise.race([
        logged.waitFor({state: 'visible'}),
        page.waitForTimeout(1000).then(() => passwordInput.waitFor(
            {state: 'visible'})).then(() => {
            throw new Failure(
                `login refused for ${login} on ${db} (password asked again)`);
        }),
    ]);
    await page.locator('#menu .treeview tbody tr').first().waitFor();
    check(true, 'logged in, menu loaded');
}

// Open a menu entry (its full path) through SAO's global search box.
export async function openMenuEntry(page, menuPath, {log}) {
    const parts = menuPath.split('/').map(s => s.trim()).filter(Boolean);
    const wanted = parts.join(' / ').toLowerCase();
    const leaf = parts[parts.length - 1];
    log(`open menu "${parts.join(' / ')}" (global search "${leaf}")`);
    const entry = page.locator('#global-search-entry');
    await entry.fill('');
    await entry.pressSequentially(leaf, {delay: 20});
    const items = page.locator('.global-search-container li.completion');
    try {
        await items.first().waitFor({state: 'visible', timeout: 10000});
    } catch (error) {
        throw new Failure(`global search "${leaf}" found nothing ` +
            '(module not activated, no access, or renamed menu?)');
    }
    await page.waitForTimeout(300);  // let the completion settle
    const texts = (await items.locator('.global-search-text').allInnerTexts())
        .map(text => text.trim());
    const norm = text => text.toLowerCase().replace(/\s*\/\s*/g, ' / ');
    let index = texts.findIndex(text => norm(text) == wanted);
    if (index < 0) {
        // the path may have moved: accept a single entry with that name
        const same = texts.filter(text =>
            norm(text).endsWith(' / ' + leaf.toLowerCase()) ||
            norm(text) == leaf.toLowerCase());
        if (same.length != 1) {
            throw new Failure(`no menu "${menuPath}" in the global search ` +
                `results: ${JSON.stringify(texts)}`);
        }
        index = texts.indexOf(same[0]);
        console.log(`    note: "${menuPath}" not found, using "${same[0]}"`);
    }
    console.log(`    select "${texts[index]}"`);
    await items.nth(index).locator('a').click();
}
