#!/usr/bin/env node
// Assemble a servable SAO 7.0 tree from npm packages, without bower.
//
// SAO's index.html loads its third-party libraries from a bower_components/
// tree (bower is unreachable here).  The same libraries are installed from the
// npm registry (see package.json) and copied to the paths index.html expects.
//
// Usage: node assemble-sao.mjs [DEST]   (default: ./build/sao, or $SAO_DIR)
// The module's custom.js (repository root) is symlinked next to index.html.
import fs from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NM = path.join(HERE, 'node_modules');
const DEST = path.resolve(process.argv[2] || process.env.SAO_DIR ||
    path.join(HERE, 'build', 'sao'));
const CUSTOM_JS = path.resolve(HERE, '..', 'custom.js');

// What tryton-sao ships and index.html / SAO use at run time.
const SAO_ENTRIES = ['index.html', 'dist', 'images', 'locale', 'sounds',
    'COPYRIGHT', 'LICENSE'];

// bower_components/<target> <- node_modules/<source>
// (bower installed git repositories; the npm packages have the same layout
// for the files index.html references, except d3 whose bundle is in dist/)
const BOWER = [
    ['jquery/dist', 'jquery/dist'],
    ['bootstrap/dist', 'bootstrap/dist'],
    ['bootstrap/fonts', 'bootstrap/fonts'],  // url(...) in tryton-sao.css
    ['moment/min', 'moment/min'],
    ['gettext.js/dist', 'gettext.js/dist'],
    ['d3', 'd3/dist'],
    ['c3/c3.min.js', 'c3/c3.min.js'],
    ['c3/c3.min.css', 'c3/c3.min.css'],
    ['c3/c3.js', 'c3/c3.js'],
    ['c3/c3.css', 'c3/c3.css'],
    ['papaparse/papaparse.min.js', 'papaparse/papaparse.min.js'],
    ['papaparse/papaparse.js', 'papaparse/papaparse.js'],
    ['fullcalendar/dist', 'fullcalendar/dist'],
    ['mousetrap/mousetrap.min.js', 'mousetrap/mousetrap.min.js'],
    ['mousetrap/mousetrap.js', 'mousetrap/mousetrap.js'],
    ['Sortable/Sortable.min.js', 'sortablejs/Sortable.min.js'],
    ['Sortable/Sortable.js', 'sortablejs/Sortable.js'],
];

function copy(src, dst) {
    if (!fs.existsSync(src)) {
        throw new Error(`missing ${src} (run npm ci in ${HERE})`);
    }
    fs.mkdirSync(path.dirname(dst), {recursive: true});
    fs.cpSync(src, dst, {recursive: true, dereference: true});
}

fs.rmSync(DEST, {recursive: true, force: true});
fs.mkdirSync(DEST, {recursive: true});
for (const entry of SAO_ENTRIES) {
    copy(path.join(NM, 'tryton-sao', entry), path.join(DEST, entry));
}
for (const [target, source] of BOWER) {
    copy(path.join(NM, source), path.join(DEST, 'bower_components', target));
}
// custom.js: symlink so edits are live without re-assembling.
fs.symlinkSync(path.relative(DEST, CUSTOM_JS), path.join(DEST, 'custom.js'));
// index.html also links custom.css; an empty one avoids a 404.
fs.writeFileSync(path.join(DEST, 'custom.css'),
    '/* health_orthanc: no custom style */\n');
const version = JSON.parse(fs.readFileSync(
    path.join(NM, 'tryton-sao', 'package.json'), 'utf8')).version;
console.log(`assembled tryton-sao ${version} in ${DEST}`);
