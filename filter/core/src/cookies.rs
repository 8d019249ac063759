//! Reading request `Cookie` headers and response `Set-Cookie` headers, and writing the
//! stickiness cookie's `Set-Cookie`. Request parsing works on raw bytes and allocates nothing:
//! it runs on every request, and the header may hold anything a client sends.

use std::time::UNIX_EPOCH;

use crate::state::{CookieSettings, SameSite};

/// Iterates over the `name=value` pairs of a request `Cookie` header, trimming optional
/// whitespace and the quotes of a quoted value. Pairs without `=` are skipped.
pub fn request_cookies(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|&b| b == b';').filter_map(|pair| {
        let (name, value) = split_pair(pair)?;
        let value = match value {
            [b'"', quoted @ .., b'"'] => quoted,
            _ => value,
        };
        (!name.is_empty()).then_some((name, value))
    })
}

/// A request's `Cookie` lines as one header, as RFC 6265 writes it: HTTP/1.1 clients may send
/// several lines and HTTP/2 clients send crumbs, and a cookie counts in any of them. Borrowed
/// when there is one line (every browser's case); `None` when there is none.
pub fn one_cookie_header<V: AsRef<[u8]>>(lines: &[V]) -> Option<std::borrow::Cow<'_, [u8]>> {
    match lines {
        [] => None,
        [line] => Some(std::borrow::Cow::Borrowed(line.as_ref())),
        _ => Some(std::borrow::Cow::Owned(
            lines.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(&b"; "[..]),
        )),
    }
}

/// `name=value`, both trimmed; `None` without `=`.
fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    let (name, value) = pair.split_at_checked(eq)?;
    Some((trim(name), trim(value.get(1..)?)))
}

/// Strips the optional whitespace of RFC 6265 (spaces and tabs only).
fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// True if `name` is an RFC 6265 cookie name (an RFC 7230 token).
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// True if `path` is usable as a cookie `Path` attribute.
pub fn is_cookie_path(path: &str) -> bool {
    path.starts_with('/') && path.len() <= 1024 && path.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';')
}

/// True if `domain` is usable as a cookie `Domain` attribute: a host name (letters, digits,
/// hyphens and dots, an optional leading dot), at most 253 characters.
pub fn is_cookie_domain(domain: &str) -> bool {
    let host = domain.strip_prefix('.').unwrap_or(domain);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// True if `name` can name the session header: a lowercase HTTP token, not one of the headers
/// the filter or HTTP itself gives another meaning.
pub fn is_session_header(name: &str) -> bool {
    const TAKEN: [&str; 8] = [
        "cookie",
        "set-cookie",
        "host",
        "authorization",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
    ];
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && !name.starts_with(':')
        && !TAKEN.contains(&name)
}

/// How long a cookie lives, as its `Set-Cookie` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// No `Expires`/`Max-Age`: lives until the browser session ends.
    Session,
    /// Lives until this Unix time (seconds).
    Until(u64),
}

/// What a response's `Set-Cookie` does to the application cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppCookieChange {
    Set(Lifetime),
    Deleted,
}

/// Reads one `Set-Cookie` value: `Some` if it sets or deletes the cookie `name`.
/// Follows RFC 6265 section 5.2: `Max-Age` wins over `Expires`; a non-positive `Max-Age` or a
/// past `Expires` deletes the cookie; an attribute that does not parse is ignored.
pub fn app_cookie_change(set_cookie: &[u8], name: &str, now: u64) -> Option<AppCookieChange> {
    let mut parts = set_cookie.split(|&b| b == b';');
    let pair = parts.next()?;
    let (cookie, _) = split_pair(pair)?;
    if cookie != name.as_bytes() {
        return None;
    }
    let mut max_age: Option<i64> = None;
    let mut expires: Option<u64> = None;
    for attribute in parts {
        let (key, value) = split_pair(attribute).unwrap_or((trim(attribute), &b""[..]));
        if key.eq_ignore_ascii_case(b"max-age") {
            max_age = parse_max_age(value).or(max_age);
        } else if key.eq_ignore_ascii_case(b"expires") {
            expires = parse_cookie_date(value).or(expires);
        }
    }
    let until = match (max_age, expires) {
        (Some(secs), _) if secs <= 0 => return Some(AppCookieChange::Deleted),
        (Some(secs), _) => now.saturating_add(secs.unsigned_abs()),
        (None, Some(at)) if at <= now => return Some(AppCookieChange::Deleted),
        (None, Some(at)) => at,
        (None, None) => return Some(AppCookieChange::Set(Lifetime::Session)),
    };
    Some(AppCookieChange::Set(Lifetime::Until(until)))
}

/// `Max-Age` delta-seconds, optionally negative; saturates instead of overflowing.
fn parse_max_age(value: &[u8]) -> Option<i64> {
    let (negative, digits) = match value.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, value),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let magnitude = digits.iter().fold(0i64, |acc, d| {
        acc.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    Some(if negative { -magnitude } else { magnitude })
}

/// An `Expires` date as Unix seconds: the three HTTP date forms, and the Netscape form
/// `Wed, 21-Oct-2015 07:28:00 GMT` that many frameworks still send.
fn parse_cookie_date(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let parsed = httpdate::parse_http_date(text).or_else(|_| httpdate::parse_http_date(&text.replace('-', " ")));
    // Dates before 1970 are in the past: 0 deletes the cookie.
    Some(parsed.ok()?.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// 9999-12-31T23:59:59Z, the last instant an HTTP date can name.
const LATEST_HTTP_DATE: u64 = 253_402_300_799;

/// Builds the `Set-Cookie` value for the stickiness cookie. `until` mirrors the expiry sealed in
/// the value into `Max-Age` and `Expires`; `None` makes a browser-session cookie.
pub fn set_cookie(settings: &CookieSettings, value: &str, now: u64, until: Option<u64>) -> String {
    let expiry = until.map(|until| (until.saturating_sub(now), until));
    format_cookie(settings, value, expiry)
}

/// Builds the `Set-Cookie` value that deletes the stickiness cookie.
pub fn delete_cookie(settings: &CookieSettings) -> String {
    format_cookie(settings, "", Some((0, 0)))
}

/// The settings of the CORS twin of the cookie `settings` describe: `<name>CORS`,
/// `SameSite=None; Secure`, every other attribute the same.
pub fn twin_settings(settings: &CookieSettings) -> CookieSettings {
    CookieSettings {
        name: CookieSettings::twin_name(&settings.name),
        secure: true,
        same_site: SameSite::None,
        cors_twin: false,
        ..settings.clone()
    }
}

fn format_cookie(settings: &CookieSettings, value: &str, expiry: Option<(u64, u64)>) -> String {
    let mut cookie = format!("{}={}; Path={}", settings.name, value, settings.path);
    if let Some(domain) = &settings.domain {
        cookie.push_str("; Domain=");
        cookie.push_str(domain);
    }
    if let Some((max_age, until)) = expiry {
        // httpdate formats years up to 9999; later dates are written as that.
        let until = until.min(LATEST_HTTP_DATE);
        let at = UNIX_EPOCH
            .checked_add(std::time::Duration::from_secs(until))
            .unwrap_or(UNIX_EPOCH);
        cookie.push_str(&format!("; Max-Age={max_age}; Expires={}", httpdate::fmt_http_date(at)));
    }
    if settings.http_only {
        cookie.push_str("; HttpOnly");
    }
    if settings.secure {
        cookie.push_str("; Secure");
    }
    cookie.push_str(match settings.same_site {
        SameSite::Strict => "; SameSite=Strict",
        SameSite::Lax => "; SameSite=Lax",
        SameSite::None => "; SameSite=None",
    });
    if settings.partitioned {
        cookie.push_str("; Partitioned");
    }
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_set_cookie_is_read_and_followed_without_panic(header in proptest::collection::vec(any::<u8>(), 0..200), max_age in any::<u64>(), now in any::<u64>()) {
            let _ = app_cookie_change(&header, "session", now);
            let text = format!("session=x; Max-Age={max_age}");
            if let Some(AppCookieChange::Set(Lifetime::Until(until))) = app_cookie_change(text.as_bytes(), "session", now) {
                let _ = set_cookie(&CookieSettings::default(), "v", now, Some(until));
            }
        }
    }

    fn pairs(header: &[u8]) -> Vec<(String, String)> {
        request_cookies(header)
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn request_cookie_pairs_are_split_and_trimmed() {
        assert_eq!(
            pairs(b"a=1; session=eyJ.x-y=; \tAWSELB=\"q\" ;junk; =nameless;b="),
            vec![
                ("a".into(), "1".into()),
                ("session".into(), "eyJ.x-y=".into()),
                ("AWSELB".into(), "q".into()),
                ("b".into(), "".into()),
            ]
        );
        assert!(pairs(b"").is_empty());
        assert_eq!(
            pairs(b"\xff\xfe=\x80; x=\xc3"),
            vec![
                ("\u{fffd}\u{fffd}".into(), "\u{fffd}".into()),
                ("x".into(), "\u{fffd}".into())
            ]
        );
    }

    #[test]
    fn cookie_domains_and_session_headers_are_validated() {
        for good in ["example.com", ".example.com", "a-b.c1.io", "localhost"] {
            assert!(is_cookie_domain(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "a b.com",
            "a;b",
            "exa\r\nmple.com",
            "é.fr",
        ] {
            assert!(!is_cookie_domain(bad), "{bad:?}");
        }
        for good in ["x-sticky-session", "session", "x_s.1"] {
            assert!(is_session_header(good), "{good}");
        }
        for bad in [
            "",
            "X-Upper",
            "cookie",
            "set-cookie",
            "host",
            "a b",
            "a:b",
            ":path",
            "a\r\n",
        ] {
            assert!(!is_session_header(bad), "{bad:?}");
        }
    }

    #[test]
    fn cookie_names_are_tokens() {
        for good in ["AWSELB", "session", "a-b_c.d!#$%&'*+^`|~"] {
            assert!(is_cookie_name(good), "{good}");
        }
        for bad in ["", "a;b", "a,b", "a b", "a\r\nb", "é", "a=b", "a\"b", "(a)", "a\tb"] {
            assert!(!is_cookie_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn app_cookie_lifetime_is_read_like_a_browser() {
        let now = 1_700_000_000;
        let cases: [(&[u8], Option<AppCookieChange>); 13] = [
            (
                b"session=abc; HttpOnly; Path=/",
                Some(AppCookieChange::Set(Lifetime::Session)),
            ),
            (
                b"session=abc; Max-Age=600; Path=/",
                Some(AppCookieChange::Set(Lifetime::Until(now + 600))),
            ),
            (
                b"session=abc; Expires=Wed, 15 Nov 2023 22:23:20 GMT",
                Some(AppCookieChange::Set(Lifetime::Until(1_700_087_000))),
            ),
            (
                b"session=abc; Expires=Wed, 15 Nov 2023 22:23:20 GMT; Max-Age=5",
                Some(AppCookieChange::Set(Lifetime::Until(now + 5))),
            ),
            (
                b"session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/",
                Some(AppCookieChange::Deleted),
            ),
            (
                b"session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
                Some(AppCookieChange::Deleted),
            ),
            (b"session=x; Max-Age=-1", Some(AppCookieChange::Deleted)),
            (
                b"session=x; expires=Thu, 16-Nov-2023 22:23:20 GMT",
                Some(AppCookieChange::Set(Lifetime::Until(1_700_173_400))),
            ),
            (
                b"session=x; Max-Age=soon; Expires=never",
                Some(AppCookieChange::Set(Lifetime::Session)),
            ),
            (b" session =x", Some(AppCookieChange::Set(Lifetime::Session))),
            (b"session", None),
            (b"other=abc; Max-Age=600", None),
            (b"\xff\xfe", None),
        ];
        for (header, expected) in cases {
            assert_eq!(
                app_cookie_change(header, "session", now),
                expected,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn stickiness_cookie_attributes() {
        let settings = CookieSettings::default();
        let issued = set_cookie(&settings, "VALUE", 1_700_000_000, Some(1_700_000_600));
        for part in [
            "AWSELB=VALUE",
            "Path=/",
            "HttpOnly",
            "SameSite=Lax",
            "Max-Age=600",
            "Expires=Tue, 14 Nov 2023 22:23:20 GMT",
        ] {
            assert!(issued.contains(part), "{issued} lacks {part}");
        }
        assert!(!issued.contains("Secure"));
        let session = set_cookie(&settings, "VALUE", 1_700_000_000, None);
        assert!(
            !session.contains("Max-Age") && !session.contains("Expires"),
            "{session}"
        );
        let secure = CookieSettings {
            secure: true,
            same_site: SameSite::None,
            ..CookieSettings::default()
        };
        let issued = set_cookie(&secure, "V", 0, None);
        assert!(
            issued.contains("Secure") && issued.contains("SameSite=None"),
            "{issued}"
        );
        let far = set_cookie(&settings, "V", 0, Some(u64::MAX));
        assert!(far.contains("Expires=Fri, 31 Dec 9999 23:59:59 GMT"), "{far}");
        let everything = CookieSettings {
            name: "SID".into(),
            path: "/app".into(),
            domain: Some("example.com".into()),
            secure: true,
            partitioned: true,
            cors_twin: true,
            ..CookieSettings::default()
        };
        let issued = set_cookie(&everything, "V", 0, None);
        assert_eq!(
            issued,
            "SID=V; Path=/app; Domain=example.com; HttpOnly; Secure; SameSite=Lax; Partitioned"
        );
        let twin = set_cookie(&twin_settings(&everything), "V", 0, None);
        assert_eq!(
            twin,
            "SIDCORS=V; Path=/app; Domain=example.com; HttpOnly; Secure; SameSite=None; Partitioned"
        );
        let deleted = delete_cookie(&settings);
        assert!(
            deleted.starts_with("AWSELB=;") && deleted.contains("Max-Age=0") && deleted.contains("1970"),
            "{deleted}"
        );
    }
}
