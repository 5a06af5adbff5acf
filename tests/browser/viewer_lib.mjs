// Helpers of the viewer browser test (steps, SAO login by form, menu
// entries); launching chromium and locating SAO are shared in lib.mjs.
import {Failure, launch} from './lib.mjs';

export {Failure, launch};

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
