//! Reading request `Cookie` headers and response `Set-Cookie` headers, and writing the
//! stickiness cookie's `Set-Cookie`. Request parsing works on raw bytes and allocates nothing:
//! it runs on every request, and the header may hold anything a client sends.

use cookie::{Cookie, Expiration};
use time::{Duration, OffsetDateTime};

use crate::state::{CookieSettings, SameSite};

/// Iterates over the `name=value` pairs of a request `Cookie` header, trimming optional
/// whitespace and the quotes of a quoted value. Pairs without `=` are skipped.
pub fn request_cookies(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|&b| b == b';').filter_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let name = trim(&pair[..eq]);
        let mut value = trim(&pair[eq + 1..]);
        if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
            value = &value[1..value.len() - 1];
        }
        (!name.is_empty()).then_some((name, value))
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

/// True if `name` is an RFC 6265 cookie name (an RFC 7230 token).
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// True if `path` is usable as a cookie `Path` attribute.
pub fn is_cookie_path(path: &str) -> bool {
    path.starts_with('/') && path.len() <= 1024 && path.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';')
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
/// `Max-Age` wins over `Expires` (RFC 6265 5.3); a non-positive `Max-Age` or a past `Expires`
/// deletes the cookie.
pub fn app_cookie_change(set_cookie: &[u8], name: &str, now: u64) -> Option<AppCookieChange> {
    let text = std::str::from_utf8(set_cookie).ok()?;
    let cookie = Cookie::parse(text).ok()?;
    if cookie.name() != name {
        return None;
    }
    let now_i = i64::try_from(now).unwrap_or(i64::MAX);
    if let Some(max_age) = cookie.max_age() {
        let secs = max_age.whole_seconds();
        if secs <= 0 {
            return Some(AppCookieChange::Deleted);
        }
        return Some(AppCookieChange::Set(Lifetime::Until(now.saturating_add(secs.unsigned_abs()))));
    }
    match cookie.expires() {
        Some(Expiration::DateTime(at)) => {
            let at = at.unix_timestamp();
            if at <= now_i {
                Some(AppCookieChange::Deleted)
            } else {
                Some(AppCookieChange::Set(Lifetime::Until(at.unsigned_abs())))
            }
        }
        Some(Expiration::Session) | None => Some(AppCookieChange::Set(Lifetime::Session)),
    }
}

/// Builds the `Set-Cookie` value for the stickiness cookie. `until` mirrors the expiry sealed in
/// the value into `Max-Age` and `Expires`; `None` makes a browser-session cookie.
pub fn set_cookie(settings: &CookieSettings, value: &str, now: u64, until: Option<u64>) -> String {
    let mut cookie = base_cookie(settings, value);
    if let Some(until) = until {
        let max_age = until.saturating_sub(now);
        cookie.set_max_age(Duration::seconds(i64::try_from(max_age).unwrap_or(i64::MAX)));
        if let Ok(at) = OffsetDateTime::from_unix_timestamp(i64::try_from(until).unwrap_or(i64::MAX)) {
            cookie.set_expires(at);
        }
    }
    cookie.to_string()
}

/// Builds the `Set-Cookie` value that deletes the stickiness cookie.
pub fn delete_cookie(settings: &CookieSettings) -> String {
    let mut cookie = base_cookie(settings, "");
    cookie.set_max_age(Duration::ZERO);
    cookie.set_expires(OffsetDateTime::UNIX_EPOCH);
    cookie.to_string()
}

fn base_cookie<'a>(settings: &'a CookieSettings, value: &'a str) -> Cookie<'a> {
    let mut cookie = Cookie::new(settings.name.as_str(), value);
    cookie.set_path(settings.path.as_str());
    cookie.set_http_only(settings.http_only);
    if settings.secure {
        cookie.set_secure(true);
    }
    cookie.set_same_site(match settings.same_site {
        SameSite::Strict => cookie::SameSite::Strict,
        SameSite::Lax => cookie::SameSite::Lax,
        SameSite::None => cookie::SameSite::None,
    });
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(header: &[u8]) -> Vec<(String, String)> {
        request_cookies(header)
            .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned()))
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
        assert_eq!(pairs(b"\xff\xfe=\x80; x=\xc3"), vec![("\u{fffd}\u{fffd}".into(), "\u{fffd}".into()), ("x".into(), "\u{fffd}".into())]);
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
        let cases: [(&[u8], Option<AppCookieChange>); 9] = [
            (b"session=abc; HttpOnly; Path=/", Some(AppCookieChange::Set(Lifetime::Session))),
            (b"session=abc; Max-Age=600; Path=/", Some(AppCookieChange::Set(Lifetime::Until(now + 600)))),
            (
                b"session=abc; Expires=Wed, 15 Nov 2023 22:23:20 GMT",
                Some(AppCookieChange::Set(Lifetime::Until(1_700_087_000))),
            ),
            (b"session=abc; Expires=Wed, 15 Nov 2023 22:23:20 GMT; Max-Age=5", Some(AppCookieChange::Set(Lifetime::Until(now + 5)))),
            (b"session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/", Some(AppCookieChange::Deleted)),
            (b"session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT", Some(AppCookieChange::Deleted)),
            (b"session=x; Max-Age=-1", Some(AppCookieChange::Deleted)),
            (b"other=abc; Max-Age=600", None),
            (b"\xff\xfe", None),
        ];
        for (header, expected) in cases {
            assert_eq!(app_cookie_change(header, "session", now), expected, "{}", String::from_utf8_lossy(header));
        }
    }

    #[test]
    fn stickiness_cookie_attributes() {
        let settings = CookieSettings::default();
        let issued = set_cookie(&settings, "VALUE", 1_700_000_000, Some(1_700_000_600));
        for part in ["AWSELB=VALUE", "Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=600", "Expires=Tue, 14 Nov 2023 22:23:20 GMT"] {
            assert!(issued.contains(part), "{issued} lacks {part}");
        }
        assert!(!issued.contains("Secure"));
        let session = set_cookie(&settings, "VALUE", 1_700_000_000, None);
        assert!(!session.contains("Max-Age") && !session.contains("Expires"), "{session}");
        let secure = CookieSettings { secure: true, same_site: SameSite::None, ..CookieSettings::default() };
        let issued = set_cookie(&secure, "V", 0, None);
        assert!(issued.contains("Secure") && issued.contains("SameSite=None"), "{issued}");
        let deleted = delete_cookie(&settings);
        assert!(deleted.starts_with("AWSELB=;") && deleted.contains("Max-Age=0") && deleted.contains("1970"), "{deleted}");
    }
}
