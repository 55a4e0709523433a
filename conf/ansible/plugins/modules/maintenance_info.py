#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: maint contributors
# SPDX-License-Identifier: ISC

from __future__ import annotations

DOCUMENTATION = r"""
---
module: maintenance_info
short_description: Read whether maint holds a host in maintenance
version_added: 0.1.0
description:
  - Returns what C(maint --json status) reports on the managed host - whether maintenance is
    on, for which sources, until when, why, and the health of maint's maintenance server.
  - Changes nothing and never reports a change.
author:
  - maint contributors (@maint)
requirements:
  - maint on the managed host (the role C(maint.ops.server) installs it), run as root.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: N/A
  platform:
    platforms: posix
  action_group:
    description: Use C(group/maint.ops.maint) in C(module_defaults) to set O(binary) and
      O(config) once for every maint.ops module.
    support: full
    membership:
      - maint.ops.maint
options:
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
seealso:
  - module: maint.ops.maintenance
"""

EXAMPLES = r"""
- name: Read maint's state
  maint.ops.maintenance_info:
  register: maint

- name: Refuse to deploy while a host is in maintenance
  ansible.builtin.assert:
    that: not maint.status.active
    fail_msg: "{{ inventory_hostname }} is in maintenance until {{ maint.status.until }}: {{ maint.status.reason }}"

- name: Warn about a maintenance server that does not answer
  ansible.builtin.debug:
    msg: "maint's server is down on {{ inventory_hostname }}"
  when: maint.status.active and not (maint.status.server.healthy | default(false))
"""

RETURN = r"""
status:
  description:
    - The object C(maint --json status) prints. See maint's README for every field.
  returned: always
  type: dict
  contains:
    active:
      description: Whether maintenance is on.
      type: bool
      sample: true
    expired:
      description: A window that ended by itself; C(maint.ops.maintenance state=off) tidies it up.
      type: bool
      sample: false
    backend:
      description: The firewall maint uses.
      type: str
      sample: nftables
    table:
      description: maint's nftables table or pf anchor.
      type: str
      sample: maint
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
    ports:
      description: The redirects, public port to server port.
      type: list
      elements: dict
      sample: [{"public": 80, "server": 503}]
    since:
      description: Since when maintenance has been on, across changes (RFC 3339), or null.
      type: str
      sample: "2026-11-22T12:25:51Z"
    on_by:
      description: Who switched maintenance on (C(user), and C(origin) such as ansible, cron, ssh), or null.
      type: dict
      sample: {"user": "alice", "origin": "ansible"}
    kernel_in_sync:
      description: Whether the kernel holds what maint recorded; null when it could not be read.
      type: bool
      sample: true
    until:
      description: When the window ends by itself (RFC 3339), or null for no end.
      type: str
      sample: "2026-11-22T13:10:52Z"
    reason:
      description: The reason given with C(maint on), or null.
      type: str
      sample: Upgrading to 2.4.1
    server:
      description:
        - The maintenance server, or null when none runs; C(healthy), C(pid), C(version),
          C(started) (RFC 3339), C(requests), C(connections), C(connections_total), C(refused_direct),
          C(http_port), C(https_port), C(window).
      type: dict
      sample: {"healthy": true, "pid": 4242, "http_port": 503, "requests": 118}
    drift:
      description: Differences between maint's record and the kernel; empty when they agree.
      type: list
      elements: str
      sample: []
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.maint.ops.plugins.module_utils.maint import COMMON_ARGS, Maint


def main():
    module = AnsibleModule(argument_spec=dict(COMMON_ARGS), supports_check_mode=True)
    module.exit_json(changed=False, status=Maint(module).status())


if __name__ == '__main__':
    main()
