#!/usr/bin/env node
// End-to-end browser test of the DICOM upload through SAO (Tryton web client
// 7.0) with the binary_dicom widget of custom.js, in Debian's chromium.
//
// Environment:
//   TRYTON_URL       SAO served by trytond, e.g. http://127.0.0.1:8000/
//   TRYTON_DB        database name
//   TRYTON_LOGIN     user name (default admin)
//   TRYTON_PASSWORD  password
//   DICOM_FILES      DICOM files to upload, separated by ':'
//   TEXT_FILE        a non-DICOM file uploaded with them (must be rejected)
//   SCREENSHOT       PNG of the upload result; also written: <name>-form.png
//                    (filled wizard), <name>-study.png (study form),
//                    <name>-failure.png (state at a failure)
// Optional:
//   STOP_AFTER       login | open | upload: stop successfully after that step
//   UPLOAD_MENU, STUDIES_MENU, ORTHANC_SERVER, VIEWER_FIELD: see CONFIG
//   STUDY_TEXT       text the uploaded study shows in lists (its description)
//   CHROMIUM         default /usr/bin/chromium
//   TIMEOUT          milliseconds per step (default 30000; the upload x4)
//   CD_DIR           a patient CD folder (DICOMDIR, IMAGES/..., a viewer
//                    and autorun files): streamed with PATIENT chosen
//   CD_IMAGES        number of DICOM images in CD_DIR
//   CANCEL_DIR       a folder of images: the upload is cancelled while the
//                    CANCEL_AT-th file is sent (default 3; the widget
//                    finishes the files in flight)
//   PATIENT          the patient to choose (text typed in the field)
//
// Exit code 0 when every step passed, 1 with a message otherwise.
import path from 'node:path';
import fs from 'node:fs';

import {
    Failure, allText, check, dialogs, launch, log, login, openMenu,
    reportFailure, wizard,
} from './lib.mjs';

// ---- What to look for: adjust here when names change --------------------
const CONFIG = {
    // menu entries, as their full path (ir.ui.menu rec_name); the last
    // part is typed in SAO's global search box ("Action")
    uploadMenu: process.env.UPLOAD_MENU ||
        'Health / Medical Imaging / Orthanc / Upload Image Data',
    studiesMenu: process.env.STUDIES_MENU ||
        'Health / Medical Imaging / Orthanc / Orthanc Studies',
    // wizard start view
    dataField: 'data_to_upload',
    serverField: 'server',           // many2one/selection, filled if empty
    server: process.env.ORTHANC_SERVER || '',
    uploadButton: /^\s*Upload\s*$/i,
    // result view: its whole text (labels + field values) must match all
    // (the summary of upload.py's msg_upload_summary / msg_upload_studies)
    result: [/\b4 file\(s\) sent\b/, /\b3 DICOM instance\(s\) stored\b/,
        /\b0 already stored\b/,
        // JSON-RPC path: the text file is rejected; streamed: skipped
        /\b1 rejected\b|\b1 file\(s\) skipped, not DICOM\b/,
        /\b1 study\(ies\) in GNU Health, 1 of them new\b/],
    // the studies of the upload, listed in the result view
    resultStudies: 'studies',
    studyText: process.env.STUDY_TEXT || '',
    closeButtons: /^\s*(Close|OK|Done|End)\s*$/i,
    // study form: a URL field with the viewer link (Debian's plugins: the
    // Orthanc Explorer and Web Viewer; OHIF and Stone are not packaged)
    viewerField: process.env.VIEWER_FIELD || 'explorer_link',
};

const env = name => process.env[name] || '';
const TRYTON_URL = env('TRYTON_URL');
const DB = env('TRYTON_DB');
const LOGIN = env('TRYTON_LOGIN') || 'admin';
const PASSWORD = env('TRYTON_PASSWORD');
const DICOM_FILES = env('DICOM_FILES').split(':').filter(Boolean);
const TEXT_FILE = env('TEXT_FILE');
const SCREENSHOT = path.resolve(env('SCREENSHOT') || 'upload.png');
const STOP_AFTER = env('STOP_AFTER');
const TIMEOUT = Number(env('TIMEOUT') || 30000);
const CD_DIR = env('CD_DIR');
const CD_IMAGES = Number(env('CD_IMAGES') || 0);
const CANCEL_DIR = env('CANCEL_DIR');
const CANCEL_AT = Number(env('CANCEL_AT') || 3);
const PATIENT = env('PATIENT');

const shot = suffix => SCREENSHOT.replace(/(\.png)?$/i, `${suffix}.png`);

function usage() {
    const missing = ['TRYTON_URL', 'TRYTON_DB', 'TRYTON_PASSWORD']
        .filter(name => !env(name));
    if (!['login', 'open'].includes(STOP_AFTER)) {
        if (!DICOM_FILES.length) {
            missing.push('DICOM_FILES');
        }
        if (!TEXT_FILE) {
            missing.push('TEXT_FILE');
        }
    }
    for (const file of [...DICOM_FILES, TEXT_FILE].filter(Boolean)) {
        if (!fs.existsSync(file)) {
            missing.push(`(file ${file} does not exist)`);
        }
    }
    if (missing.length) {
        console.error(`upload.mjs: missing ${missing.join(', ')}`);
        process.exit(2);
    }
}

async function chooseServer(form) {
    const input = form.locator(`[name="${CONFIG.serverField}"]`).first();
    if (!await input.count()) {
        console.log(`    no "${CONFIG.serverField}" field: nothing to choose`);
        return;
    }
    const tag = await input.evaluate(el => el.tagName);
    const shown = () => input.evaluate(el => (el.tagName == 'SELECT' ?
        (el.selectedOptions[0] || {}).text : el.value) || '');
    if (await shown()) {
        console.log(`    server: ${await shown()} (default)`);
        return;
    }
    if (tag == 'SELECT') {
        const options = (await input.locator('option').allInnerTexts())
            .filter(text => text.trim() &&
                (!CONFIG.server || text.includes(CONFIG.server)));
        if (!options.length) {
            throw new Failure(`no "${CONFIG.server}" choice for ` +
                `"${CONFIG.serverField}"`);
        }
        await input.selectOption({label: options[0]});
    } else {
        if (!CONFIG.server) {
            throw new Failure(`the "${CONFIG.serverField}" field is empty ` +
                'and ORTHANC_SERVER is not set');
        }
        await input.fill(CONFIG.server);
        await input.press('Tab');  // many2one: search, set if one match
        await form.page().waitForTimeout(1000);
    }
    check(await shown(), `server set to "${await shown()}"`);
}

async function upload(page) {
    log(`open the upload wizard`);
    await openMenu(page, CONFIG.uploadMenu);
    const form = wizard(page);
    const widget = form.locator('.form-binary-dicom').first();
    await widget.waitFor({state: 'visible'});
    check(true, 'wizard open with the binary_dicom widget');
    if (STOP_AFTER == 'open') {
        await page.screenshot({path: SCREENSHOT});
        return false;
    }
    const files = [...DICOM_FILES, TEXT_FILE];
    log(`select ${files.length} files: ` +
        files.map(f => path.basename(f)).join(', '));
    await widget.locator('input[type=file]:not(.dicom-folder)')
        .setInputFiles(files);
    const summary = widget.locator('input[type=text]');
    await page.waitForFunction(
        el => /^\d+ files?,/.test(el.value), await summary.elementHandle());
    const text = await summary.inputValue();
    console.log(`    widget shows "${text}"`);
    check(text.startsWith(`${files.length} files,`),
        `the widget counts ${files.length} files`);
    await chooseServer(form);
    await page.screenshot({path: shot('-form')});

    log('click Upload');
    const {result, text: resultText} = await clickUpload(page, form);
    for (const pattern of CONFIG.result) {
        check(pattern.test(resultText), `result matches ${pattern}`);
    }
    check(resultText.includes(path.basename(TEXT_FILE)),
        `result names the rejected ${path.basename(TEXT_FILE)}`);
    for (const file of DICOM_FILES) {
        check(!resultText.includes(`${path.basename(file)}:`),
            `${path.basename(file)} is not among the rejected files`);
    }
    const listed = result.locator(
        `.form-many2many:has([name="${CONFIG.resultStudies}"]) ` +
        '.treeview tbody ' +
        'tr:not(.more-row)').filter({hasText: /\S/});
    try {
        await listed.first().waitFor({state: 'visible', timeout: 10000});
    } catch (error) {
        throw new Failure('the result lists no study');
    }
    const listedText = (await listed.allInnerTexts()).join('\n');
    console.log(`    studies listed: ${listedText.replace(/\s+/g, ' ')}`);
    check(await listed.count() == 1, 'the result lists 1 study');
    if (CONFIG.studyText) {
        check(listedText.includes(CONFIG.studyText),
            `the listed study shows "${CONFIG.studyText}"`);
    }
    await page.screenshot({path: SCREENSHOT});
    console.log(`    screenshot ${SCREENSHOT}`);
    const close = result.locator('button').filter(
        {hasText: CONFIG.closeButtons});
    if (await close.count()) {
        await close.first().click();
    } else {
        await page.keyboard.press('Escape');
    }
    await result.waitFor({state: 'hidden'}).catch(() => {});
    return true;
}

// Type text in a many2one of the form and let SAO pick the one match.
async function chooseMany2One(form, name, text) {
    const input = form.locator(`[name="${name}"]`).first();
    const page = form.page();
    await input.fill(text);
    await input.press('Tab');
    // SAO searches the name on the server, then fills the field or, when
    // several match, opens its search dialog: wait for either (a loaded
    // machine answers late), and pick the row in the dialog.
    const search = page.locator('.modal.in:not(.wizard-dialog)').last();
    const deadline = Date.now() + 20000;
    while (!(await input.inputValue()) && Date.now() < deadline) {
        if (await search.count()) {
            await search.locator('.treeview tbody tr:not(.more-row)')
                .filter({hasText: text}).first().locator('td[data-title]')
                .first().dblclick();
        }
        await page.waitForTimeout(250);
    }
    check((await input.inputValue()).length > 0, `${name} set to ` +
        `"${await input.inputValue()}"`);
}

// Stream a folder through the widget; the progress text at the end and
// the largest percentage the bar showed while it ran.
// batchFiles: files per request (the widget's default, 64, would send a
// small test folder in one request: no progress to see, nothing to cancel
// between requests).
async function streamFolder(page, form, folder, onRequest, batchFiles = 2) {
    const widget = form.locator('.form-binary-dicom').first();
    await widget.waitFor({state: 'visible'});
    await page.evaluate(n => {
        window.HealthOrthanc.streaming.batch_files = n;
    }, batchFiles);
    let seen = 0;
    if (onRequest) {
        await page.route('**/health_orthanc/upload?**', async route => {
            seen += 1;
            await onRequest(seen, widget);
            await route.continue();
        });
    }
    // Every value the bar takes, recorded by the page as it changes (a
    // poll from here can miss a short upload's intermediate values).
    await widget.evaluate(node => {
        node.percents = [];
        const record = () => {
            const bar = node.querySelector('.dicom-progress .progress-bar');
            const value = bar && bar.getAttribute('aria-valuenow');
            if (value) {
                node.percents.push(Number(value));
            }
        };
        node.percentWatch = new MutationObserver(record);
        node.percentWatch.observe(node, {subtree: true, childList: true,
            attributes: true, attributeFilter: ['aria-valuenow']});
    });
    const recorded = () => widget.evaluate(node => {
        node.percentWatch.disconnect();
        return node.percents;
    });
    await widget.locator('input.dicom-folder').setInputFiles(folder);
    // SAO gives the widget's grid cell the same class: the widget itself
    // is the element with data-stream.
    const ended = form.locator('.form-binary-dicom[data-stream]' +
        ':not([data-stream="running"])');
    const deadline = Date.now() + TIMEOUT * 4;
    while (!await ended.count()) {
        if (Date.now() > deadline) {
            throw new Failure('the widget did not finish streaming: ' +
                await widget.locator('.dicom-progress-text').innerText());
        }
        await page.waitForTimeout(200);
    }
    const percents = new Set(await recorded());
    if (onRequest) {
        await page.unroute('**/health_orthanc/upload?**');
    }
    const state = await ended.first().getAttribute('data-stream');
    const text = await widget.locator('.dicom-progress-text').innerText();
    console.log(`    widget: ${state}, "${text}", bar showed ` +
        JSON.stringify([...percents].sort((a, b) => a - b)));
    return {state, text, percents, requests: seen};
}

async function clickUpload(page, form) {
    const widget = form.locator('.form-binary-dicom').first();
    const button = form.locator('button').filter(
        {hasText: CONFIG.uploadButton});
    check(await button.count() == 1, 'one Upload button');
    await button.click();
    try {
        await widget.waitFor({state: 'detached', timeout: TIMEOUT * 4});
    } catch (error) {
        throw new Failure('the wizard did not leave the upload form ' +
            JSON.stringify(await dialogs(page)));
    }
    await page.waitForTimeout(500);
    const result = wizard(page);
    // The result page is drawn before its values arrive (slow on a busy
    // machine): wait for the summary.
    let text = await allText(result);
    const deadline = Date.now() + TIMEOUT * 2;
    while (!/file\(s\) sent/.test(text) && Date.now() < deadline) {
        await page.waitForTimeout(250);
        text = await allText(result);
    }
    console.log('    result:\n' + text.split('\n')
        .filter(line => line.trim()).map(line => `      | ${line}`)
        .join('\n'));
    return {result, text};
}

async function closeResult(page, result) {
    const close = result.locator('button').filter(
        {hasText: CONFIG.closeButtons});
    await close.first().click();
    await result.waitFor({state: 'hidden'}).catch(() => {});
}

async function patientCD(page) {
    log(`stream the patient CD ${CD_DIR} with patient "${PATIENT}"`);
    await openMenu(page, CONFIG.uploadMenu);
    const form = wizard(page);
    await form.locator('.form-binary-dicom').first().waitFor();
    await chooseServer(form);
    await chooseMany2One(form, 'patient', PATIENT);
    const streamed = await streamFolder(page, form, CD_DIR);
    check(streamed.state == 'done', 'the CD was streamed to the end');
    check([...streamed.percents].some(p => p > 0 && p < 100),
        'the progress bar moved through intermediate values');
    check(streamed.percents.has(100), 'the progress bar reached 100%');
    check(streamed.text.includes(`${CD_IMAGES} stored, 0 rejected, ` +
        `4 skipped`), `the widget counts ${CD_IMAGES} stored, 4 skipped`);
    await page.screenshot({path: shot('-cd-form')});
    const {result, text} = await clickUpload(page, form);
    check(new RegExp(`\\b${CD_IMAGES} DICOM instance\\(s\\) stored\\b`)
        .test(text), `the result counts ${CD_IMAGES} stored`);
    check(/4 file\(s\) skipped, not DICOM images/.test(text),
        'the result names 4 skipped files');
    for (const name of ['DICOMDIR', 'viewer.exe', 'AUTORUN.INF']) {
        check(text.includes(name), `the result names ${name}`);
    }
    await page.screenshot({path: shot('-cd')});
    await closeResult(page, result);
}

async function cancelled(page) {
    log(`stream ${CANCEL_DIR}, cancel during file #${CANCEL_AT}`);
    await openMenu(page, CONFIG.uploadMenu);
    const form = wizard(page);
    await form.locator('.form-binary-dicom').first().waitFor();
    await chooseServer(form);
    // The requests from the CANCEL_AT-th on wait for the click on Stop
    // (the other request in flight would go on sending meanwhile).
    let stopped = null;
    const streamed = await streamFolder(page, form, CANCEL_DIR,
        async (count, widget) => {
            if (count == CANCEL_AT) {
                stopped = widget.locator('.dicom-cancel').click();
            }
            if (count >= CANCEL_AT) {
                await stopped;
            }
        }, 1);
    check(streamed.state == 'cancelled', 'the upload was cancelled');
    // Stop ends the upload after the requests in flight (two at once, one
    // file each here): the one sent when Stop was clicked, maybe the next.
    const sent = streamed.requests;
    // browser_run.py checks that Orthanc holds exactly these files.
    if (env('CANCEL_SENT_FILE')) {
        fs.writeFileSync(env('CANCEL_SENT_FILE'), String(sent));
    }
    check(sent >= CANCEL_AT && sent <= CANCEL_AT + 1,
        `no file was sent after the files in flight at file #${CANCEL_AT}` +
        ` (${sent} sent)`);
    check(streamed.text.startsWith(`Cancelled: ${sent}/`) &&
        streamed.text.includes(`${sent} stored`),
    `the widget reports the ${sent} files stored when cancelled`);
    const {result, text} = await clickUpload(page, form);
    check(new RegExp(`\\b${sent} DICOM instance\\(s\\) stored\\b`)
        .test(text), `the result reports the ${sent} stored files`);
    await page.screenshot({path: shot('-cancel')});
    await closeResult(page, result);
}

async function studies(page) {
    log('open the studies list');
    await openMenu(page, CONFIG.studiesMenu);
    const tab = page.locator('#tabcontent > .tab-pane.active');
    const rows = tab.locator('.treeview tbody tr:not(.more-row)');
    await rows.first().waitFor({state: 'visible'});
    const count = await rows.count();
    check(count >= 1, `${count} studies listed`);
    log('open the newest study');
    // the last created record: sort on nothing, take the highest id
    const ids = await page.evaluate(() => {
        const tab = Sao.Tab.tabs.get_current();
        return tab.screen.group.map(record => record.id);
    });
    const newest = ids.indexOf(Math.max(...ids));
    const row = rows.nth(newest);
    if (CONFIG.studyText) {
        check((await row.innerText()).includes(CONFIG.studyText),
            `the newest study in the list shows "${CONFIG.studyText}"`);
    }
    await row.locator('td[data-title]').first().dblclick();
    const field = tab.locator(`.form [name="${CONFIG.viewerField}"]`).first();
    try {
        await field.waitFor({state: 'attached'});
    } catch (error) {
        const names = await tab.locator('.form [name]').evaluateAll(
            els => els.map(el => el.getAttribute('name')));
        throw new Failure(`no field "${CONFIG.viewerField}" in the study ` +
            `form (fields: ${names.join(', ')})`);
    }
    const linkOf = el => el.value || el.href ||
        (el.closest('.form-url') &&
            el.closest('.form-url').querySelector('a[href]') || {}).href;
    // the form is drawn before the record's values arrive
    await page.waitForFunction(linkOf, await field.elementHandle(),
        {timeout: 10000}).catch(() => {});
    const link = await field.evaluate(linkOf);
    console.log(`    ${CONFIG.viewerField} = ${link}`);
    check(/^https?:\/\/\S+/.test(link || ''),
        `the study has a viewer link (${CONFIG.viewerField})`);
    await page.screenshot({path: shot('-study')});
    console.log(`    screenshot ${shot('-study')}`);
}

async function main() {
    usage();
    const browser = await launch();
    const page = await browser.newPage({viewport: {width: 1280, height: 900}});
    page.setDefaultTimeout(TIMEOUT);
    const errors = [];
    page.on('pageerror', error => errors.push(String(error)));
    try {
        await login(page, {url: TRYTON_URL, db: DB, user: LOGIN,
            password: PASSWORD});
        if (STOP_AFTER == 'login') {
            await page.screenshot({path: SCREENSHOT});
        } else if (await upload(page) && STOP_AFTER != 'upload') {
            await studies(page);
            if (CD_DIR) {
                await patientCD(page);
            }
            if (CANCEL_DIR) {
                await cancelled(page);
            }
        }
        if (errors.length) {
            console.log(`    page errors: ${JSON.stringify(errors)}`);
        }
        console.log('upload.mjs: all steps passed');
    } catch (error) {
        await reportFailure(page, error, errors);
        await page.screenshot({path: shot('-failure')}).then(
            () => console.error(`screenshot ${shot('-failure')}`),
            () => {});
        process.exitCode = 1;
    } finally {
        await browser.close();
    }
}

await main();
