//! `maint check`: the config, the firewall, the redirect target, the server and the
//! certificates, each as a finding; nothing changes.

use maint_backends::PortMap;

use super::fail::Result;
use super::{firewall, probe, target, Controller};
use crate::control::{self, ControlError, Request};
use crate::finding::Finding;

impl Controller {
    pub fn check(&self) -> Result<Vec<Finding>> {
        let mut out = vec![Finding::ok(format!(
            "config {} is valid",
            self.config_path.display()
        ))];
        let (backend, _) = firewall::configured(&self.config)?;
        match backend.preflight() {
            Ok(w) => {
                out.push(Finding::ok(format!("{} is usable", backend.name())));
                out.extend(w.into_iter().map(Finding::warn));
            }
            Err(e) => out.push(Finding::fail(format!("{}: {e}", backend.name()))),
        }
        let mut warnings = Vec::new();
        let ports = firewall::ports(&self.config, &mut warnings);
        out.push(Finding::ok(format!("redirects: {}", PortMap::list(&ports))));
        out.extend(warnings.into_iter().map(Finding::warn));
        out.push(match target::check_privileged(&ports) {
            Ok(()) => Finding::ok("the server's ports can be bound by root only".into()),
            Err(e) => Finding::fail(format!("{:#}", e.error())),
        });
        out.push(match self.config.server.run_as() {
            Ok(u) => match u.fallback {
                None => Finding::ok(format!("the server runs as {:?}", u.user.name)),
                Some(why) => Finding::warn(why),
            },
            Err(e) => Finding::fail(format!("{e:#}")),
        });
        out.extend(crate::certs::check(&self.config.tls));
        match control::ask(&self.config.paths.control_socket(), &Request::Status) {
            Ok(s) => match probe::http(&self.config, &s)
                .and_then(|()| target::check_owner(&PortMap::servers(&ports), s.pid))
            {
                Ok(()) => out.push(Finding::ok(format!(
                    "maintenance server (pid {}) answers on port {}",
                    s.pid, s.http_port
                ))),
                Err(e) => out.push(Finding::fail(format!("{e:#}"))),
            },
            Err(ControlError::NotRunning(_)) => out.push(Finding::warn(
                "no maintenance server is running; `maint on` will start one".into(),
            )),
            Err(e) => out.push(Finding::fail(format!("{e}"))),
        }
        out.extend(super::proxies::findings(&self.config, &ports));
        Ok(out)
    }
}
