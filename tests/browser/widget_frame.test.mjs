// Tests of custom.js: the binary_dicom framing (in node) and the real widget
// in SAO 7.0 running in chromium (offline: files are served from $SAO_DIR by
// request interception, no trytond needed).
//   node --test tests/browser/
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import vm from 'node:vm';

import {CHROMIUM, REPO, SAO_DIR, launch} from './lib.mjs';

const CUSTOM_JS = path.join(REPO, 'custom.js');
const FILE_A = Uint8Array.from([0x44, 0x49, 0x43, 0x4d, 0x00, 0xff]);  // 6 B
const FILE_B = new Uint8Array(300).map((_, i) => (i * 7) & 0xff);  // 300 B
// b'MULT' + le64(6) + A + le64(300) + B, written out byte by byte
const EXPECTED = Uint8Array.from([
    0x4d, 0x55, 0x4c, 0x54,
    0x06, 0, 0, 0, 0, 0, 0, 0, ...FILE_A,
    0x2c, 0x01, 0, 0, 0, 0, 0, 0, ...FILE_B,
]);

function loadHelpers() {
    // Without Sao, custom.js only defines its helpers (and must not fail).
    const context = {};
    vm.runInNewContext(fs.readFileSync(CUSTOM_JS, 'utf8'), context,
        {filename: CUSTOM_JS});
    return context.HealthOrthanc;
}

test('frame: MULT + 8-byte little-endian length + bytes, per file', () => {
    const {frame} = loadHelpers();
    const data = frame([FILE_A, FILE_B]);
    assert.equal(data.length, 4 + 8 + 6 + 8 + 300);
    assert.deepEqual(Array.from(data), Array.from(EXPECTED));
    // what the server side does: struct.unpack('<Q', ...)
    const view = new DataView(data.buffer);
    assert.equal(view.getBigUint64(4, true), 6n);
    assert.equal(view.getBigUint64(4 + 8 + 6, true), 300n);
    assert.deepEqual(Array.from(frame([])), [0x4d, 0x55, 0x4c, 0x54]);
});

test('unframe and summary', () => {
    const {unframe, summary} = loadHelpers();
    const parts = unframe(EXPECTED);
    assert.equal(parts.length, 2);
    assert.deepEqual(Array.from(parts[0]), Array.from(FILE_A));
    assert.deepEqual(Array.from(parts[1]), Array.from(FILE_B));
    assert.equal(unframe(Uint8Array.from([1, 2, 3, 4])), null);
    assert.equal(unframe(EXPECTED.subarray(0, EXPECTED.length - 1)), null);
    assert.equal(unframe(null), null);
    assert.equal(summary(2, 2500000), '2 files, 2.50 MB');
    assert.equal(summary(1, 306), '1 file, 0.00 MB');
});

test('batches: every file once, in order; the last ones get smaller', () => {
    const helpers = loadHelpers();
    // Arrays of custom.js's own context, as arrays of this one.
    const batches = (...args) => JSON.parse(
        JSON.stringify(helpers.batches(...args)));
    const streaming = {...helpers.streaming};
    const limits = {in_flight: 2, batch_files: 64, batch_bytes: 1e12};
    const cut = batches(new Array(200).fill(10), limits);
    // At most half of the files and bytes left, so that the two requests
    // in flight end together.
    assert.deepEqual(cut.map(b => b.length),
        [64, 64, 36, 18, 9, 4, 2, 1, 1, 1]);
    assert.deepEqual(cut.flat(), [...Array(200).keys()]);
    // Bytes: never over the limit (nor half of what is left), but a file
    // larger than that goes alone.
    const sizes = [5, 5, 5, 5, 100, 5, 5, 5];
    const bytes = batches(sizes, {in_flight: 2, batch_files: 64,
        batch_bytes: 12});
    assert.deepEqual(bytes, [[0, 1], [2, 3], [4], [5], [6], [7]]);
    assert.deepEqual(batches([], limits), []);
    // The widget's own settings: the route's per-request limits.
    assert.deepEqual(streaming, {in_flight: 2, batch_files: 64,
        batch_bytes: 32e6});
});

// --- the widget in SAO, in chromium -------------------------------------
const ORIGIN = 'http://sao.invalid';
const PAGE = `<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="bower_components/jquery/dist/jquery.min.js"></script>
<script src="bower_components/bootstrap/dist/js/bootstrap.min.js"></script>
<script src="bower_components/moment/min/moment.min.js"></script>
<script src="bower_components/gettext.js/dist/gettext.min.js"></script>
<script src="bower_components/mousetrap/mousetrap.min.js"></script>
<script src="bower_components/Sortable/Sortable.min.js"></script>
<script src="dist/tryton-sao.js"></script>
<link rel="stylesheet" href="dist/tryton-sao.css">
<script src="custom.js"></script>
</head><body><div id="form" style="width:600px;padding:10px"></div>
<script>
// A wizard-like record built without a server.
function makeWidget(readonly) {
    var model = new Sao.Model('gnuhealth.test.upload');
    model.session = {context: {}};  // no login here
    Sao.common.MODELNOTIFICATION._depends = {};
    Sao.common.MODELACCESS._access[model.name] = {
        read: true, write: true, create: true, 'delete': true};
    model.add_fields({data_to_upload: {
        name: 'data_to_upload', type: 'binary', string: 'Files',
        readonly: false, required: false}});
    var group = new Sao.Group(model, {}, []);
    var record = new Sao.Record(model, -1);
    record.group = group;
    group.push(record);
    var view = {screen: {attributes: {readonly: readonly},
        model_name: model.name}, record: record};
    var widget = new Sao.View.FormXMLViewParser.WIDGETS.binary_dicom(
        view, {name: 'data_to_upload', widget: 'binary_dicom'});
    jQuery('#form').empty().append(widget.el);
    widget.display();
    window.widget = widget;
    window.record = record;
}
</script></body></html>`;

function contentType(file) {
    return {'.js': 'text/javascript', '.css': 'text/css',
        '.html': 'text/html', '.json': 'application/json',
        '.svg': 'image/svg+xml'}[path.extname(file)] ||
        'application/octet-stream';
}

const browserSkip = !fs.existsSync(path.join(SAO_DIR, 'dist')) ?
    `no assembled SAO in ${SAO_DIR} (make sao)` :
    !fs.existsSync(CHROMIUM) ? `${CHROMIUM} missing (make browser-deps)` :
    false;

test('binary_dicom widget in SAO (chromium)', {skip: browserSkip}, async t => {
    const browser = await launch();
    t.after(() => browser.close());
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', error => errors.push(String(error)));
    page.on('console', msg => process.env.DEBUG && console.log(msg.text()));
    await page.route(`${ORIGIN}/**`, route => {
        const url = new URL(route.request().url());
        if (url.pathname == '/test.html') {
            return route.fulfill({body: PAGE, contentType: 'text/html'});
        }
        const file = path.join(SAO_DIR, decodeURIComponent(url.pathname));
        if (route.request().method() != 'GET' || !file.startsWith(SAO_DIR) ||
            !fs.existsSync(file)) {
            // SAO's start-up RPC (no server here)
            return route.fulfill({status: 404, body: ''});
        }
        return route.fulfill({body: fs.readFileSync(file),
            contentType: contentType(file)});
    });
    await page.goto(`${ORIGIN}/test.html`);
    assert.equal(await page.evaluate(
        () => typeof Sao.View.FormXMLViewParser.WIDGETS.binary_dicom),
    'function');
    // standard widgets are still there
    assert.equal(await page.evaluate(
        () => Sao.View.FormXMLViewParser.WIDGETS.binary ===
            Sao.View.Form.Binary), true);

    await page.evaluate(() => makeWidget(false));
    const input = page.locator(
        '.form-binary-dicom input[type=file]:not(.dicom-folder)');
    assert.equal(await input.evaluate(el => el.multiple), true);
    await input.setInputFiles([
        {name: 'a.dcm', mimeType: 'application/dicom',
            buffer: Buffer.from(FILE_A)},
        {name: 'b.dcm', mimeType: 'application/dicom',
            buffer: Buffer.from(FILE_B)},
    ]);
    const text = page.locator('.form-binary-dicom input[type=text]');
    await page.waitForFunction(() => window.record._values.data_to_upload);
    assert.equal(await text.inputValue(), '2 files, 0.00 MB');
    assert.equal(await text.getAttribute('title'), 'a.dcm\nb.dcm');
    await page.evaluate(() => jQuery('.modal, .modal-backdrop').remove());
    await page.locator('#form').screenshot({path: path.join(
        process.env.TMPDIR || '/tmp', 'binary_dicom_widget.png')});
    const value = await page.evaluate(() => {
        var value = window.record._values.data_to_upload;
        return {isUint8Array: value instanceof Uint8Array,
            bytes: Array.from(value),
            // what SAO puts in the JSON-RPC request
            json: Sao.rpc.prepareObject(value)};
    });
    assert.equal(value.isUint8Array, true);
    assert.deepEqual(value.bytes, Array.from(EXPECTED));
    assert.deepEqual(value.json, {__class__: 'bytes',
        base64: Buffer.from(EXPECTED).toString('base64')});

    // drag and drop of one file replaces the value
    await page.evaluate(() => {
        var transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array([1, 2, 3])], 'c.dcm'));
        var drop = new DragEvent('drop', {dataTransfer: transfer,
            bubbles: true, cancelable: true});
        document.querySelector('.form-binary-dicom input[type=text]')
            .dispatchEvent(drop);
    });
    await page.waitForFunction(
        () => window.record._values.data_to_upload.length == 4 + 8 + 3);
    assert.equal(await text.inputValue(), '1 file, 0.00 MB');

    // Clear
    const clear = page.locator(
        '.form-binary-dicom button[aria-label="Clear"]');
    await clear.click();
    assert.equal(await page.evaluate(
        () => window.record._values.data_to_upload), null);
    assert.equal(await text.inputValue(), '');
    assert.equal(await clear.isDisabled(), true);

    // read-only: no input, no drop
    await page.evaluate(() => makeWidget(true));
    assert.equal(await input.isDisabled(), true);
    assert.equal(await clear.isDisabled(), true);
    await page.evaluate(() => widget.load(
        [new File([new Uint8Array([1])], 'x.dcm')]));
    assert.equal(await page.evaluate(
        () => window.record._values.data_to_upload ?? null), null);

    assert.deepEqual(errors.filter(e => !/404|rpc/i.test(e)), []);
});
