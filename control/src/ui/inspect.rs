//! The cookie inspector: what a pasted stickiness cookie seals and what the filters make of it
//! now, decided by the filter's own core ([`CompiledListener::inspect`]) on each listener's
//! current state. It shows the key's id, never a key.

use serde_json::{Value, json};
use sticky_core::{CompiledListener, CookieStatus, Rejection};

use crate::service::Service;

/// Why a cookie is not honoured, in words.
fn explain(reason: Rejection) -> &'static str {
    match reason {
        Rejection::Malformed => "not a stickiness cookie this service issues (it does not decode)",
        Rejection::UnsupportedVersion => "issued in a cookie format this version does not read",
        Rejection::UnknownKey => "sealed with a key the service no longer holds (older than the key retention)",
        Rejection::Forged => "does not authenticate: altered, or issued for another listener or policy",
        Rejection::Expired => "expired",
        Rejection::UnknownTarget => "names an instance no longer registered: the next request gets a new one",
        Rejection::UnhealthyTarget => "names an instance that is out of service: the next request gets a new one",
        Rejection::UnreachableTarget => "names an instance Envoy could not reach lately",
    }
}

/// The values to try in `text`: a bare value, or every value of `name=value; …` pairs.
fn candidates(text: &str) -> Vec<(Option<&str>, &str)> {
    let text = text.trim();
    let text = text
        .strip_prefix("Cookie:")
        .or_else(|| text.strip_prefix("cookie:"))
        .unwrap_or(text);
    if !text.contains('=') {
        return vec![(None, text.trim())];
    }
    text.split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(name, value)| (Some(name.trim()), value.trim().trim_matches('"')))
        .filter(|(_, value)| !value.is_empty())
        .take(64)
        .collect()
}

/// Inspects `text` against every listener with a policy, at Unix second `now`.
pub fn inspect(service: &Service, text: &str, now: i64) -> Value {
    let now = u64::try_from(now).unwrap_or(0);
    let listeners: Vec<(String, u16)> = service.read(|inner| {
        inner
            .load_balancers()
            .flat_map(|lb| lb.listeners.keys().map(|port| (lb.name.clone(), *port)))
            .collect()
    });
    let compiled: Vec<(String, u16, CompiledListener)> = listeners
        .into_iter()
        .filter_map(|(lb, port)| {
            let state = service.filter_state(&lb, port)?;
            let listener = CompiledListener::compile(&state).ok()?;
            listener.has_policy().then_some((lb, port, listener))
        })
        .collect();
    let mut first_refusal = None;
    for (name, value) in candidates(text) {
        for (lb, port, listener) in &compiled {
            let Some(inspection) = listener.inspect(value.as_bytes(), now) else {
                continue;
            };
            let Some(sealed) = inspection.sealed else {
                if let CookieStatus::Rejected { reason, .. } = inspection.status {
                    // A value that decodes says more than one that does not.
                    match first_refusal {
                        None => first_refusal = Some((name, reason)),
                        Some((_, Rejection::Malformed)) if reason != Rejection::Malformed => {
                            first_refusal = Some((name, reason));
                        }
                        Some(_) => {}
                    }
                }
                continue;
            };
            let (verdict, reason) = match inspection.status {
                CookieStatus::Valid { .. } => ("valid", None),
                CookieStatus::Rejected { reason, .. } => ("rejected", Some(reason)),
                CookieStatus::Absent => ("rejected", None),
            };
            return json!({
                "verdict": verdict,
                "reason": reason.map(Rejection::as_str),
                "explanation": reason.map_or("pins its requests to the instance it names", explain),
                "cookie_name": name,
                "load_balancer": lb,
                "port": port,
                "key_id": sealed.key_id,
                "issued_at": sealed.issued_at,
                "expires_at": (sealed.expires_at != 0).then_some(sealed.expires_at),
                "session_start": sealed.session_start,
                "target": sealed.target_id,
            });
        }
    }
    if compiled.is_empty() {
        return json!({
            "verdict": "rejected",
            "reason": null,
            "explanation": "no listener has a stickiness policy: no cookie is honoured",
        });
    }
    let reason = first_refusal.map_or(Rejection::Malformed, |(_, reason)| reason);
    json!({
        "verdict": "rejected",
        "reason": reason.as_str(),
        "explanation": explain(reason),
        "cookie_name": first_refusal.and_then(|(name, _)| name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_text_gives_the_values_to_try() {
        assert_eq!(candidates(" abc "), [(None, "abc")]);
        assert_eq!(
            candidates("Cookie: session=x; AWSELB=\"v\"; empty="),
            [(Some("session"), "x"), (Some("AWSELB"), "v")]
        );
        assert_eq!(candidates("AWSELB=v=="), [(Some("AWSELB"), "v==")]);
    }
}
