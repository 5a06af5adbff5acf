#!/usr/bin/env node
// `make demo-check`: the running demo, as its administrator sees it in
// SAO: Ana's chart shows a timeline of her studies with their previews,
// and her imaging result the image the demo attached (its data readable).
// Screenshots: build/test-artifacts/demo-*.png.  Any JavaScript error,
// console error or SAO dialog fails it.
//
// Environment: DEMO_URL, DEMO_DB, DEMO_LOGIN, DEMO_PASSWORD, DEMO_PATIENT
// (last name), ARTIFACTS (folder).
import path from 'node:path';

import {
    Failure, check, checkTimeline, dialogs, launch, log, login,
    reportFailure,
} from './lib.mjs';

const ENV = process.env;
const TIMEOUT = Number(ENV.TIMEOUT || 30000);
const tab = page => page.locator('#tabcontent > .tab-pane.active');

async function settle(page) {
    await page.waitForLoadState('networkidle');
    await page.waitForTimeout(300);
}

async function shot(page, name) {
    const file = path.join(ENV.ARTIFACTS, `demo-${name}.png`);
    await page.screenshot({path: file});
    console.log(`    screenshot ${file}`);
}

async function noDialogs(page, what) {
    const open = await dialogs(page);
    check(!open.length, `${what}: no dialog (${JSON.stringify(open)})`);
}

// The form of the first record of model matching domain, then its tab.
async function openForm(page, model, name, domain, tabName) {
    await page.evaluate(() => Sao.Tab.tabs.length && Sao.Tab.tabs.close_current());
    await settle(page);
    await page.evaluate(([model, name, domain]) => Sao.Tab.create({
        model, name, domain, mode: ['tree', 'form'],
    }), [model, name, domain]);
    const row = tab(page).locator('.treeview tbody tr').first();
    await row.waitFor({state: 'visible'});
    await row.locator('td[data-title]:not(.invisible)').first().dblclick();
    await settle(page);
    const form = tab(page);
    await form.locator('.nav-tabs a').filter({hasText: tabName}).first()
        .click();
    await settle(page);
    return form;
}

function one2many(page, form, label) {
    return form.locator('.form-one2many').filter({
        has: page.locator('.form-one2many-string', {hasText: label}),
    }).first();
}

async function main() {
    const browser = await launch();
    const page = await browser.newPage({viewport: {width: 1366, height: 900}});
    page.setDefaultTimeout(TIMEOUT);
    const errors = [];
    page.on('pageerror', error => errors.push(`page error: ${error}`));
    page.on('console', message => {
        if (message.type() == 'error' &&
            !/\/locale\/|\/bus$/.test(message.location().url || '')) {
            errors.push(`console error: ${message.text()}`);
        }
    });
    try {
        await login(page, {url: ENV.DEMO_URL, db: ENV.DEMO_DB,
            user: ENV.DEMO_LOGIN, password: ENV.DEMO_PASSWORD});
        const patient = ENV.DEMO_PATIENT;
        log(`${patient}'s chart, Imaging tab`);
        let form = await openForm(page, 'gnuhealth.patient', 'Patients',
            [['rec_name', 'ilike', `%${patient}%`]], /^Imaging$/);
        const studies = one2many(page, form, /^\s*Orthanc studies\s*$/);
        await studies.locator('.treeview tbody tr').first().waitFor();
        await checkTimeline(page, TIMEOUT, studies, 'Imaging tab');
        const previews = await studies.locator('tbody tr img.column-image')
            .evaluateAll(imgs => imgs.filter(
                img => img.complete && img.naturalWidth > 0).length);
        const count = await studies.locator('tbody tr').count();
        check(previews == count, `${previews} of ${count} studies ` +
            'show their preview');
        await noDialogs(page, 'Imaging tab');
        await shot(page, 'ana-imaging');

        log(`${patient}'s imaging result, Images tab`);
        form = await openForm(page, 'gnuhealth.imaging.test.result',
            'Results', [['patient.rec_name', 'ilike', `%${patient}%`]],
            /^Images$/);
        const images = one2many(page, form, /^\s*Images\s*$/);
        await images.locator('.treeview tbody tr').first().waitFor();
        const sizes = await page.evaluate(async patient => {
            const Result = new Sao.Model('gnuhealth.imaging.test.result');
            const ids = await Result.execute('search', [[['patient.rec_name',
                'ilike', `%${patient}%`]], 0, 1, null], {});
            const Attachment = new Sao.Model('ir.attachment');
            const attachments = await Attachment.execute('search_read', [
                [['resource', '=', `gnuhealth.imaging.test.result,${ids[0]}`]],
                0, null, null, ['name', 'data']], {});
            return attachments.map(a => [a.name, a.data ?
                (a.data.length || a.data.byteLength || 0) : 0]);
        }, patient);
        check(sizes.length && sizes.every(([, size]) => size > 0),
            `the attached image is readable: ${JSON.stringify(sizes)}`);
        await noDialogs(page, 'imaging result');
        await shot(page, 'ana-result');
        await form.locator('.nav-tabs a').filter(
            {hasText: /^Orthanc studies$/}).first().click();
        await settle(page);
        await checkTimeline(page, TIMEOUT,
            one2many(page, form, /^\s*Orthanc studies\s*$/),
            'imaging result');
        await shot(page, 'ana-result-studies');
        if (errors.length) {
            throw new Failure(errors.join('; '));
        }
        console.log('demo.mjs: passed');
    } catch (error) {
        await reportFailure(page, error, errors);
        await shot(page, 'failure').catch(() => {});
        process.exitCode = 1;
    } finally {
        await browser.close();
    }
}

await main();
