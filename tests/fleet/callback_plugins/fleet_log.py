# SPDX-License-Identifier: ISC
"""Records a play for the fleet test, beside the normal output: one JSON line per event in
the file named by FLEET_LOG, with wall-clock times the client's records can be compared to.

  {"ev": "start",  "t", "host", "task", "action"}              a task starts on a host
  {"ev": "result", "t", "host", "task", "action", "status", "result"}
  {"ev": "stats",  "t", "hosts": {host: {ok, changed, failures, skipped, ...}}}
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: fleet_log
type: aggregate
short_description: Write task starts and results as JSON lines for maint's fleet test
description:
  - Writes one JSON line per task start, task result and the final stats to the file named by
    the environment variable E(FLEET_LOG).
requirements:
  - enabled with C(callbacks_enabled = fleet_log)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'fleet_log'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        path = os.environ.get('FLEET_LOG')
        self._out = open(path, 'a', buffering=1) if path else None

    def _write(self, **event):
        if self._out:
            event['t'] = time.time()
            self._out.write(json.dumps(event, default=str) + '\n')

    def v2_runner_on_start(self, host, task):
        self._write(ev='start', host=host.get_name(), task=task.get_name(), action=task.action)

    def _result(self, result, status):
        # ansible-core 2.19 names them result, host, task; older ones _result, _host, _task.
        data = dict(getattr(result, 'result', None) or result._result)
        data.pop('invocation', None)
        host = getattr(result, 'host', None) or result._host
        task = getattr(result, 'task', None) or result._task
        self._write(ev='result', host=host.get_name(), task=task.get_name(),
                    action=task.action, status=status, result=data)

    def v2_runner_on_ok(self, result):
        data = getattr(result, 'result', None) or result._result
        self._result(result, 'changed' if data.get('changed') else 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, 'ignored' if ignore_errors else 'failed')

    def v2_runner_on_skipped(self, result):
        self._result(result, 'skipped')

    def v2_runner_on_unreachable(self, result):
        self._result(result, 'unreachable')

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed.keys())
        self._write(ev='stats', hosts={h: stats.summarize(h) for h in hosts})
