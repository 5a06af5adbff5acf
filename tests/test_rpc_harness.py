# SPDX-License-Identifier: GPL-3.0-or-later
"""The JSON-RPC harness itself (tests/rpc.py): users per role log in, calls
carry their rights, refusals come back as typed errors."""
from . import rpc


class RPCHarnessTestCase(rpc.RPCTestCase):

    def test_each_role_logged_in(self):
        for role in rpc.ROLES:
            session = self.sessions[role]
            user, = self.sessions['admin'].read('res.user',
                [session.user_id], ['login'])
            self.assertEqual(user['login'], role)

    def test_refusal_is_a_user_error(self):
        error = self.sessions['nobody'].failure(
            'model.gnuhealth.orthanc.config.search', [], 0, None, None)
        self.assertEqual(error.type, 'UserError')
        self.assertIn('not allowed', error.message)

    def test_method_not_exposed(self):
        error = self.sessions['admin'].failure(
            'model.gnuhealth.orthanc.config.__init__')
        self.assertEqual(error.type, 'HTTP 403')
