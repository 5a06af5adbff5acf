#!/usr/bin/env node
// Walk every screen of health_orthanc in SAO 7.0 as each role: imaging
// administrator, radiographer, doctor.  Each menu entry, list, form, wizard
// and button of the module is opened (and the buttons used) by the roles
// that may, and must be absent for the others.  Any JavaScript error,
// console error or SAO error/warning dialog fails the walk; a screenshot of
// each screen is saved.  Server tracebacks are checked by the caller
// (tests/browser_run.py reads the trytond log).
//
// Environment: WALK_CONFIG, a JSON file written by tests/browser_run.py:
//   {url, db, artifacts, users: {admin|radiographer|doctor: {login,
//    password}}, data: {patient, linked_study, unknown_study,
//    delete_study, server}}
// Optional: ROLES (comma-separated, default all three), TIMEOUT (ms).
import fs from 'node:fs';
import path from 'node:path';

import {
    Failure, allText, check, checkTimeline, launch, log, login, menuOffered,
    openMenu, reportFailure, wizard,
} from './lib.mjs';

const CONFIG = JSON.parse(fs.readFileSync(process.env.WALK_CONFIG, 'utf8'));
const TIMEOUT = Number(process.env.TIMEOUT || 30000);
const ROLES = (process.env.ROLES || 'admin,radiographer,doctor').split(',');

const TOP = 'Orthanc Imaging';
const MENUS = {
    studies: `${TOP} / Orthanc Studies`,
    update: `${TOP} / Update Image Studies`,
    upload: `${TOP} / Upload Image Data`,
    servers: `${TOP} / Configuration / Orthanc Servers`,
    addServer: `${TOP} / Configuration / Add Orthanc Server`,
    fullSync: `${TOP} / Configuration / Full Synchronize Studies`,
};
// The menu entries of each role (the role table of the README).
const ROLE_MENUS = {
    admin: Object.keys(MENUS),
    radiographer: ['studies', 'update', 'upload'],
    doctor: ['studies'],
};
// Buttons of the study form each role sees.
const STUDY_BUTTONS = {
    admin: ['link_patient', 'delete_study'],
    radiographer: ['link_patient'],
    doctor: [],
};
const ALL_STUDY_BUTTONS = ['link_patient', 'delete_study'];

// Not errors of the module: SAO asks for translations of its English
// texts (none exist: 405), and for the bus, which trytond serves only on
// PostgreSQL (501 on SQLite).
const IGNORED_URLS = /\/locale\/en(_US)?\.json$|\/bus$/;

// ---- page helpers --------------------------------------------------------

const tab = page => page.locator('#tabcontent > .tab-pane.active');

// Wait until SAO has no request in flight (twice, for chained requests).
async function settle(page) {
    for (let i = 0; i < 2; i++) {
        // an error dialog may hold its request: stop waiting then
        await page.waitForFunction(() => !window.__walk.pending ||
            window.__walk.problems.length);
        await page.waitForTimeout(250);
    }
}

let role = '';
async function shot(page, name) {
    await settle(page);
    const file = path.join(CONFIG.artifacts, `walk-${role}-${name}.png`);
    await page.screenshot({path: file});
    console.log(`    screenshot ${path.basename(file)}`);
}

// Count in-flight requests; record SAO's error and warning dialogs.
async function watch(page) {
    await page.evaluate(() => {
        window.__walk = {pending: 0, problems: []};
        const rpc = Sao.rpc;
        Sao.rpc = function(...args) {
            window.__walk.pending++;
            const done = () => window.__walk.pending--;
            const result = rpc.apply(this, args);
            if (result && (typeof result.then == 'function')) {
                result.then(done, done);
            } else {  // synchronous call
                done();
            }
            return result;
        };
        Object.assign(Sao.rpc, rpc);
        for (const kind of ['error', 'warning', 'userwarning']) {
            const dialog = Sao.common[kind];
            const run = dialog.run;
            dialog.run = function(...args) {
                window.__walk.problems.push(
                    `${kind}: ${args.filter(a => typeof a == 'string')
                        .join(' | ')}`);
                return run.apply(this, args);
            };
        }
    });
}

// Fail on a SAO error/warning dialog, or "#ERROR" in a list.
async function noProblems(page, what) {
    await settle(page);
    const problems = await page.evaluate(() => window.__walk.problems);
    if (problems.length) {
        throw new Failure(`${what}: ${problems.join('; ')}`);
    }
    const errorRows = await page.locator('td:has-text("#ERROR")').count();
    check(!errorRows, `${what}: no problem dialog, no #ERROR cell`);
}

async function closeTab(page) {
    await page.evaluate(() => Sao.Tab.tabs.close_current());
    await settle(page);
}

// The rows of the list in the active tab.
function rows(page) {
    return tab(page).locator('.treeview tbody tr:not(.more-row)')
        .filter({hasText: /\S/});
}

// The rows of a one2many (or many2many) field of a form, by its label.
function subRows(container, label) {
    return container.locator('.form-one2many, .form-many2many').filter({
        has: container.page().locator(
            '.form-one2many-string, .form-many2many-string',
            {hasText: new RegExp(`^\\s*${label}\\s*$`)}),
    }).first().locator('.treeview tbody tr:not(.more-row)')
        .filter({hasText: /\S/});
}

async function openRow(page, text) {
    const row = rows(page).filter({hasText: text}).first();
    await row.waitFor({state: 'visible'});
    await row.locator('td[data-title]:not(.invisible)').first().dblclick();
    await tab(page).locator('.form').first().waitFor({state: 'visible'});
    await settle(page);
}

async function backToList(page) {
    await page.evaluate(() => Sao.Tab.tabs.get_current().screen
        .switch_view('tree'));
    await settle(page);
}

// Buttons (by name) visible in a container.
async function visibleButtons(container, names) {
    const shown = [];
    for (const name of names) {
        const button = container.locator(`button[name="${name}"]`);
        if (await button.count() && await button.first().isVisible()) {
            shown.push(name);
        }
    }
    return shown;
}

async function checkButtons(container, names, expected, what) {
    const shown = await visibleButtons(container, names);
    check(JSON.stringify(shown) == JSON.stringify(expected),
        `${what}: buttons ${JSON.stringify(shown)} ` +
        `(expected ${JSON.stringify(expected)})`);
}

// Click a form button, accept its confirmation if it asks one.
async function clickButton(page, container, name) {
    log(`click button ${name}`);
    await container.locator(`button[name="${name}"]`).first().click();
    const confirm = page.locator('.modal.in.confirmation-dialog');
    try {
        await confirm.waitFor({state: 'visible', timeout: 1500});
        await confirm.locator('.btn-primary').click();
    } catch (error) {
        // no confirmation asked
    }
    await settle(page);
}

// Click a wizard button by its label.
async function wizardButton(page, label) {
    await wizard(page).locator('button').filter(
        {hasText: new RegExp(`^\\s*${label}\\s*$`, 'i')}).first().click();
    await settle(page);
}

// A value shown by a form field (input value or widget text).
async function fieldText(container, name) {
    const field = container.locator(`[name="${name}"]`).first();
    return field.evaluate(el => el.value || el.innerText || '');
}

// ---- what each role does -------------------------------------------------

async function checkMenus(page) {
    log(`menus of ${role}`);
    for (const [key, menu] of Object.entries(MENUS)) {
        const expected = ROLE_MENUS[role].includes(key);
        check(await menuOffered(page, menu) == expected,
            `global search ${expected ? 'offers' : 'does not offer'} ` +
            `"${menu}"`);
    }
}

async function studiesList(page) {
    await openMenu(page, MENUS.studies);
    await rows(page).first().waitFor({state: 'visible'});
    await noProblems(page, 'studies list');
    await checkTimeline(page, TIMEOUT, tab(page), 'studies list');
    await shot(page, 'studies');
    // the second domain tab: studies not linked to a patient
    const unlinked = tab(page).locator('.nav-tabs a').filter(
        {hasText: 'Not linked to a patient'});
    if (await unlinked.count()) {
        await unlinked.first().click();
        await settle(page);
        await noProblems(page, 'studies not linked');
        await shot(page, 'studies-unlinked');
        await tab(page).locator('.nav-tabs a').filter({hasText: /^All/})
            .first().click();
        await settle(page);
    }
}

async function studyForm(page, text, name) {
    log(`open study "${text}"`);
    await openRow(page, text);
    const form = tab(page);
    await noProblems(page, `study form ${text}`);
    await checkButtons(form, ALL_STUDY_BUTTONS, STUDY_BUTTONS[role],
        'study form');
    const explorer = await fieldText(form, 'explorer_link');
    check(/^https?:\/\//.test(explorer), `Explorer link ${explorer}`);
    for (const viewer of ['ohif_viewer_link', 'stone_viewer_link']) {
        const field = form.locator(`[name="${viewer}"]`);
        check(!await field.count() || !await field.first().isVisible(),
            `${viewer} hidden (no such plugin on the server)`);
    }
    const request = await fieldText(form, 'imaging_request');
    check(!request.includes('//'), `request shown as "${request}"`);
    await shot(page, name);
    return form;
}

// The series list of the study form, then a series and an instance.
async function seriesAndInstance(page, form, attach) {
    log('open a series of the study');
    await form.locator('.nav-tabs a').filter({hasText: /^Series$/})
        .first().click();
    const seriesRows = subRows(form, 'Series');
    await seriesRows.first().waitFor({state: 'visible'});
    await seriesRows.first().locator('td[data-title]:not(.invisible)').first().dblclick();
    const dialog = page.locator('.modal.in .form').last();
    await dialog.waitFor({state: 'visible'});
    await noProblems(page, 'series form');
    await checkButtons(dialog, ['delete_series'],
        role == 'admin' ? ['delete_series'] : [], 'series form');
    await shot(page, 'series');
    log('open an instance of the series');
    const instanceRows = subRows(dialog, 'Instances');
    await instanceRows.first().waitFor({state: 'visible'});
    await instanceRows.first().locator('td[data-title]:not(.invisible)').first().dblclick();
    const instance = page.locator('.modal.in .form').last();
    await instance.locator('.form-image img').first().waitFor();
    await noProblems(page, 'instance form (with its preview)');
    await checkButtons(instance, ['attach_image_to_imaging_test_report'],
        ['attach_image_to_imaging_test_report'], 'instance form');
    await shot(page, 'instance');
    if (attach) {
        await clickButton(page, instance,
            'attach_image_to_imaging_test_report');
        await noProblems(page, 'attach the image to the result');
    }
    await closeDialog(page);
    await closeDialog(page);
}

// Close the topmost form dialog with its Close button.
async function closeDialog(page) {
    const dialogs = page.locator('.modal.in');
    const count = await dialogs.count();
    // "Close" when the record is read-only, "Apply changes" otherwise
    await dialogs.last().locator('.modal-footer button').filter(
        {hasText: /^\s*(Close|OK|Apply changes)\s*$/i}).first().click();
    await page.waitForFunction(
        n => document.querySelectorAll('.modal.in').length < n, count);
    await settle(page);
}

// Run a wizard of the menu: open, screenshot, run its main button, close.
async function runWizard(page, menu, name, {run = null} = {}) {
    await openMenu(page, menu);
    await wizard(page).waitFor({state: 'visible'});
    await noProblems(page, `wizard ${name}`);
    await shot(page, name);
    if (!run) {
        await wizardButton(page, 'Cancel');
        return;
    }
    await wizardButton(page, run);
    await noProblems(page, `wizard ${name}: ${run}`);
    await shot(page, `${name}-result`);
    const close = wizard(page).locator('button').filter(
        {hasText: /^\s*(Close|OK)\s*$/i});
    if (await close.count()) {
        await close.first().click();
        await settle(page);
    }
}

async function imagingResult(page) {
    log(`open ${CONFIG.data.patient}'s imaging result, Orthanc studies`);
    await page.evaluate(name => Sao.Tab.create({
        model: 'gnuhealth.imaging.test.result', mode: ['tree', 'form'],
        name: 'Results', domain: [['patient.rec_name', 'ilike', `%${name}%`]],
    }), CONFIG.data.patient);
    await rows(page).first().waitFor({state: 'visible'});
    await rows(page).first().locator('td[data-title]:not(.invisible)')
        .first().dblclick();
    await settle(page);
    const form = tab(page);
    await form.locator('.nav-tabs a').filter({hasText: /^Orthanc studies$/})
        .first().click();
    await settle(page);
    const list = form.locator('.form-one2many').filter({
        has: page.locator('.form-one2many-string',
            {hasText: /^\s*Orthanc studies\s*$/}),
    }).first();
    await list.locator('.treeview tbody tr').first().waitFor();
    await noProblems(page, 'imaging result');
    await checkTimeline(page, TIMEOUT, list, 'imaging result');
    await shot(page, 'result-imaging');
    await closeTab(page);
}

async function patientImagingTab(page) {
    log(`open ${CONFIG.data.patient}'s chart, Imaging tab`);
    await page.evaluate(name => Sao.Tab.create({
        model: 'gnuhealth.patient', mode: ['tree', 'form'],
        name: 'Patients', domain: [['rec_name', 'ilike', `%${name}%`]],
    }), CONFIG.data.patient);
    await rows(page).first().waitFor({state: 'visible'});
    await openRow(page, CONFIG.data.patient);
    const form = tab(page);
    await form.locator('.nav-tabs a').filter({hasText: /^Imaging$/})
        .first().click();
    await settle(page);
    const list = form.locator('.form-one2many').filter({
        has: page.locator('.form-one2many-string',
            {hasText: /^\s*Orthanc studies\s*$/}),
    }).first();
    await list.locator('.treeview tbody tr').first().waitFor();
    await noProblems(page, 'Imaging tab');
    await checkTimeline(page, TIMEOUT, list, 'Imaging tab');
    const headers = (await list.locator('thead th:visible').allInnerTexts())
        .map(t => t.trim()).filter(Boolean);
    console.log(`    columns: ${JSON.stringify(headers)}`);
    check(!headers.some(h => /OHIF|Stone/.test(h)),
        'no OHIF or Stone column (plugins absent)');
    const explorer = list.locator('thead th:visible').filter(
        {hasText: 'Orthanc Explorer'});
    check(await explorer.count() == 1, 'an Orthanc Explorer column');
    const box = await explorer.first().boundingBox();
    const viewport = page.viewportSize();
    check(box && box.x + box.width <= viewport.width,
        'the Orthanc Explorer column is visible without scrolling');
    await shot(page, 'patient-imaging');
    await closeTab(page);
}

async function admin(page) {
    await runWizard(page, MENUS.addServer, 'add-server');
    await openMenu(page, MENUS.servers);
    await rows(page).first().waitFor({state: 'visible'});
    await noProblems(page, 'servers list');
    await shot(page, 'servers');
    await openRow(page, CONFIG.data.server);
    const serverForm = tab(page);
    await checkButtons(serverForm, ['check_connection', 'sync_changes',
        'full_sync'], ['check_connection', 'sync_changes', 'full_sync'],
    'server form');
    await shot(page, 'server');
    for (const button of ['check_connection', 'sync_changes', 'full_sync']) {
        await clickButton(page, serverForm, button);
        await noProblems(page, `server button ${button}`);
    }
    check(/OK|Orthanc/.test(await fieldText(serverForm, 'check_message')),
        'the connection check reports success');
    await shot(page, 'server-checked');
    await closeTab(page);
    await runWizard(page, MENUS.fullSync, 'full-sync', {run: 'Synchronize'});
    await runWizard(page, MENUS.update, 'update', {run: 'Synchronize'});
    await runWizard(page, MENUS.upload, 'upload');

    await studiesList(page);
    const form = await studyForm(page, CONFIG.data.linked_study, 'study');
    await seriesAndInstance(page, form, true);
    // Delete one series of the study (it has two): the form stays, with
    // the remaining series.
    const seriesCount = Number(await fieldText(form, 'series_count'));
    await form.locator('.nav-tabs a').filter({hasText: /^Series$/})
        .first().click();
    const seriesRows = subRows(form, 'Series');
    await seriesRows.first().locator('td[data-title]:not(.invisible)').first().dblclick();
    const dialog = page.locator('.modal.in .form').last();
    await dialog.waitFor({state: 'visible'});
    await clickButton(page, dialog, 'delete_series');
    await noProblems(page, 'delete series');
    if (await page.locator('.modal.in .form').count()) {
        await closeDialog(page);
    }
    const remaining = Number(await fieldText(form, 'series_count'));
    check(remaining == seriesCount - 1,
        `series count ${seriesCount} -> ${remaining}`);
    check(await seriesRows.count() == remaining,
        `${remaining} series listed`);
    await noProblems(page, 'study after deleting a series');
    await shot(page, 'study-series-deleted');
    // Delete a whole study from its form: back to the remaining studies.
    await backToList(page);
    const before = await rows(page).count();
    await studyForm(page, CONFIG.data.delete_study, 'study-to-delete');
    await clickButton(page, tab(page), 'delete_study');
    await noProblems(page, 'delete study');
    await page.evaluate(() => {
        const screen = Sao.Tab.tabs.get_current().screen;
        if (screen.current_view.view_type != 'tree') {
            return screen.switch_view('tree');
        }
    });
    await settle(page);
    const texts = await rows(page).allInnerTexts();
    check(!texts.some(t => t.includes(CONFIG.data.delete_study)),
        'the deleted study is no longer listed');
    check(texts.length == before - 1,
        `${texts.length} studies listed (${before} before)`);
    await noProblems(page, 'studies after deleting one');
    await shot(page, 'study-deleted');
    await closeTab(page);
    await patientImagingTab(page);
    await imagingResult(page);
}

async function radiographer(page) {
    await runWizard(page, MENUS.update, 'update', {run: 'Synchronize'});
    await runWizard(page, MENUS.upload, 'upload');
    await studiesList(page);
    const form = await studyForm(page, CONFIG.data.unknown_study, 'study');
    await seriesAndInstance(page, form, false);
    // Link the study to a patient whose sex and birth date disagree.
    await clickButton(page, form, 'link_patient');
    await wizard(page).waitFor({state: 'visible'});
    const patient = wizard(page).locator('[name="patient"]').first();
    await page.locator('.wizard-dialog.in [name="only_candidates"]')
        .first().uncheck().catch(() => {});
    await patient.fill(CONFIG.data.patient);
    await patient.press('Tab');
    await settle(page);
    // SAO asks to choose in a search dialog unless the text is exact
    const search = page.locator('.modal.in').filter({hasText: /^Search/});
    if (await search.count()) {
        await search.locator('.treeview tbody tr').filter(
            {hasText: CONFIG.data.patient}).first()
            .locator('td[data-title]:not(.invisible)').first().click();
        await search.locator('.modal-footer button').filter(
            {hasText: /^\s*OK\s*$/i}).click();
        await settle(page);
    }
    await shot(page, 'link');
    await wizardButton(page, 'Link');
    await noProblems(page, 'link: check');
    const text = await allText(wizard(page));
    check(/in the images/.test(text) && /in the chart/.test(text),
        'the wizard shows what disagrees and asks to confirm');
    await shot(page, 'link-confirm');
    await wizardButton(page, 'Link anyway');
    await noProblems(page, 'link anyway');
    check((await fieldText(form, 'patient')).includes(CONFIG.data.patient),
        'the study is linked to the patient');
    await shot(page, 'linked');
    await checkButtons(form, ['unlink_patient'], ['unlink_patient'],
        'linked study');
    await clickButton(page, form, 'unlink_patient');
    await noProblems(page, 'unlink');
    check(!(await fieldText(form, 'patient')), 'the study is unlinked');
    await closeTab(page);
}

async function doctor(page) {
    await studiesList(page);
    const form = await studyForm(page, CONFIG.data.linked_study, 'study');
    await seriesAndInstance(page, form, true);
    await closeTab(page);
    await patientImagingTab(page);
    await imagingResult(page);
}

const WALKS = {admin, radiographer, doctor};

async function walk(browser, name) {
    role = name;
    const user = CONFIG.users[name];
    const page = await browser.newPage({viewport: {width: 1366, height: 900}});
    page.setDefaultTimeout(TIMEOUT);
    const errors = [];
    page.on('pageerror', error => errors.push(`page error: ${error}`));
    page.on('console', message => {
        if ((message.type() == 'error') &&
            !IGNORED_URLS.test(message.location().url || '')) {
            errors.push(`console error: ${message.text()} ` +
                `(${message.location().url})`);
        }
    });
    try {
        console.log(`==== ${name} (${user.login})`);
        await login(page, {url: CONFIG.url, db: CONFIG.db, user: user.login,
            password: user.password});
        await watch(page);
        await shot(page, 'home');
        await checkMenus(page);
        await WALKS[name](page);
        await noProblems(page, `end of the ${name} walk`);
        if (errors.length) {
            throw new Failure(errors.join('; '));
        }
        console.log(`walk.mjs: ${name}: all steps passed`);
        return true;
    } catch (error) {
        await reportFailure(page, error, errors, ` (${name})`);
        await shot(page, 'failure').catch(() => {});
        return false;
    } finally {
        await page.close();
    }
}

async function main() {
    const browser = await launch();
    let failed = 0;
    try {
        for (const name of ROLES) {
            if (!await walk(browser, name)) {
                failed++;
            }
        }
    } finally {
        await browser.close();
    }
    console.log(`walk.mjs: ${ROLES.length - failed} role(s) passed, ` +
        `${failed} failed`);
    process.exitCode = failed ? 1 : 0;
}

await main();
