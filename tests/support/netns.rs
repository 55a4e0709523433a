//! The end-to-end lab: a web server host and two clients, each a namespace of the test kit
//! (`maint_testkit::netns`), joined by plain veth pairs.
//!
//!   public client  198.51.100.10  2001:db8:100::10 ──veth── 198.51.100.1  2001:db8:100::1  server
//!   office client  203.0.113.10   2001:db8:113::10 ──veth── 203.0.113.1   2001:db8:113::1  server
//!
//! Documentation prefixes only.

use std::process::Output;

use maint_testkit::netns::{link, End, Netns};

/// One host of the lab: its namespace's name and its addresses.
pub struct Host {
    pub ns: String,
    pub v4: &'static str,
    pub v6: &'static str,
}

pub struct Lab {
    /// The namespaces, removed (with everything running inside) when the lab is dropped.
    namespaces: Vec<Netns>,
    pub server: Host,
    pub public: Host,
    pub office: Host,
    /// The server's addresses as each client reaches it.
    pub server_public_v4: &'static str,
    pub server_public_v6: &'static str,
    pub server_office_v4: &'static str,
}

impl Lab {
    pub fn new() -> Lab {
        let (server, public, office) = (Netns::new("srv"), Netns::new("pub"), Netns::new("off"));
        link(
            End {
                ns: &server,
                ifname: "pub0",
                v4: "198.51.100.1/24",
                v6: "2001:db8:100::1/64",
            },
            End {
                ns: &public,
                ifname: "eth0",
                v4: "198.51.100.10/24",
                v6: "2001:db8:100::10/64",
            },
        );
        link(
            End {
                ns: &server,
                ifname: "off0",
                v4: "203.0.113.1/24",
                v6: "2001:db8:113::1/64",
            },
            End {
                ns: &office,
                ifname: "eth0",
                v4: "203.0.113.10/24",
                v6: "2001:db8:113::10/64",
            },
        );
        Lab {
            server: Host {
                ns: server.name.clone(),
                v4: "198.51.100.1",
                v6: "2001:db8:100::1",
            },
            public: Host {
                ns: public.name.clone(),
                v4: "198.51.100.10",
                v6: "2001:db8:100::10",
            },
            office: Host {
                ns: office.name.clone(),
                v4: "203.0.113.10",
                v6: "2001:db8:113::10",
            },
            namespaces: vec![server, public, office],
            server_public_v4: "198.51.100.1",
            server_public_v6: "2001:db8:100::1",
            server_office_v4: "203.0.113.1",
        }
    }

    fn netns(&self, name: &str) -> &Netns {
        self.namespaces
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no namespace {name} in this lab"))
    }

    /// Runs a command in a namespace and insists it succeeds.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        self.netns(ns).exec(args)
    }

    /// Runs a command in a namespace; the caller judges the outcome.
    pub fn run(&self, ns: &str, args: &[&str]) -> Output {
        self.netns(ns).run(args)
    }

    /// Starts a long-running process in a namespace; dropping the lab kills it. Returns its
    /// pid.
    pub fn spawn(&self, ns: &str, args: &[&str]) -> u32 {
        self.netns(ns).spawn(args)
    }

    /// Runs `f` on a thread that has joined namespace `ns`, so sockets it opens live there.
    pub fn in_ns<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        self.netns(ns).thread(f)
    }

    /// The server namespace's nftables ruleset, for checks that maint touched nothing else.
    pub fn ruleset(&self) -> String {
        self.netns(&self.server.ns).ruleset()
    }
}
