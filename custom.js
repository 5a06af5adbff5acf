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

    root.HealthOrthanc = {frame: frame, unframe: unframe, summary: summary};

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
            this.but_clear = jQuery('<button/>', {
                'class': 'btn btn-default',
                'type': 'button',
                'aria-label': _("Clear"),
                'title': _("Clear"),
            }).append(Sao.common.ICONFACTORY.get_icon_img('tryton-clear'))
                .click(this.clear.bind(this))
                .appendTo(buttons);

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
        clear: function() {
            var record = this.record, field = this.field;
            if (!field || this._readonly) {
                return;
            }
            this.input.val(null);
            this.names = null;
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
                if (parts) {
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
        ' border: 2px dashed #337ab7; }').appendTo('head');
}(typeof window != 'undefined' ? window : globalThis));
