#!/usr/bin/env node
// Check that an assembled SAO tree is complete: every <script src> and
// <link href> of index.html (including the fallbacks index.html writes with
// document.write), and every relative url(...) of the local stylesheets,
// resolves to a file.
//
// Usage: node check-sao.mjs [SAO_DIR]   (default: ./build/sao, or $SAO_DIR)
import fs from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(process.argv[2] || process.env.SAO_DIR ||
    path.join(HERE, 'build', 'sao'));
const index = path.join(ROOT, 'index.html');
if (!fs.existsSync(index)) {
    console.error(`sao-check: ${index} is missing (run make sao)`);
    process.exit(1);
}
const html = fs.readFileSync(index, 'utf8');
const refs = new Set();
for (const m of html.matchAll(/<script\b[^>]*\bsrc="([^"]+)"/g)) {
    refs.add(m[1]);
}
for (const m of html.matchAll(/<link\b[^>]*\bhref="([^"]+)"/g)) {
    refs.add(m[1]);
}
// document.write(unescape('%3cscript ... src="dist/tryton-sao.js"%3e...'))
for (const m of html.matchAll(/unescape\('([^']+)'\)/g)) {
    const tag = decodeURIComponent(m[1]);
    const ref = /(?:src|href)="([^"]+)"/.exec(tag);
    if (ref) {
        refs.add(ref[1]);
    }
}

const isLocal = ref => !/^([a-z]+:|\/\/|#|data:)/i.test(ref);
const missing = new Set();
let checked = 0;
function check(file, from) {
    checked += 1;
    if (!fs.existsSync(file) || !fs.statSync(file).isFile()) {
        missing.add(`${path.relative(ROOT, file)} (from ${from})`);
        return false;
    }
    return true;
}
for (const ref of refs) {
    if (!isLocal(ref)) {
        continue;
    }
    const file = path.join(ROOT, ref.split(/[?#]/)[0]);
    if (check(file, 'index.html') && file.endsWith('.css')) {
        const css = fs.readFileSync(file, 'utf8');
        for (const m of css.matchAll(/url\(\s*["']?([^"')]+)["']?\s*\)/g)) {
            if (isLocal(m[1])) {
                check(path.join(path.dirname(file), m[1].split(/[?#]/)[0]),
                    ref);
            }
        }
    }
}
// SAO fetches its translations with jQuery.getJSON('locale/<lang>.json').
check(path.join(ROOT, 'locale', 'fr.json'), 'Sao.i18n');

if (missing.size) {
    console.error(`sao-check: ${missing.size} missing file(s) in ${ROOT}:`);
    for (const m of missing) {
        console.error(`  ${m}`);
    }
    process.exit(1);
}
console.log(`sao-check: ${checked} references of index.html resolve in ${ROOT}`);
