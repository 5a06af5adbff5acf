#!/usr/bin/env node
// Browser test of "Open in viewer" without the PACS password: a doctor
// logged into SAO opens a study, clicks the Orthanc Web Viewer button, and
// the viewer (a new tab on Orthanc, which runs the viewer-access script)
// shows the study's series without asking for any password.
//
// Environment:
//   TRYTON_URL, TRYTON_DB, TRYTON_LOGIN, TRYTON_PASSWORD  as for upload.mjs
//   STUDY_ID         id of the study to open (gnuhealth.imaging_orthanc.study)
//   ORTHANC_URL      Orthanc's URL (the viewer must open there)
//   SCREENSHOT       PNG of the viewer; also <name>-study.png (the study
//                    form) and <name>-failure.png (state at a failure)
// Optional: STUDY_TEXT, CHROMIUM, TIMEOUT (ms per step)
//
// Exit code 0 when every step passed, 1 with a message otherwise.
import path from 'node:path';

import {Failure, check, launch, log, login, reportFailure} from './lib.mjs';

const env = name => process.env[name] || '';
const CONFIG = {
    studyText: env('STUDY_TEXT'),
    button: /Open in Orthanc Web Viewer/i,
};
const STUDY_ID = env('STUDY_ID');
const ORTHANC_URL = env('ORTHANC_URL').replace(/\/$/, '');
const SCREENSHOT = path.resolve(env('SCREENSHOT') || 'viewer.png');
const TIMEOUT = Number(env('TIMEOUT') || 30000);
const shot = suffix => SCREENSHOT.replace(/(\.png)?$/i, `${suffix}.png`);

// GNU Health shows "Medical Imaging" to its imaging administrators only:
// a doctor reaches a study from a link (or the patient), here its URL.
async function openStudy(page) {
    log(`open study ${STUDY_ID} by its URL`);
    await page.evaluate(([db, id]) => {
        window.location.hash =
            `${db}/model/gnuhealth.imaging_orthanc.study/${id}`;
    }, [env('TRYTON_DB'), STUDY_ID]);
    const tab = page.locator('#tabcontent > .tab-pane.active');
    if (CONFIG.studyText) {
        await tab.locator('.form input').filter({hasText: ''}).first()
            .waitFor({state: 'attached'});
        await page.waitForFunction(text => Array.from(document.querySelectorAll(
            '#tabcontent > .tab-pane.active .form input')).some(
            input => input.value == text), CONFIG.studyText);
        check(true, `the study form shows "${CONFIG.studyText}"`);
    }
    const button = tab.locator('.form button').filter(
        {hasText: CONFIG.button});
    try {
        await button.waitFor({state: 'visible'});
    } catch (error) {
        const buttons = await tab.locator('.form button').allInnerTexts();
        throw new Failure('no visible "Open in Orthanc Web Viewer" button ' +
            `on the study form (buttons: ${JSON.stringify(buttons)})`);
    }
    await page.screenshot({path: shot('-study')});
    return button;
}

// Wait until the Web Viewer drew an image that is not uniform.
async function waitForImage(viewer) {
    await viewer.waitForFunction(() => Array.from(
        document.querySelectorAll('canvas')).some(canvas => {
        if (canvas.width < 16 || canvas.height < 16) {
            return false;
        }
        const context = canvas.getContext('2d');
        if (!context) {
            return false;
        }
        const data = context.getImageData(0, 0, canvas.width,
            canvas.height).data;
        const seen = new Set();
        for (let i = 0; i < data.length && seen.size < 8; i += 4 * 7) {
            seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
        }
        return seen.size >= 8;
    }), null, {timeout: TIMEOUT});
}

async function main() {
    const browser = await launch();
    const context = await browser.newContext(
        {viewport: {width: 1280, height: 900}});
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    const errors = [];
    page.on('pageerror', error => errors.push(String(error)));
    // Every answer Orthanc gives the viewer, to prove no password was asked.
    const answers = [];
    context.on('response', response => {
        if (response.url().startsWith(ORTHANC_URL)) {
            answers.push([response.status(), response.url()]);
        }
    });
    let viewer = null;
    try {
        await login(page, {url: env('TRYTON_URL'), db: env('TRYTON_DB'),
            user: env('TRYTON_LOGIN'), password: env('TRYTON_PASSWORD')});
        const button = await openStudy(page);
        log('click "Open in Orthanc Web Viewer"');
        const opened = context.waitForEvent('page');
        await button.click();
        viewer = await opened;
        viewer.setDefaultTimeout(TIMEOUT);
        await viewer.waitForURL(/\/web-viewer\/app\/viewer\.html\?series=/);
        check(viewer.url().startsWith(ORTHANC_URL),
            `the viewer opened on Orthanc: ${viewer.url()}`);
        log('wait for the series to be drawn');
        await waitForImage(viewer);
        await viewer.waitForTimeout(1000);  // let the thumbnails settle
        await viewer.screenshot({path: SCREENSHOT});
        console.log(`    screenshot ${SCREENSHOT}`);
        const refused = answers.filter(([status]) => status == 401 ||
            status == 403);
        check(!refused.length, 'Orthanc refused none of the viewer\'s ' +
            `requests (${answers.length} answers) ` + JSON.stringify(refused));
        check(answers.some(([status, url]) => status == 200 &&
            url.includes('/web-viewer/instances/')),
        'the viewer loaded images through the Web Viewer plugin');
        check(!answers.some(([status]) => status == 401),
            'no password was asked (no 401 answer)');
        if (errors.length) {
            console.log(`    page errors: ${JSON.stringify(errors)}`);
        }
        console.log('viewer.mjs: all steps passed');
    } catch (error) {
        await reportFailure(page, error, errors);
        console.error(`Orthanc answers: ${JSON.stringify(answers)}`);
        await (viewer || page).screenshot({path: shot('-failure')}).then(
            () => console.error(`screenshot ${shot('-failure')}`), () => {});
        process.exitCode = 1;
    } finally {
        await browser.close();
    }
}

await main();
