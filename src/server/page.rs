//! What the maintenance server answers: the page in HTML, JSON or plain text, its headers, and
//! the assets a custom page may use.
//!
//! Everything that can be rendered ahead is rendered when the page is built (at start, on
//! SIGHUP, when `maint on` announces a new window), so answering a request is a lookup and a
//! few header copies. Only JSON's `retry_after` counts down and is formatted per request.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::hold::{Verdict, WAIT_PATH};
use super::negotiate::{negotiate, Format};
use crate::config;
use crate::control::{Window, MARKER};
use crate::time::{httpdate, now_secs, rfc3339, timestamp};

/// Assets live under this path; every other path gets the maintenance page.
pub const ASSET_PREFIX: &str = "/.maint/";
/// Assets above this total are refused: they are held in memory.
const ASSETS_MAX_BYTES: u64 = 32 * 1024 * 1024;

const BUILTIN_TEMPLATE: &str = include_str!("builtin.html");

/// What is read from disk: the page settings, the template text and the assets. Reloaded on
/// SIGHUP; a window change re-renders from it without touching the disk.
#[derive(Clone)]
pub struct Content {
    settings: config::Page,
    template: String,
    assets: HashMap<String, Asset>,
}

#[derive(Clone)]
struct Asset {
    body: Bytes,
    content_type: HeaderValue,
}

/// Whose rights the page's files are read with. At start the server is still root, so it
/// checks each file against the user it is about to become: what it serves must not depend
/// on how it was started (a root-only file served after a restart, refused on reload).
#[derive(Clone, Copy)]
pub enum Reader<'a> {
    /// The process's own rights (already unprivileged: the kernel decides).
    Itself,
    /// Root reading on behalf of this user.
    As(&'a nix::unistd::User),
}

impl Reader<'_> {
    /// Refuses, naming the file, what the user could not read itself.
    fn check(&self, path: &Path, meta: &std::fs::Metadata) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let Reader::As(user) = self else {
            return Ok(());
        };
        let mode = meta.mode();
        // The server drops to the user's primary group only, so that is the group to check.
        let readable = (meta.uid() == user.uid.as_raw() && mode & 0o400 != 0)
            || (meta.gid() == user.gid.as_raw() && mode & 0o040 != 0)
            || mode & 0o004 != 0;
        if !readable {
            bail!(
                "{} is not readable by the server's user {:?} (mode {:o}, owner uid {}); make it \
                 readable by that user, or remove it",
                path.display(),
                user.name,
                mode & 0o777,
                meta.uid()
            );
        }
        Ok(())
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        self.check(path, &meta)?;
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

impl Content {
    pub fn load(settings: &config::Page, reader: Reader<'_>) -> Result<Content> {
        let template = match &settings.template {
            Some(path) => String::from_utf8(
                reader
                    .read(path)
                    .with_context(|| format!("cannot read page template {}", path.display()))?,
            )
            .with_context(|| format!("page template {} is not UTF-8", path.display()))?,
            None => BUILTIN_TEMPLATE.to_string(),
        };
        let assets = match &settings.assets {
            Some(dir) => load_assets(dir, reader)?,
            None => HashMap::new(),
        };
        let content = Content {
            settings: settings.clone(),
            template,
            assets,
        };
        // Render once now so a broken template is an error at load, not a 500 per request.
        Rendered::render(&content, &Window::default())?;
        Ok(content)
    }
}

/// Every regular file inside `dir`, by its URL path. A symlink is followed only to a regular
/// file inside `dir` itself; one that leads out of it (to `/etc/shadow`, say), to a
/// directory, or to anything but a regular file is refused, naming it.
fn load_assets(dir: &Path, reader: Reader<'_>) -> Result<HashMap<String, Asset>> {
    let root = dir
        .canonicalize()
        .with_context(|| format!("cannot read assets directory {}", dir.display()))?;
    let mut assets = HashMap::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d)
            .with_context(|| format!("cannot read assets directory {}", d.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if kind.is_symlink() {
                let target = path.canonicalize().with_context(|| {
                    format!("asset {} is a symlink that leads nowhere", path.display())
                })?;
                if !target.starts_with(&root) || !target.is_file() {
                    bail!(
                        "asset {} is a symlink to {}: maint serves only regular files inside \
                         the assets directory {}; copy the file in instead",
                        path.display(),
                        target.display(),
                        dir.display()
                    );
                }
            } else if !kind.is_file() {
                bail!(
                    "asset {} is not a regular file; maint serves only regular files",
                    path.display()
                );
            }
            let body = reader
                .read(&path)
                .with_context(|| format!("cannot read asset {}", path.display()))?;
            total += body.len() as u64;
            if total > ASSETS_MAX_BYTES {
                bail!(
                    "assets in {} exceed {} MiB; they are held in memory, keep them small",
                    dir.display(),
                    ASSETS_MAX_BYTES >> 20
                );
            }
            let rel = path.strip_prefix(dir).expect("walked from dir");
            let url = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let mime = mime_guess::from_path(&path).first_or_octet_stream();
            assets.insert(
                url,
                Asset {
                    body: Bytes::from(body),
                    content_type: HeaderValue::from_str(mime.as_ref())
                        .unwrap_or(HeaderValue::from_static("application/octet-stream")),
                },
            );
        }
    }
    Ok(assets)
}

/// The rendered answers for one window.
pub struct Rendered {
    status: StatusCode,
    html: Bytes,
    text: Bytes,
    retry_after: HeaderValue,
    /// Fixed parts of the JSON answer; `retry_after` is added per request.
    json: JsonParts,
    assets: HashMap<String, Asset>,
}

#[derive(Clone, Serialize)]
struct JsonParts {
    status: &'static str,
    code: u16,
    reason: String,
    until: Option<String>,
    #[serde(skip)]
    until_secs: Option<u64>,
    #[serde(skip)]
    default_retry: u64,
}

#[derive(Serialize)]
struct JsonAnswer<'a> {
    #[serde(flatten)]
    parts: &'a JsonParts,
    retry_after: u64,
}

impl Rendered {
    pub fn render(content: &Content, window: &Window) -> Result<Rendered> {
        let s = &content.settings;
        let status = StatusCode::from_u16(s.status).context("page.status")?;
        let reason = window
            .reason
            .clone()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| s.reason.clone());
        let until = window.until.map(rfc3339);
        let eta = window.until.map(human_time);
        let retry_after = match window.until {
            Some(u) => HeaderValue::from_str(&httpdate(u)).expect("HTTP dates are ASCII"),
            None => HeaderValue::from(s.retry_after),
        };
        let mut env = minijinja::Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env.add_template("page", &content.template)
            .with_context(|| template_name(content))?;
        let ctx = minijinja::context! {
            title => &s.title,
            reason => &reason,
            contact => &s.contact,
            contact_href => contact_href(&s.contact),
            until => &until,
            until_unix => window.until,
            eta => &eta,
            retry_after => s.retry_after,
            assets => minijinja::Value::from_safe_string(ASSET_PREFIX.to_string()),
        };
        let mut html = env
            .get_template("page")?
            .render(ctx)
            .with_context(|| template_name(content))?;
        let script = page_script(window.until);
        match html.rfind("</body>") {
            Some(at) => html.insert_str(at, &script),
            None => html.push_str(&script),
        }

        let mut text = format!("{}\n\n{}\n", s.title, reason);
        if let Some(eta) = &eta {
            text.push_str(&format!("Expected back: {eta}\n"));
        }
        if !s.contact.is_empty() {
            text.push_str(&format!("Contact: {}\n", s.contact));
        }

        Ok(Rendered {
            status,
            html: Bytes::from(html),
            text: Bytes::from(text),
            retry_after,
            json: JsonParts {
                status: "maintenance",
                code: status.as_u16(),
                reason,
                until,
                until_secs: window.until,
                default_retry: s.retry_after,
            },
            assets: content.assets.clone(),
        })
    }

    /// The answer to any request. Never fails: a maintenance server that errors is worse
    /// than none.
    pub fn respond<B>(&self, req: &Request<B>) -> Answer {
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        self.answer(req.method(), req.uri().path(), accept)
    }

    /// The same answer from a request's parts, for the HTTP/1.1 path that parses requests
    /// itself (see `h1`).
    pub fn answer(&self, method: &Method, path: &str, accept: Option<&str>) -> Answer {
        // A pass link that let nobody through (unknown, revoked, ended) gets the page.
        if let Some(name) = path
            .strip_prefix(ASSET_PREFIX)
            .filter(|_| !path.starts_with(crate::pass::LINK_PREFIX))
        {
            return self.asset(method, name);
        }
        let (body, content_type, served) = match negotiate(accept.unwrap_or("*/*")) {
            Format::Html => (self.html.clone(), "text/html; charset=utf-8", Served::Html),
            Format::Text => (self.text.clone(), "text/plain; charset=utf-8", Served::Text),
            Format::Json => (self.json_body(), "application/json", Served::Json),
        };
        let mut answer = finish(
            method,
            self.status,
            body,
            HeaderValue::from_static(content_type),
        );
        answer.served = served;
        answer
            .headers
            .insert(header::RETRY_AFTER, self.retry_after.clone());
        answer
            .headers
            .insert(header::VARY, HeaderValue::from_static("Accept"));
        answer
    }

    fn json_body(&self) -> Bytes {
        let retry_after = match self.json.until_secs {
            Some(u) => u.saturating_sub(now_secs()),
            None => self.json.default_retry,
        };
        let mut body = serde_json::to_vec(&JsonAnswer {
            parts: &self.json,
            retry_after,
        })
        .expect("plain data serialises");
        body.push(b'\n');
        Bytes::from(body)
    }

    fn asset(&self, method: &Method, name: &str) -> Answer {
        Answer {
            served: Served::Asset,
            ..self.asset_or_not_found(method, name)
        }
    }

    fn asset_or_not_found(&self, method: &Method, name: &str) -> Answer {
        // Asset URLs are percent-encoded (`a%20b.css` is the file `a b.css`); a name that does
        // not decode to UTF-8 names no asset.
        let name = percent_encoding::percent_decode_str(name).decode_utf8();
        match name.ok().and_then(|n| self.assets.get(n.as_ref())) {
            Some(a) => finish(
                method,
                StatusCode::OK,
                a.body.clone(),
                a.content_type.clone(),
            ),
            None => finish(
                method,
                StatusCode::NOT_FOUND,
                Bytes::from_static(b"no such asset\n"),
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        }
    }
}

/// The answer to a held request: 204 and whether maintenance goes on. When it is over the
/// connection must close too, so the page's next request opens a new one, which reaches the
/// site; each path says so its own way (`connection: close`, or GOAWAY on HTTP/2).
pub fn wait_answer(verdict: Verdict) -> Answer {
    let mut headers = http::HeaderMap::with_capacity(2);
    headers.insert(MARKER, HeaderValue::from_static(verdict.header()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Answer {
        status: StatusCode::NO_CONTENT,
        headers,
        body: Bytes::new(),
        served: Served::Wait,
    }
}

/// How a request was answered, for the request counters: the values of
/// [`crate::control::ANSWER_FORMATS`], in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    Html,
    Json,
    Text,
    Asset,
    Wait,
    /// A pass link that let the visitor through (303 to `/`).
    Pass,
}

/// A response before it is handed to hyper or written out by the HTTP/1.1 path.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    /// Empty for HEAD; `content-length` still says what GET would get.
    pub body: Bytes,
    pub served: Served,
}

impl Answer {
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.body));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        resp
    }
}

/// Common headers; HEAD gets them with an empty body but the length GET would have.
pub(super) fn finish(
    method: &Method,
    status: StatusCode,
    body: Bytes,
    content_type: HeaderValue,
) -> Answer {
    let len = body.len();
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    let mut headers = http::HeaderMap::with_capacity(8);
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(MARKER, HeaderValue::from_static("on"));
    Answer {
        status,
        headers,
        body,
        served: Served::Html,
    }
}

fn template_name(content: &Content) -> String {
    match &content.settings.template {
        Some(p) => format!("page template {}", p.display()),
        None => "built-in page template".into(),
    }
}

/// "2026-12-01 02:00 UTC": what a visitor without script reads on the page. Rounded up to
/// the minute, so it is never earlier than `Retry-After`.
fn human_time(secs: u64) -> String {
    let minute = secs.div_ceil(60).saturating_mul(60);
    timestamp(minute).strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// The script every page gets before `</body>`: the window's end in the visitor's local time,
/// and the return to the site when maintenance ends (see `page.js` and [`super::hold`]).
const PAGE_SCRIPT: &str = include_str!("page.js");

fn page_script(until: Option<u64>) -> String {
    let until_ms = match until {
        Some(u) => u.saturating_mul(1000).to_string(),
        None => "null".into(),
    };
    let wait_path = serde_json::to_string(WAIT_PATH).expect("a string serialises");
    PAGE_SCRIPT
        .replacen("UNTIL_MS", &until_ms, 1)
        .replacen("WAIT_PATH", &wait_path, 1)
}

/// A link for the contact setting: `mailto:` for an address, the URL itself for an
/// `https://` or `mailto:` URL, a host name as `https://`; empty (plain text) otherwise.
fn contact_href(contact: &str) -> String {
    let c = contact.trim();
    if c.is_empty() || c.contains(char::is_whitespace) {
        return String::new();
    }
    if c.starts_with("https://") || c.starts_with("mailto:") {
        return c.to_owned();
    }
    if let Some((local, domain)) = c.split_once('@') {
        if !local.is_empty() && domain.contains('.') && !c.contains(['/', ':']) {
            return format!("mailto:{c}");
        }
        return String::new();
    }
    let host = c.split('/').next().unwrap_or("");
    if host.contains('.') && !c.contains(':') {
        return format!("https://{c}");
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(httpdate(1_796_090_400), "Tue, 01 Dec 2026 02:00:00 GMT");
        assert_eq!(rfc3339(1_796_090_400), "2026-12-01T02:00:00Z");
    }

    #[test]
    fn shipped_example_template_renders() {
        let dir = tempfile::tempdir().unwrap();
        let tpl = dir.path().join("page.html");
        std::fs::write(&tpl, include_str!("../../conf/page.html")).unwrap();
        let settings = config::Page {
            template: Some(tpl),
            contact: "ops@example.org".into(),
            ..config::Page::default()
        };
        let content = Content::load(&settings, Reader::Itself).unwrap();
        let window = Window {
            until: Some(1_796_090_400),
            reason: None,
        };
        let html =
            String::from_utf8(Rendered::render(&content, &window).unwrap().html.to_vec()).unwrap();
        assert!(html.contains("href=\"/.maint/site.css\""), "{html}");
        assert!(
            html.contains("Back <span data-maint-eta>by 2026-12-01 02:00 UTC</span>"),
            "{html}"
        );
        assert!(
            html.contains(r#"Questions: <a href="mailto:ops@example.org">ops@example.org</a>"#),
            "{html}"
        );
    }

    #[test]
    fn contact_links_are_mail_or_https_and_nothing_else() {
        for (contact, href) in [
            ("ops@example.org", "mailto:ops@example.org"),
            ("mailto:ops@example.org", "mailto:ops@example.org"),
            (
                "https://status.example.org/x",
                "https://status.example.org/x",
            ),
            ("status.example.org", "https://status.example.org"),
            ("", ""),
            ("call +1 555 0100", ""),
            ("javascript:alert(1)", ""),
            ("http://status.example.org", ""),
            ("@example.org", ""),
        ] {
            assert_eq!(contact_href(contact), href, "{contact:?}");
        }
    }

    #[test]
    fn reason_is_escaped_in_html() {
        let content = Content::load(&config::Page::default(), Reader::Itself).unwrap();
        let page = Rendered::render(
            &content,
            &Window {
                until: None,
                reason: Some("<script>alert(1)</script>".into()),
            },
        )
        .unwrap();
        let html = String::from_utf8(page.html.to_vec()).unwrap();
        assert!(!html.contains("<script>alert(1)"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
