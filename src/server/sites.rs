//! Pages per site: where one host serves several sites, each configured name (`[sites."NAME"]`)
//! gets its own page, and every other request the default one (`[page]`).
//!
//! The page is picked by the name the client asked for: the `Host` header, or the authority
//! of an absolute-form or HTTP/2 request. SNI picks the certificate; browsers send the same
//! name in both. A name is matched exactly, then as `*.` plus its parent domain, as TLS
//! wildcards are (one label).

use std::collections::HashMap;

use anyhow::{Context, Result};

use super::page::{Content, Reader, Rendered};
use crate::config::Config;
use crate::control::Window;

/// One value for the default page and one per configured site name.
#[derive(Clone)]
pub struct Sites<T> {
    default: T,
    by_name: HashMap<String, T>,
}

impl<T> Sites<T> {
    /// The value for a request to `host` (a `Host` header value: a name, perhaps a port).
    pub fn pick(&self, host: Option<&str>) -> &T {
        let Some(name) = host.map(normalize) else {
            return &self.default;
        };
        if let Some(t) = self.by_name.get(name.as_str()) {
            return t;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.by_name.get(format!("*.{parent}").as_str()))
            .unwrap_or(&self.default)
    }
}

/// `Shop.Example.:443` → `shop.example`; an IPv6 literal keeps its brackets.
fn normalize(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Sites<Content> {
    /// Reads the default page and each site's (its settings over `[page]`).
    pub fn load(config: &Config, reader: Reader<'_>) -> Result<Sites<Content>> {
        let default = Content::load(&config.page, reader)?;
        let mut by_name = HashMap::new();
        for name in config.sites.keys() {
            let content = Content::load(&config.page_for(name), reader)
                .with_context(|| format!("the page of site {name:?} ([sites.{name:?}])"))?;
            by_name.insert(name.to_ascii_lowercase(), content);
        }
        Ok(Sites { default, by_name })
    }

    /// Every page rendered for `window`.
    pub fn render(&self, window: &Window) -> Result<Sites<Rendered>> {
        let mut by_name = HashMap::with_capacity(self.by_name.len());
        for (name, content) in &self.by_name {
            by_name.insert(name.clone(), Rendered::render(content, window)?);
        }
        Ok(Sites {
            default: Rendered::render(&self.default, window)?,
            by_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Sites<&'static str> {
        Sites {
            default: "default",
            by_name: HashMap::from([
                ("shop.example".to_string(), "shop"),
                ("*.blog.example".to_string(), "blog"),
            ]),
        }
    }

    #[test]
    fn names_match_exactly_then_by_one_label_wildcard_case_and_port_aside() {
        let s = sites();
        assert_eq!(*s.pick(Some("shop.example")), "shop");
        assert_eq!(*s.pick(Some("SHOP.example.:8080")), "shop");
        assert_eq!(*s.pick(Some("en.blog.example")), "blog");
        assert_eq!(*s.pick(Some("a.en.blog.example")), "default");
        assert_eq!(*s.pick(Some("blog.example")), "default");
        assert_eq!(*s.pick(Some("[2001:db8::1]:443")), "default");
        assert_eq!(*s.pick(None), "default");
        assert_eq!(*s.pick(Some("")), "default");
    }
}
