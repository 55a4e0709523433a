# -*- coding: utf-8 -*-
# Copyright: maint contributors
# SPDX-License-Identifier: ISC
"""Running the maint CLI from a module: one place that builds the command line, runs it with
``--json``, turns maint's exit codes and error objects into clear ``fail_json`` messages, and
compares what maint reports with what a task asks for."""

from __future__ import annotations

import datetime
import json
import os

# maint's exit codes (README, "Exit codes"). Nothing is changed for 2 and 3, and nothing is
# left half-applied for 1, so a failed task never leaves a half-open maintenance window.
EXIT_MEANING = {
    1: 'the firewall or the system refused; nothing was left half-applied',
    2: 'bad input, a broken config, or a firewall not set up for maint; nothing was changed',
    3: 'the maintenance server does not answer HTTP (force=true applies anyway); nothing was changed',
    4: 'maint status: the kernel, the server or the record disagree (drift)',
    5: 'maint status: no right to read the firewall; run it as root',
}

# `maint status` exits 4 when it found drift; its report is still whole, and says what.
STATUS_DRIFT = 4

# Where get_bin_path also looks for maint: the role maint.ops.server installs it to
# /usr/local/bin, which is not always in the PATH of a non-interactive SSH session.
BIN_DIRS = ['/usr/local/bin', '/usr/local/sbin', '/usr/sbin', '/sbin']

# Options shared by every maint.ops module (binary and config); modules merge this into their
# argument_spec, and their DOCUMENTATION carries the same two options.
COMMON_ARGS = dict(
    binary=dict(type='path', default='maint'),
    config=dict(type='path'),
)

# What a task compares and shows in its diff: the part of `maint --json status` an operator
# decides on.
VIEW_KEYS = ('active', 'sources', 'exceptions', 'until', 'reason')


class Maint(object):
    """The maint program on the managed host."""

    def __init__(self, module):
        self.module = module
        binary = module.params['binary']
        if os.sep in binary:
            if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
                module.fail_json(msg='binary=%s: there is no executable file at that path' % binary)
            self.binary = binary
        else:
            self.binary = module.get_bin_path(binary, required=False, opt_dirs=BIN_DIRS)
            if not self.binary:
                module.fail_json(
                    msg='binary=%s: no such program in PATH or in %s; install maint (the role '
                        'maint.ops.server does) or set binary to its full path'
                        % (binary, ', '.join(BIN_DIRS)))
        self.config = module.params.get('config')
        if self.config and not os.path.isfile(self.config):
            module.fail_json(msg='config=%s: no such file on %s' % (self.config, _hostname()))

    def command(self, *args):
        """The argv that runs `maint --json [--config FILE] ARGS...`."""
        cmd = [self.binary, '--json']
        if self.config:
            cmd += ['--config', self.config]
        return cmd + list(args)

    def run(self, *args, **kwargs):
        """Runs maint and returns its JSON object, or fails the task with maint's own words.
        `ok_codes`: exit codes that still carry a whole answer (default: 0 only)."""
        ok_codes = kwargs.get('ok_codes', (0,))
        cmd = self.command(*args)
        # Recorded as who switched maintenance, and logged in maint's audit trail.
        rc, out, err = self.module.run_command(cmd, environ_update=dict(MAINT_ORIGIN='ansible'))
        data = None
        if out.strip():
            try:
                data = json.loads(out)
            except ValueError:
                data = None
        if rc not in ok_codes:
            detail = None
            if isinstance(data, dict):
                detail = data.get('error')
            if not detail:
                lines = [line for line in (err or out).splitlines() if line.strip()]
                detail = lines[-1] if lines else 'no output'
            self.module.fail_json(
                msg='maint %s %s: %s (exit %d: %s)'
                    % (args[0] if args else '', 'failed' if rc == 1 else 'refused', detail, rc,
                       EXIT_MEANING.get(rc, 'unexpected exit code')),
                cmd=cmd, rc=rc, stdout=out, stderr=err)
        if not isinstance(data, dict):
            self.module.fail_json(
                msg='`maint %s` printed no JSON object; is %s really maint?'
                    % (args[0] if args else '', self.binary),
                cmd=cmd, rc=rc, stdout=out, stderr=err)
        return data

    def status(self):
        return self.run('status', ok_codes=(0, STATUS_DRIFT))


def _hostname():
    try:
        return os.uname()[1]
    except Exception:  # pragma: no cover - os.uname exists on every POSIX host
        return 'the managed host'


def tokens(values):
    """Source tokens as maint reads them: each value may be a comma-separated list; `all` in
    any case is `all`. Order and duplicates kept, empty entries dropped."""
    out = []
    for value in values or []:
        for token in str(value).split(','):
            token = token.strip()
            if token:
                out.append('all' if token.lower() == 'all' else token)
    return out


def same_tokens(a, b):
    """Whether two token lists name the same sources (order and duplicates do not matter)."""
    return sorted(set(tokens(a))) == sorted(set(tokens(b)))


def parse_time(text):
    """An RFC 3339 time as maint prints it (`2026-12-01T02:00:00Z`), or None."""
    if not text:
        return None
    text = text.strip()
    if text.endswith(('Z', 'z')):
        text = text[:-1] + '+00:00'
    return datetime.datetime.fromisoformat(text)


def same_time(a, b):
    """Whether two window ends (RFC 3339 strings or None for "no end") are the same instant."""
    if a is None or b is None:
        return a is None and b is None
    return parse_time(a) == parse_time(b)


def later(a, b):
    """Whether window end `a` is later than `b`; None (no end) is later than any time."""
    if a is None:
        return b is not None
    if b is None:
        return False
    return parse_time(a) > parse_time(b)


def view(status):
    """The part of a status object a task decides on and shows in its diff."""
    return dict(
        active=bool(status.get('active')),
        sources=list(status.get('sources') or []),
        exceptions=list(status.get('exceptions') or []),
        until=status.get('until'),
        reason=status.get('reason'),
    )


OFF_VIEW = dict(active=False, sources=[], exceptions=[], until=None, reason=None)


def leftovers(status):
    """Whether `maint off` has anything to remove: an active or expired window, a state record,
    or maint's table in the kernel."""
    return bool(status.get('active') or status.get('expired') or status.get('sources')
                or status.get('source_prefixes') or status.get('ports'))


def describe(v):
    """One line for a view, for the task's msg."""
    if not v['active']:
        return 'off'
    text = 'on for %s' % ', '.join(v['sources'] or ['all'])
    if v['exceptions']:
        text += ' except %s' % ', '.join(v['exceptions'])
    text += ' until %s' % v['until'] if v['until'] else ' with no end'
    if v['reason']:
        text += ' (%s)' % v['reason']
    return text
