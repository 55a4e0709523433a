#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: maint contributors
# SPDX-License-Identifier: ISC

from __future__ import annotations

DOCUMENTATION = r"""
---
module: maintenance
short_description: Put a website into maintenance at the packet filter with maint
version_added: 0.1.0
description:
  - Turns maintenance on or off on a host with C(maint), which redirects the web ports (80 and 443 by default) of the matched source addresses to its
    own maintenance server at the packet filter (nftables on Linux, pf on OpenBSD).
  - The module reads C(maint --json status), works out what has to change, and runs
    C(maint on) or C(maint off) only when something does, and never in check mode. Reruns
    are idempotent, including with a relative window (O(for)). By default (O(extend=never)) a
    window that is already on keeps its end, so running C(for=45m) again a minute later
    reports no change.
  - Excepted sources (O(except)) and the host itself keep reaching the app on the real ports,
    so a play can check the upgraded app before turning maintenance off. SSH and every other
    port are never touched.
  - Inputs are checked by maint itself (C(maint on --dry-run)) before anything is decided,
    also in check mode, so an unknown alias or a bad duration fails the task in C(--check)
    runs too, with maint's message naming the bad token.
author:
  - maint contributors (@maint)
requirements:
  - maint on the managed host (the role C(maint.ops.server) installs it), run as root
    (use C(become=true) when connecting as another user).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Check mode runs only C(maint status) and C(maint on --dry-run); nothing is loaded
      into the firewall and no maintenance server is started.
  diff_mode:
    support: full
    details: The diff shows RV(status.active), RV(status.sources), RV(status.exceptions),
      RV(status.until) and RV(status.reason) before and after.
  platform:
    platforms: posix
    details: Linux (nftables) and OpenBSD (pf), wherever maint runs.
  action_group:
    description: Use C(group/maint.ops.maint) in C(module_defaults) to set O(binary) and
      O(config) once for every maint.ops module.
    support: full
    membership:
      - maint.ops.maint
options:
  state:
    description:
      - V(on) puts the matched sources into maintenance; V(off) ends maintenance for everyone
        and sends clients back to the app at once.
      - Quote the value (V("on"), V("off")) for clarity. Unquoted, YAML reads C(on) and C(off)
        as booleans, which the module maps back to V(on) and V(off).
    type: str
    choices: ["on", "off"]
    required: true
  sources:
    description:
      - Who sees the maintenance page. IPv4 and IPv6 addresses, CIDR prefixes, alias names from
        the C([aliases]) table of maint's config, or V(all) (every IPv4 and IPv6 source).
      - An entry may itself be a comma-separated list. The order of the entries does not matter.
      - Only used with O(state=on).
    type: list
    elements: str
    default: [all]
  except:
    description:
      - Sources that keep reaching the app while maintenance is on (same forms as O(sources)),
        typically the office, monitoring, and the address Ansible connects from.
      - Only used with O(state=on).
    type: list
    elements: str
    default: []
    aliases: [exceptions]
  for:
    description:
      - End maintenance by itself after this long, counted from when the task turns it on; a
        duration as maint reads it, such as V(30m), V(2h) or V(1h30m).
      - The kernel ends the window even if nothing of maint runs at that moment.
      - With neither O(for) nor O(until), maintenance lasts until O(state=off).
      - Only used with O(state=on). Mutually exclusive with O(until).
    type: str
  until:
    description:
      - End maintenance by itself at this time; RFC 3339 (V(2026-12-01T02:00:00Z)) or a local
        time of the managed host (V(2026-12-01T02:00)).
      - Only used with O(state=on). Mutually exclusive with O(for).
    type: str
  extend:
    description:
      - What a rerun does to the end of a window that is already on. A window that is off (or
        has ended by itself) always gets the end O(for) or O(until) asks for.
      - V(never) keeps the end it has, so reruns are idempotent even with O(for). When the
        sources, exceptions or reason change, maint is rerun with the same end.
      - V(if_later) moves the end only when the requested end is later (no end at all counts as
        the latest); an earlier end is left alone.
      - V(always) sets the end the task asks for, earlier or later; with O(for) this changes
        the window on every run.
    type: str
    choices: [never, if_later, always]
    default: never
  reason:
    description:
      - Why the site is down; shown on the maintenance page and in C(maint status).
      - Omitted means no reason of the task's own (the page shows C(page.reason) from maint's
        config). A different reason on a rerun changes the window's reason and reports a
        change.
      - Only used with O(state=on).
    type: str
  force:
    description:
      - Apply even if the maintenance server does not answer (C(maint on --force)). Visitors
        may then see errors instead of the maintenance page; leave it off unless you know why
        the server cannot start.
      - Only used with O(state=on).
    type: bool
    default: false
  drain:
    description:
      - Let connections already open on the app finish for up to this long (C(maint on
        --drain), for example V(30s)); new connections see the page at once, those still open
        at the end are cut. The task waits for the end of the drain.
      - Only used when maint runs C(on); a rerun that changes nothing does not drain.
      - Only used with O(state=on).
    type: str
  binary:
    description:
      - The maint program on the managed host; a name looked up in E(PATH) and C(/usr/local/bin),
        or a full path.
    type: path
    default: maint
  config:
    description:
      - maint's configuration file on the managed host (C(maint --config)). Without it maint
        reads E(MAINT_CONFIG) or C(/etc/maint/maint.toml) (built-in defaults when that is
        missing).
    type: path
notes:
  - Sources and exceptions are compared as maint records them, token by token (aliases are
    not expanded), so changing V(198.51.100.7) to V(198.51.100.7/32) reports a change even
    though the same prefix is redirected; maint itself reports it the same way.
  - When maintenance is on but maint's redirect is missing from the kernel or differs from
    maint's record (C(drift) in RV(status)), or its maintenance server is not answering,
    O(state=on) reruns C(maint on), which repairs it, and reports a change.
  - O(state=off) also tidies up a window that ended by itself (RV(status.expired)), which
    reports a change.
seealso:
  - module: maint.ops.maintenance_info
"""

EXAMPLES = r"""
- name: Everyone but the office sees the maintenance page, for at most 45 minutes
  maint.ops.maintenance:
    state: "on"
    except: [office]
    for: 45m
    reason: "Upgrading to {{ app_version }}"

- name: Only one network, until a fixed time (RFC 3339, or local time of the host)
  maint.ops.maintenance:
    state: "on"
    sources: [198.51.100.0/24, "2001:db8:100::/48"]
    until: "2026-12-01T02:00:00Z"

- name: Push the end of a running window out by an hour from now, never pull it in
  maint.ops.maintenance:
    state: "on"
    except: [office]
    for: 1h
    extend: if_later

- name: Maintenance off; clients move back to the app at once
  maint.ops.maintenance:
    state: "off"

- name: A rolling upgrade, one host at a time
  hosts: web
  serial: 1
  become: true
  module_defaults:
    group/maint.ops.maint:
      config: /etc/maint/maint.toml
  tasks:
    - name: Maintenance on
      maint.ops.maintenance:
        state: "on"
        except: [office]
        for: 45m
    - name: Upgrade the app
      ansible.builtin.apt:
        name: "myapp={{ app_version }}"
    - name: The app answers on the real port (the host itself is never redirected)
      ansible.builtin.uri:
        url: http://127.0.0.1/health
      register: health
      until: health.status == 200
      retries: 20
      delay: 3
    - name: Maintenance off
      maint.ops.maintenance:
        state: "off"
"""

RETURN = r"""
status:
  description:
    - The object C(maint --json status) prints, after the change (or as it is, in check
      mode and when nothing changed). See maint's README for every field.
  returned: always
  type: dict
  contains:
    active:
      description: Whether maintenance is on.
      type: bool
      sample: true
    expired:
      description: A window that ended by itself; C(state=off) tidies it up.
      type: bool
      sample: false
    backend:
      description: The firewall maint uses.
      type: str
      sample: nftables
    sources:
      description: The sources as given (alias names kept).
      type: list
      elements: str
      sample: [all]
    exceptions:
      description: The exceptions as given.
      type: list
      elements: str
      sample: [office]
    source_prefixes:
      description: The merged prefixes in the kernel.
      type: list
      elements: str
      sample: ["0.0.0.0/0", "::/0"]
    exception_prefixes:
      description: The merged excepted prefixes in the kernel.
      type: list
      elements: str
      sample: ["203.0.113.0/24"]
    since:
      description: When maintenance was turned on (RFC 3339), or null.
      type: str
      sample: "2026-11-22T12:25:51Z"
    until:
      description: When the window ends by itself (RFC 3339), or null for no end.
      type: str
      sample: "2026-11-22T13:10:52Z"
    reason:
      description: The reason given with C(maint on), or null.
      type: str
      sample: Upgrading to 2.4.1
    server:
      description: The maintenance server (pid, health, counters), or null when none runs.
      type: dict
    drift:
      description: Differences between maint's record and the kernel; empty when they agree.
      type: list
      elements: str
      sample: []
outcome:
  description:
    - The object C(maint --json on) or C(maint --json off) printed (C(states_killed),
      C(server_started), C(server_stopped), C(warnings), ...).
  returned: when maint was run to change something (never in check mode)
  type: dict
  sample: {"changed": true, "active": true, "states_killed": 3, "server_started": 4242}
command:
  description: The maint command the task ran, or would run in check mode; empty when nothing
    needs to change.
  returned: always
  type: list
  elements: str
  sample: ["/usr/local/bin/maint", "--json", "on", "--except=office", "--for=45m", "--", "all"]
msg:
  description: What the task did or would do, in one line.
  returned: always
  type: str
  sample: "turned maintenance on for all except office until 2026-11-22T13:10:52Z; found: maintenance off"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.maint.ops.plugins.module_utils.maint import (
    COMMON_ARGS, OFF_VIEW, Maint, describe, later, leftovers, same_time, same_tokens, tokens,
    view,
)

# Options handed to maint as flags as they are, per command. They are actions, not part of
# the state `maint status` reports, so they never make a rerun "changed" on their own.
# Adding one is an entry here plus its DOCUMENTATION block.
PASSTHROUGH = (
    dict(option='force', spec=dict(type='bool', default=False), commands=('on',), flag='--force'),
    dict(option='drain', spec=dict(type='str'), commands=('on',), flag='--drain'),
)


def passthrough_args(params, command):
    args = []
    for opt in PASSTHROUGH:
        value = params.get(opt['option'])
        if command not in opt['commands'] or value is None or value is False or value == '':
            continue
        if opt['spec'].get('type') == 'bool':
            args.append(opt['flag'])
        else:
            args.append('%s=%s' % (opt['flag'], value))
    return args


def on_args(params, sources, exceptions, window, dry_run=False):
    """`on` with its flags first and the sources after `--`, so no token is read as a flag.
    `window` is ('--for', D), ('--until', T) or None."""
    args = ['on']
    args += ['--except=%s' % e for e in exceptions]
    if window:
        args.append('%s=%s' % window)
    if params['reason'] is not None:
        args.append('--reason=%s' % params['reason'])
    args += passthrough_args(params, 'on')
    if dry_run:
        args.append('--dry-run')
    return args + ['--'] + sources


def requested_window(params):
    if params['for'] is not None:
        return ('--for', params['for'])
    if params['until'] is not None:
        return ('--until', params['until'])
    return None


def choose_end(extend, current, requested):
    """The window end a rerun leaves on an active window (None: no end)."""
    if extend == 'always':
        return requested
    if extend == 'if_later' and later(requested, current):
        return requested
    return current


def plan_on(module, maint, status):
    """For state=on: whether maint must run, why, the `maint on` arguments, the predicted
    view after it, and maint's warnings about the input."""
    params = module.params
    sources = tokens(params['sources']) or ['all']
    exceptions = tokens(params['except'])
    window = requested_window(params)

    # maint checks the input (aliases, prefixes, the window) and works out the window's end
    # exactly as `on` would: nothing is changed by --dry-run.
    plan = maint.run(*on_args(params, sources, exceptions, window, dry_run=True))
    requested_end = plan.get('until')

    before = view(status)
    if not status.get('active'):
        end, apply_window = requested_end, window
        reasons = ['a window that ended by itself' if status.get('expired') else 'maintenance off']
    else:
        end = choose_end(params['extend'], before['until'], requested_end)
        if same_time(end, requested_end):
            apply_window = window
        elif end is None:
            apply_window = None
        else:
            apply_window = ('--until', end)
        reasons = []
        if not same_tokens(before['sources'], sources):
            reasons.append('other sources')
        if not same_tokens(before['exceptions'], exceptions):
            reasons.append('other exceptions')
        if before['reason'] != params['reason']:
            reasons.append('another reason')
        if not same_time(before['until'], end):
            reasons.append('a window end to move (extend=%s)' % params['extend'])
        if status.get('drift'):
            reasons.append("drift between maint's record and the kernel (%s)" % '; '.join(status['drift']))
        server = status.get('server')
        if not server or not server.get('healthy'):
            reasons.append('a maintenance server that does not answer (maint on starts one)')

    after = dict(active=True, sources=sources, exceptions=exceptions, until=end,
                 reason=params['reason'])
    command = on_args(params, sources, exceptions, apply_window)
    return bool(reasons), reasons, command, after, plan.get('warnings') or []


def main():
    argument_spec = dict(
        state=dict(type='str', required=True, choices=['on', 'off']),
        sources=dict(type='list', elements='str', default=['all']),
        # `except` and `for` are Python keywords, but fine as option names.
        **{
            'except': dict(type='list', elements='str', default=[], aliases=['exceptions']),
            'for': dict(type='str'),
        }
    )
    argument_spec.update(
        until=dict(type='str'),
        extend=dict(type='str', default='never', choices=['never', 'if_later', 'always']),
        reason=dict(type='str'),
    )
    argument_spec.update((opt['option'], dict(opt['spec'])) for opt in PASSTHROUGH)
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[('for', 'until')],
        supports_check_mode=True,
    )
    params = module.params
    maint = Maint(module)
    status = maint.status()
    before = view(status)

    if params['state'] == 'off':
        needed = leftovers(status)
        reasons = ['maintenance on' if status.get('active') else
                   'a window that ended by itself' if status.get('expired') else
                   "maint's record or table left over"] if needed else []
        command = ['off'] + passthrough_args(params, 'off')
        after = dict(OFF_VIEW)
        warnings = []
    else:
        needed, reasons, command, after, warnings = plan_on(module, maint, status)

    result = dict(changed=needed, status=status, command=maint.command(*command) if needed else [])
    if needed and not module.check_mode:
        outcome = maint.run(*command)
        warnings = outcome.get('warnings') or []
        status = maint.status()
        after = view(status)
        # Honest both ways: what maint itself says changed counts too.
        result.update(changed=needed or bool(outcome.get('changed')), outcome=outcome,
                      status=status)
    for warning in warnings:
        module.warn('maint: %s' % warning)

    if not result['changed']:
        msg = 'maintenance already %s; nothing to change' % describe(before)
        if params['state'] == 'on' and before['active'] and params['extend'] != 'always':
            msg += ' (extend=%s keeps the window end)' % params['extend']
    else:
        verb = 'would turn' if module.check_mode else 'turned'
        msg = '%s maintenance %s; found: %s' % (verb, describe(after), ', '.join(reasons))
    result.update(msg=msg, diff=dict(before=before, after=after))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
