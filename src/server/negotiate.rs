//! Content negotiation: which representation of the maintenance answer (HTML, JSON or
//! plain text) a client's `Accept` header asks for.

/// Which representation of the page a client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
    Text,
}

/// Picks the representation from an Accept header: highest q wins, then the most specific
/// match, then HTML (browsers send `*/*` too). A client that accepts none of them still gets
/// HTML: a 406 would help nobody during maintenance.
pub fn negotiate(accept: &str) -> Format {
    const OFFERS: [(Format, &str, &str); 3] = [
        (Format::Html, "text", "html"),
        (Format::Json, "application", "json"),
        (Format::Text, "text", "plain"),
    ];
    let mut best = (Format::Html, 0.0f32, -1i8);
    for (format, ty, sub) in OFFERS {
        // The most specific range that matches this offer decides its q (RFC 9110 12.5.1).
        let mut found: Option<(f32, i8)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let (rt, rs) = media.split_once('/').unwrap_or((media, ""));
            let spec = match (rt, rs) {
                _ if rt.eq_ignore_ascii_case(ty) && rs.eq_ignore_ascii_case(sub) => 2,
                _ if rt.eq_ignore_ascii_case(ty) && rs == "*" => 1,
                ("*", "*") => 0,
                _ => continue,
            };
            let q = parts
                .filter_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .or_else(|| p.trim().strip_prefix("Q="))
                })
                .find_map(|v| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if found.is_none_or(|(_, s)| spec > s) {
                found = Some((q, spec));
            }
        }
        if let Some((q, spec)) = found {
            if q > 0.0 && (q > best.1 || (q == best.1 && spec > best.2)) {
                best = (format, q, spec);
            }
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate("*/*"), Format::Html);
        assert_eq!(
            negotiate("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Format::Html
        );
        assert_eq!(negotiate("application/json"), Format::Json);
        assert_eq!(negotiate("application/json, text/plain, */*"), Format::Json);
        assert_eq!(negotiate("text/plain"), Format::Text);
        assert_eq!(
            negotiate("text/*;q=0.5, application/json;q=0.9"),
            Format::Json
        );
        assert_eq!(negotiate("text/html;q=0, text/plain"), Format::Text);
        assert_eq!(negotiate("image/png"), Format::Html);
        assert_eq!(negotiate(""), Format::Html);
    }
}
