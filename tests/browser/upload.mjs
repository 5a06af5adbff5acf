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
//
// Exit code 0 when every step passed, 1 with a message otherwise.
import path from 'node:path';
import fs from 'node:fs';

import {
    Failure, dialogs, launch, loginSao, openMenuEntry, reportFailure, reporter,
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
        /\b0 already stored\b/, /\b1 rejected\b/,
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

const shot = suffix => SCREENSHOT.replace(/(\.png)?$/i, `${suffix}.png`);
const {log, check, stepNumber} = reporter();

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

async function login(page) {
    const logged = await loginSao(page, {url: TRYTON_URL, db: DB,
        login: LOGIN, password: PASSWORD}, {log, check});
    check(await page.evaluate(
        () => typeof Sao.View.Form.BinaryDicom == 'function'),
    'SAO loaded custom.js (binary_dicom widget registered)');
    return logged;
}

async function openMenu(page, menuPath) {
    return openMenuEntry(page, menuPath, {log, check});
}

// The open wizard: a modal dialog, or the active tab (window=True).
function wizard(page) {
    return page.locator(
        '.wizard-dialog.in, #tabcontent > .tab-pane.active .wizard-form')
        .last();
}

// All text of a container, including the values of its inputs.
async function allText(locator) {
    return locator.evaluate(el => {
        const values = Array.from(el.querySelectorAll(
            'input:not([type=file]):not([type=hidden]), textarea, select'))
            .map(input => input.tagName == 'SELECT' ?
                (input.selectedOptions[0] || {}).text || '' : input.value)
            .filter(Boolean);
        return [el.innerText, ...values].join('\n');
    });
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
    await widget.locator('input[type=file]').setInputFiles(files);
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
    const button = form.locator('button').filter({hasText: CONFIG.uploadButton});
    check(await button.count() == 1, 'one Upload button');
    await button.click();
    // the result state: the binary widget is gone
    try {
        await widget.waitFor({state: 'detached', timeout: TIMEOUT * 4});
    } catch (error) {
        throw new Failure('the wizard did not leave the upload form ' +
            JSON.stringify(await dialogs(page)));
    }
    await page.waitForTimeout(500);
    const result = wizard(page);
    const resultText = await allText(result);
    console.log('    result:\n' + resultText.split('\n')
        .filter(line => line.trim()).map(line => `      | ${line}`).join('\n'));
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
    const link = await field.evaluate(el => el.value || el.href ||
        (el.closest('.form-url') &&
            el.closest('.form-url').querySelector('a[href]') || {}).href);
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
        await login(page);
        if (STOP_AFTER == 'login') {
            await page.screenshot({path: SCREENSHOT});
        } else if (await upload(page) && STOP_AFTER != 'upload') {
            await studies(page);
        }
        if (errors.length) {
            console.log(`    page errors: ${JSON.stringify(errors)}`);
        }
        console.log('upload.mjs: all steps passed');
    } catch (error) {
        await reportFailure(error, {step: stepNumber(), page, errors,
            failurePath: shot('-failure')});
    } finally {
        await browser.close();
    }
}

await main();
