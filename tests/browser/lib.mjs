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

// ---- Steps, checks and SAO screens shared by the browser tests ----------

export class Failure extends Error {}

let step = 0;
export function log(message) {
    console.log(`[${++step}] ${message}`);
}
export function currentStep() {
    return step;
}
export function check(condition, message) {
    if (!condition) {
        throw new Failure(message);
    }
    console.log(`    ok: ${message}`);
}

// Text of the visible SAO dialogs (errors, warnings), wizards left out.
export async function dialogs(page) {
    return page.evaluate(() => Array.from(
        document.querySelectorAll('.modal.in'))
        .filter(el => !el.classList.contains('wizard-dialog'))
        .map(el => el.innerText.trim().replace(/\s+/g, ' '))
        .filter(Boolean));
}

// Log in to SAO at url (database db) as user; custom.js must be loaded.
export async function login(page, {url, db, user, password}) {
    const address = new URL(url);
    address.hash = db;
    log(`open ${address.href}`);
    await page.goto(address.href);
    const loginInput = page.locator('.login-dialog #login');
    await loginInput.waitFor({state: 'visible'});
    check(await page.evaluate(
        () => typeof Sao.View.Form.BinaryDicom == 'function'),
    'SAO loaded custom.js (binary_dicom widget registered)');
    log(`log in as ${user} on database ${db}`);
    await loginInput.fill(user);
    await page.locator('.login-dialog button[type=submit]').click();
    const entry = page.locator('.ask-dialog #ask-dialog-entry');
    await entry.waitFor({state: 'visible'});
    await entry.fill(password);
    await page.locator('.ask-dialog .btn-primary').click();
    // a wrong password is asked again
    const logged = page.locator('#global-search-entry');
    await Promise.race([
        logged.waitFor({state: 'visible'}),
        page.waitForTimeout(1000).then(() => entry.waitFor(
            {state: 'visible'})).then(() => {
            throw new Failure(
                `login refused for ${user} on ${db} (password asked again)`);
        }),
    ]);
    await page.locator('#menu .treeview tbody tr').first().waitFor();
    check(true, 'logged in, menu loaded');
}

// The texts of SAO's global search completion for text ([] if none).
export async function globalSearch(page, text) {
    const entry = page.locator('#global-search-entry');
    const items = page.locator('.global-search-container li.completion');
    await entry.fill('');
    await items.first().waitFor({state: 'hidden'}).catch(() => {});
    await entry.pressSequentially(text, {delay: 20});
    // the completion searches after a pause in typing
    await page.waitForTimeout(800);
    await page.waitForFunction(() => !window.__walk || !window.__walk.pending);
    try {
        await items.first().waitFor({state: 'visible', timeout: 3000});
    } catch (error) {
        return [];
    }
    await page.waitForTimeout(300);  // let the completion settle
    return (await items.locator('.global-search-text').allInnerTexts())
        .map(t => t.trim());
}

const norm = text => text.toLowerCase().replace(/\s*\/\s*/g, ' / ');

// Open a menu entry, given as its full path, through the global search.
export async function openMenu(page, menuPath) {
    const parts = menuPath.split('/').map(s => s.trim()).filter(Boolean);
    const wanted = parts.join(' / ').toLowerCase();
    const leaf = parts[parts.length - 1];
    log(`open menu "${parts.join(' / ')}" (global search "${leaf}")`);
    const texts = await globalSearch(page, leaf);
    if (!texts.length) {
        throw new Failure(`global search "${leaf}" found nothing ` +
            '(module not activated, no access, or renamed menu?)');
    }
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
    await page.locator('.global-search-container li.completion')
        .nth(index).locator('a').click();
}

// True if the global search offers the menu entry menuPath.
export async function menuOffered(page, menuPath) {
    const parts = menuPath.split('/').map(s => s.trim()).filter(Boolean);
    const texts = await globalSearch(page, parts[parts.length - 1]);
    await page.locator('#global-search-entry').fill('');
    console.log(`    global search "${parts[parts.length - 1]}": ` +
        JSON.stringify(texts));
    return texts.some(text => norm(text) == parts.join(' / ').toLowerCase());
}

// The open wizard: a modal dialog, or the active tab (window=True).
export function wizard(page) {
    return page.locator(
        '.wizard-dialog.in, #tabcontent > .tab-pane.active .wizard-form')
        .last();
}

// All text of a container, including the values of its inputs.
export async function allText(locator) {
    return locator.evaluate(el => {
        const values = Array.from(el.querySelectorAll(
            'input:not([type=file]):not([type=hidden]), textarea, select'))
            .map(input => input.tagName == 'SELECT' ?
                (input.selectedOptions[0] || {}).text || '' : input.value)
            .filter(Boolean);
        return [el.innerText, ...values].join('\n');
    });
}

// Say why a test failed: the error, open dialogs, page errors.
export async function reportFailure(page, error, errors, label = '') {
    console.error(`FAILED${label} at step ${currentStep()}: ` +
        error.message);
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
}

// A study timeline (study list, patient's Imaging tab, imaging result):
// a Preview column whose first row shows the stored picture, newest first.
export async function checkTimeline(page, timeout, list, what) {
    const headers = (await list.locator('thead th:visible').allInnerTexts())
        .map(t => t.trim()).filter(Boolean);
    check(headers[0] == 'Preview', `${what}: the Preview column comes ` +
        `first (${JSON.stringify(headers)})`);
    const image = list.locator('tbody tr img.column-image').first();
    await image.waitFor({state: 'attached'});
    const handle = await image.elementHandle();
    await page.waitForFunction(
        img => img.complete && img.naturalWidth > 0 &&
            /^blob:|^data:/.test(img.src), handle, {timeout})
        .catch(() => {});
    const shown = await handle.evaluate(
        img => img.complete && img.naturalWidth > 0);
    check(shown, `${what}: the first study shows its preview`);
    const dates = await list.locator('tbody tr td[data-title^="Study date"]')
        .allInnerTexts();
    const sorted = dates.map(d => d.trim()).filter(Boolean);
    // SAO shows the user's date format (month/day/year in English).
    const parsed = sorted.map(d => Date.parse(d)).filter(d => !isNaN(d));
    check(parsed.every((d, i) => !i || d <= parsed[i - 1]),
        `${what}: newest first (${JSON.stringify(sorted)})`);
}
