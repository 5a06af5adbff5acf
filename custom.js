/* health_orthanc -- SAO (Tryton web client 7.0) customisation.
 *
 * Copy this file next to SAO's index.html (index.html already loads
 * "custom.js").  It registers the form widget "binary_dicom", the web
 * counterpart of the GNU Health GTK client widget of the same name:
 *
 *   <field name="data_to_upload" widget="binary_dicom"/>
 *
 * Several files can be selected (or dropped on the widget); the field value
 * is framed as the GTK client does it:
 *
 *   b'MULT' + (8-byte little-endian unsigned length + file bytes) * N
 *
 * In a form that has a "server" field (the upload wizard) with a server
 * chosen, the files are not read into the page: they are posted to the
 * module's streaming route (/<database>/health_orthanc/upload, stream.py)
 * as the browser reads them from disk, with the session's Authorization
 * header, and the field gets "HOSTREAM:" + the upload reference, by which
 * the wizard reads what Orthanc did with each file.  A progress bar shows
 * files and bytes sent, files stored, rejected and skipped; Stop (cancel)
 * ends the upload after the files being sent (not labelled "Cancel",
 * which is the wizard's own button).  The files go a few per request
 * (up to 64 files, 32 MB), two requests at once (STREAMING below).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
(function(root) {
    'use strict';

    var MAGIC = [77, 85, 76, 84];  // 'MULT'

    // Frame a list of Uint8Array as one Uint8Array.
    function frame(parts) {
        var size = MAGIC.length;
        for (const part of parts) {
            size += 8 + part.length;
        }
        var data = new Uint8Array(size);
        var view = new DataView(data.buffer);
        data.set(MAGIC, 0);
        var offset = MAGIC.length;
        for (const part of parts) {
            view.setBigUint64(offset, BigInt(part.length), true);
            data.set(part, offset + 8);
            offset += 8 + part.length;
        }
        return data;
    }

    // The parts (Uint8Array views) of a framed value, null if not framed.
    function unframe(data) {
        if ((Object.prototype.toString.call(data) != '[object Uint8Array]') ||
            (data.length < MAGIC.length) ||
            MAGIC.some((byte, i) => data[i] !== byte)) {
            return null;
        }
        var view = new DataView(data.buffer, data.byteOffset, data.length);
        var parts = [], offset = MAGIC.length;
        while (offset < data.length) {
            if (offset + 8 > data.length) {
                return null;
            }
            var length = Number(view.getBigUint64(offset, true));
            offset += 8;
            if (offset + length > data.length) {
                return null;
            }
            parts.push(data.subarray(offset, offset + length));
            offset += length;
        }
        return parts;
    }

    // "N files, X MB" (1 MB = 1,000,000 bytes, as Sao.common.humanize)
    function summary(count, bytes) {
        return count + (count == 1 ? ' file, ' : ' files, ') +
            (bytes / 1e6).toFixed(2) + ' MB';
    }

    var STREAM_PREFIX = 'HOSTREAM:';
    // How the widget posts to the streaming route: requests at once (while
    // trytond sends one to Orthanc the next is on its way), and files per
    // request, up to so many bytes (the route's per-request work, session,
    // role, one commit of the outcomes, is shared by its files).
    var STREAMING = {in_flight: 2, batch_files: 64, batch_bytes: 32e6};

    // The files (their sizes) cut into batches: lists of indexes, in order.
    // A batch holds at most 1/in_flight of the files and bytes left, so
    // that the last batches get smaller and the requests in flight end
    // together (a last large batch would keep one request alone at the
    // end, Orthanc half idle).
    function batches(sizes, limits) {
        var result = [], batch = [], bytes = 0;
        var left_files = sizes.length;
        var left_bytes = sizes.reduce((sum, size) => sum + size, 0);
        var most_files, most_bytes;
        var limit = () => {
            most_files = Math.min(limits.batch_files,
                Math.ceil(left_files / limits.in_flight));
            most_bytes = Math.min(limits.batch_bytes,
                left_bytes / limits.in_flight);
        };
        limit();
        sizes.forEach((size, i) => {
            if (batch.length && ((batch.length >= most_files) ||
                (bytes + size > most_bytes))) {
                result.push(batch);
                batch = [];
                bytes = 0;
                limit();
            }
            batch.push(i);
            bytes += size;
            left_files -= 1;
            left_bytes -= size;
        });
        if (batch.length) {
            result.push(batch);
        }
        return result;
    }

    // The upload reference of a streamed value, null otherwise.
    function streamed(data) {
        if ((Object.prototype.toString.call(data) != '[object Uint8Array]') ||
            (data.length <= STREAM_PREFIX.length) || (data.length > 100)) {
            return null;
        }
        var text = String.fromCharCode.apply(null, data);
        return text.startsWith(STREAM_PREFIX) ?
            text.slice(STREAM_PREFIX.length) : null;
    }

    function encode(text) {
        return Uint8Array.from(text, c => c.charCodeAt(0));
    }

    // "3/10 files, 12.50/40.00 MB sent: 2 stored, 1 rejected, 0 skipped"
    function progress_text(state) {
        return state.sent_files + '/' + state.files + ' files, ' +
            (state.sent_bytes / 1e6).toFixed(2) + '/' +
            (state.total / 1e6).toFixed(2) + ' MB sent: ' +
            state.stored + ' stored, ' + state.rejected + ' rejected, ' +
            state.skipped + ' skipped';
    }

    root.HealthOrthanc = {frame: frame, unframe: unframe, summary: summary,
        streamed: streamed, progress_text: progress_text, batches: batches,
        streaming: STREAMING};

    if ((typeof Sao == 'undefined') || !Sao.View || !Sao.View.Form ||
        !Sao.View.FormXMLViewParser) {
        return;
    }
    var _ = function(text) {
        return Sao.i18n.gettext(text);
    };

    Sao.View.Form.BinaryDicom = Sao.class_(Sao.View.Form.Widget, {
        class_: 'form-binary-dicom',
        init: function(view, attributes) {
            Sao.View.Form.BinaryDicom._super.init.call(this, view, attributes);
            this.filename = attributes.filename || null;
            this.names = null;  // [value, file names] of the last selection

            this.el = jQuery('<div/>', {
                'class': this.class_,
            });
            var group = jQuery('<div/>', {
                'class': 'input-group input-group-sm',
            }).appendTo(this.el);
            this.text = jQuery('<input/>', {
                'type': 'text',
                'class': 'form-control input-sm',
                'readonly': true,
                'name': attributes.name,
                'placeholder': _("Drop files here or select them"),
            }).appendTo(group);
            this.labelled = this.text;
            var buttons = jQuery('<span/>', {
                'class': 'input-group-btn',
            }).appendTo(group);

            this.input = jQuery('<input/>', {
                'type': 'file',
                'multiple': true,
            }).change(() => this.load(this.input[0].files));
            this.but_select = jQuery('<div/>', {
                'class': 'btn btn-default input-file',
                'aria-label': _("Select"),
                'title': _("Select..."),
            }).append(this.input)
                .append(Sao.common.ICONFACTORY.get_icon_img('tryton-search'))
                .appendTo(buttons);
            // A patient's CD or USB stick: the whole folder at once.
            this.folder = jQuery('<input/>', {
                'type': 'file',
                'class': 'dicom-folder',
                'webkitdirectory': true,
            }).change(() => this.load(this.folder[0].files));
            this.but_folder = jQuery('<div/>', {
                'class': 'btn btn-default input-file',
                'aria-label': _("Select a folder"),
                'title': _("Select a folder (CD, USB stick)..."),
            }).append(this.folder)
                .append(Sao.common.ICONFACTORY.get_icon_img('tryton-open'))
                .appendTo(buttons);
            this.but_clear = jQuery('<button/>', {
                'class': 'btn btn-default',
                'type': 'button',
                'aria-label': _("Clear"),
                'title': _("Clear"),
            }).append(Sao.common.ICONFACTORY.get_icon_img('tryton-clear'))
                .click(this.clear.bind(this))
                .appendTo(buttons);

            this.progress = jQuery('<div/>', {
                'class': 'dicom-progress',
            }).hide().appendTo(this.el);
            this.bar = jQuery('<div/>', {
                'class': 'progress-bar',
                'role': 'progressbar',
                'aria-valuemin': 0,
                'aria-valuemax': 100,
            }).appendTo(jQuery('<div/>', {
                'class': 'progress',
            }).appendTo(this.progress));
            this.progress_label = jQuery('<span/>', {
                'class': 'dicom-progress-text',
            }).appendTo(this.progress);
            this.but_cancel = jQuery('<button/>', {
                'class': 'btn btn-link btn-sm dicom-cancel',
                'type': 'button',
                'title': _("Stop after the files being sent"),
            }).text(_("Stop")).click(() => {
                if (this.stream_state) {
                    this.stream_state.cancelled = true;
                    this.but_cancel.prop('disabled', true);
                }
            }).appendTo(this.progress);
            this.stream_state = null;

            this.el.on('dragenter dragover', evt => {
                evt.preventDefault();
                this.el.toggleClass('dicom-dragover', !this._readonly);
            }).on('dragleave drop', evt => {
                evt.preventDefault();
                this.el.removeClass('dicom-dragover');
            }).on('drop', evt => {
                var transfer = evt.originalEvent.dataTransfer;
                this.load(transfer ? transfer.files : []);
            });
        },
        load: function(files) {
            var record = this.record, field = this.field;
            files = Array.from(files || []);
            if (!field || this._readonly || !files.length) {
                return Promise.resolve();
            }
            var server = this.stream_server();
            if (server) {
                return this.stream(files, server);
            }
            this.text.val(_("Reading..."));
            return Promise.all(files.map(file => file.arrayBuffer()))
                .then(buffers => {
                    if (this.record !== record) {
                        return;
                    }
                    var value = frame(buffers.map(b => new Uint8Array(b)));
                    this.names = [value, files.map(file => file.name)];
                    field.set_client(record, value);
                    var filename_field = this.filename_field;
                    if (filename_field) {
                        filename_field.set_client(
                            record, this.names[1].join('\n'));
                    }
                }).catch(error => {
                    // RPC errors are already reported by SAO itself
                    if (error instanceof Error) {
                        Sao.common.error.run(error.message, error.stack);
                    }
                }).finally(() => {
                    this.input.val(null);  // the same file can be reselected
                    this.display();
                });
        },
        // The server chosen in the same form (the upload wizard), if any.
        stream_server: function() {
            var record = this.record;
            if (!record || !record.model.fields.server ||
                !Sao.Session.current_session) {
                return null;
            }
            return record.field_get('server') || null;
        },
        // The patient chosen in the same form: the files are given that
        // patient's identity as they stream (import reconciliation).
        stream_patient: function() {
            var record = this.record;
            if (!record || !record.model.fields.patient) {
                return null;
            }
            return record.field_get('patient') || null;
        },
        // Post the files to the streaming route in batches, several
        // batches at a time (STREAMING).
        stream: async function(files, server) {
            var record = this.record, field = this.field;
            var reference = (window.crypto && crypto.randomUUID ?
                crypto.randomUUID() :
                String(Date.now()) + String(Math.random()))
                .replace(/[^0-9a-zA-Z]/g, '');
            var names = files.map(f => f.webkitRelativePath || f.name);
            var state = this.stream_state = {
                files: files.length, total: 0, sent_files: 0,
                sent_bytes: 0, stored: 0, rejected: 0, skipped: 0,
                cancelled: false, done: false, error: null,
                patient: this.stream_patient(),
                loading: new Map(),  // bytes sent of the requests in flight
                posted: [],  // indexes of the files sent
            };
            state.total = files.reduce((sum, f) => sum + f.size, 0);
            this.el.attr('data-stream', 'running');
            this.but_cancel.prop('disabled', false).show();
            this.progress.show();
            this.show_progress();
            var pending = batches(files.map(f => f.size), STREAMING);
            var next = 0;
            // One sender: takes the next batch until none is left, Stop is
            // clicked or a request fails (the others finish theirs).
            var sender = async () => {
                while ((next < pending.length) && !state.cancelled &&
                    !state.error) {
                    var batch = pending[next++];
                    try {
                        await this.post_files(server, reference,
                            batch.map(i => files[i]),
                            batch.map(i => names[i]), state);
                    } catch (error) {
                        state.error = state.error || error.message;
                        return;
                    }
                    state.sent_files += batch.length;
                    state.posted.push(...batch);
                    this.show_progress();
                }
            };
            var senders = [];
            for (var n = 0; n < Math.min(STREAMING.in_flight,
                pending.length); n++) {
                senders.push(sender());
            }
            await Promise.all(senders);
            if (state.error) {
                Sao.common.error.run(state.error, '');
            }
            state.done = true;
            this.but_cancel.hide();
            state.posted.sort((a, b) => a - b);
            try {
                this.store_reference(record, field, reference,
                    state.posted.map(i => names[i]), state);
            } finally {
                this.el.attr('data-stream', state.cancelled ? 'cancelled' :
                    (state.error ? 'failed' : 'done'));
            }
        },
        // The field holds the upload reference the wizard reads.
        store_reference: function(record, field, reference, names, state) {
            if (this.record === record) {
                this.names = null;
                if (state.sent_files) {
                    field.set_client(record,
                        encode(STREAM_PREFIX + reference));
                    var filename_field = this.filename_field;
                    if (filename_field) {
                        filename_field.set_client(record,
                            names.join('\n'));
                    }
                }
            }
            this.input.val(null);
            this.folder.val(null);
            this.show_progress();
            this.display();
        },
        // One request: the files one after the other, read from disk as
        // they are sent (a Blob of Files is not read into the page).
        post_files: function(server, reference, files, names, state) {
            var session = Sao.Session.current_session;
            var params = {server: server, upload: reference, name: names,
                size: files.map(f => f.size)};
            if (state.patient) {
                params.patient = state.patient;
            }
            var url = '/' + session.database + '/health_orthanc/upload?' +
                jQuery.param(params, true);
            var bytes = files.reduce((sum, f) => sum + f.size, 0);
            return new Promise((resolve, reject) => {
                var xhr = new XMLHttpRequest();
                xhr.open('POST', url);
                xhr.setRequestHeader('Authorization',
                    'Session ' + session.get_auth());
                // No browser login prompt on a 401.
                xhr.setRequestHeader('X-Requested-With', 'XMLHttpRequest');
                xhr.setRequestHeader('Content-Type',
                    'application/octet-stream');
                xhr.upload.onprogress = evt => {
                    state.loading.set(xhr, evt.loaded);
                    this.show_progress();
                };
                xhr.onerror = () => reject(new Error(
                    _("The connection to the server was lost.")));
                xhr.onloadend = () => state.loading.delete(xhr);
                xhr.onload = () => {
                    state.loading.delete(xhr);
                    if (xhr.status == 200) {
                        state.sent_bytes += bytes;
                        this.count(JSON.parse(xhr.responseText).files,
                            state);
                        resolve();
                    } else {
                        var found = /<p>([\s\S]*)<\/p>/.exec(
                            xhr.responseText || '');
                        // The route's messages name the file they are about.
                        reject(new Error(
                            (names.length == 1 ? names[0] + ': ' : '') +
                            (found ? jQuery('<div/>').html(found[1]).text() :
                                xhr.status + ' ' + xhr.statusText)));
                    }
                };
                xhr.send(new Blob(files));
            });
        },
        count: function(outcomes, state) {
            for (const item of outcomes) {
                if (item.status == 'Skipped') {
                    state.skipped += 1;
                } else if (item.status == 'Rejected') {
                    state.rejected += 1;
                } else {
                    state.stored += 1;
                }
            }
        },
        show_progress: function() {
            var state = this.stream_state;
            if (!state) {
                return;
            }
            var sent = state.sent_bytes;
            if (!state.done) {
                for (const loaded of state.loading.values()) {
                    sent += loaded;
                }
            }
            var percent = state.total ?
                Math.round(100 * sent / state.total) :
                Math.round(100 * state.sent_files / state.files);
            this.bar.css('width', percent + '%')
                .attr('aria-valuenow', percent);
            var text = progress_text(state);
            if (state.cancelled && state.done) {
                text = _("Cancelled: ") + text;
            }
            this.progress_label.text(text);
        },
        clear: function() {
            var record = this.record, field = this.field;
            if (!field || this._readonly) {
                return;
            }
            this.input.val(null);
            this.names = null;
            this.stream_state = null;
            this.progress.hide();
            field.set_client(record, null);
            var filename_field = this.filename_field;
            if (filename_field) {
                filename_field.set_client(record, null);
            }
            this.display();
        },
        get filename_field() {
            var record = this.record;
            if (this.filename && record) {
                return record.model.fields[this.filename];
            }
        },
        display: function() {
            Sao.View.Form.BinaryDicom._super.display.call(this);
            var record = this.record, field = this.field;
            var text = '', title = '', size = 0;
            if (field) {
                var value = field.get(record);
                var parts = unframe(value);
                var state = this.stream_state;
                if (streamed(value) && state) {
                    size = 1;
                    text = summary(state.sent_files, state.sent_bytes) +
                        ' ' + _("sent");
                } else if (parts) {
                    size = value.length;
                    text = summary(parts.length,
                        parts.reduce((sum, part) => sum + part.length, 0));
                    if (this.names && (this.names[0] === value)) {
                        title = this.names[1].join('\n');
                    }
                } else {
                    size = field.get_size ? field.get_size(record) :
                        (value || '').length;
                    text = size ? Sao.common.humanize(size, 'B') : '';
                }
            }
            this.text.val(text).attr('title', title);
            this.but_clear.prop('disabled', this._readonly || !size);
        },
        set_readonly: function(readonly) {
            Sao.View.Form.BinaryDicom._super.set_readonly.call(this, readonly);
            this.but_select.toggleClass('disabled', readonly);
            this.input.prop('disabled', readonly);
            this.but_folder.toggleClass('disabled', readonly);
            this.folder.prop('disabled', readonly);
            this.but_clear.prop('disabled', readonly);
        },
    });

    Sao.View.FormXMLViewParser.WIDGETS.binary_dicom = Sao.View.Form.BinaryDicom;
    // The same field shown in a list falls back to the standard binary.
    if (Sao.View.TreeXMLViewParser && Sao.View.Tree.BinaryColumn) {
        Sao.View.TreeXMLViewParser.WIDGETS.binary_dicom =
            Sao.View.Tree.BinaryColumn;
    }
    if (Sao.View.EditableTree && Sao.View.EditableTree.Binary) {
        Sao.View.EditableTree.WIDGETS.binary_dicom =
            Sao.View.EditableTree.Binary;
    }

    // "Delete study" and "Delete series" delete the records they are
    // clicked on.  After any button or wizard SAO reloads the clicked
    // records (and the parent record of a one2many), and reading a deleted
    // record fails: "records that don't exist" and #ERROR rows.  So, for
    // these models, records gone from the server are first dropped from
    // the screen (not deleted again), and only the others are reloaded.
    var DELETED_BY_BUTTONS = [
        'gnuhealth.imaging_orthanc.study',
        'gnuhealth.imaging_orthanc.study_series',
    ];

    function still_there(model, ids, context) {
        return new Sao.Model(model).execute('search',
            [[['id', 'in', ids]], 0, null, null], context);
    }

    function forget(screen, ids) {
        var group = screen.group;
        for (const id of ids) {
            var record = group.get(id);
            if (record) {
                group._remove(record);
                record.destroy();
            }
        }
        if (screen.current_record && screen.current_record.destroyed) {
            screen.current_record = group.length ? group[0] : null;
        }
        if (!group.length && !group.parent && screen.current_view &&
            (screen.current_view.view_type == 'form')) {
            return screen.switch_view('tree');
        }
        return screen.display();
    }

    // The tabs showing record (the parent of a one2many in a dialog).
    function tabs_of(record) {
        return Sao.Tab.tabs.filter(
            tab => tab.screen && (tab.screen.group === record.group));
    }

    var reload = Sao.Screen.prototype.reload;
    Sao.Screen.prototype.reload = function(ids, written) {
        var watched = model => ~DELETED_BY_BUTTONS.indexOf(model);
        if (!watched(this.model_name) || !(ids || []).length) {
            return reload.call(this, ids, written);
        }
        ids = ids.filter(id => id >= 0);
        var root = this.group.parent ? this.group.parent.root_parent : null;
        var checks = [still_there(this.model_name, ids, this.context)];
        if (root && (root.id >= 0) && watched(root.model.name)) {
            checks.push(still_there(root.model.name, [root.id], this.context));
        }
        return jQuery.when.apply(jQuery, checks).then((kept, kept_root) => {
            var gone = ids.filter(id => !~kept.indexOf(id));
            if (kept_root && !kept_root.length) {
                // The parent went too (a study without series is deleted).
                for (const tab of tabs_of(root)) {
                    forget(tab.screen, [root.id]);
                }
                return forget(this, ids);
            }
            if (gone.length) {
                forget(this, gone);
                // SAO reloads the parent only if not loaded: its counts
                // and children changed, so forget them (unless edited).
                if (root && jQuery.isEmptyObject(root.modified_fields)) {
                    root.cancel();
                }
            }
            return reload.call(
                this, ids.filter(id => !~gone.indexOf(id)), written)
                .then(() => {
                    // the parent's counts changed: show them
                    if (root && gone.length) {
                        for (const tab of tabs_of(root)) {
                            tab.screen.display();
                        }
                    }
                });
        });
    };

    jQuery('<style/>').text(
        '.form-binary-dicom.dicom-dragover .form-control {' +
        ' border: 2px dashed #337ab7; }' +
        '.form-binary-dicom .dicom-progress .progress {' +
        ' margin: 4px 0 0 0; height: 8px; }').appendTo('head');
}(typeof window != 'undefined' ? window : globalThis));
