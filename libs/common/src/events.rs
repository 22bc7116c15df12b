//! Event names and event classes. The trusted (server-only) list lives here once; gateway and
//! worker both decide with [`requires_secret_key`].

use serde::{Deserialize, Serialize};

pub const MAX_EVENT_NAME_CHARS: usize = 200;

/// Behavioural events that a browser may send with a publishable key. Documented for SDK authors;
/// any name not trusted is accepted from a publishable key as well.
pub const CLIENT_SAFE_EVENTS: &[&str] = &[
    "page_view",
    "product_view",
    "click",
    "form_submit",
    "search",
    "cart_update",
    "cart_add",
    "cart_remove",
    "checkout_start",
    "signup",
    "login",
    "logout",
];

/// Events only a server may send, with a secret key, on every project.
pub const BUILTIN_TRUSTED_EVENTS: &[&str] = &[
    "purchase",
    "checkout_complete",
    "checkout_success",
    "commission.created",
    "referral_success",
    "user.leveled_up",
    "step.completed",
    "quest.completed",
];

/// The event type under which an identify call travels.
pub const IDENTIFY_EVENT: &str = "$identify";

/// Names starting with this are the platform's own (`$identify`): a track call cannot use them.
pub const RESERVED_PREFIX: char = '$';

/// A list of names stored as a JSON array of strings (a project's trusted events, a key's allowed
/// origins). A stored value that is anything else is `Unreadable`, and every check on it refuses:
/// a list that cannot be read must never let through what it might have forbidden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NameList {
    Listed(Vec<String>),
    Unreadable,
}

impl NameList {
    pub fn from_json(value: &serde_json::Value) -> Self {
        let names = value.as_array().and_then(|items| {
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        });
        match names {
            Some(names) => Self::Listed(names),
            None => Self::Unreadable,
        }
    }

    pub fn listed(names: &[&str]) -> Self {
        Self::Listed(names.iter().map(|name| (*name).to_owned()).collect())
    }
}

impl Default for NameList {
    fn default() -> Self {
        Self::Listed(Vec::new())
    }
}

/// Whether `event` may be sent only with a secret key: a built-in trusted name or one of the
/// project's own `trustedEvents` — or any event at all when that list cannot be read.
pub fn requires_secret_key(event: &str, project_trusted_events: &NameList) -> bool {
    BUILTIN_TRUSTED_EVENTS.contains(&event)
        || match project_trusted_events {
            NameList::Listed(names) => names.iter().any(|e| e == event),
            NameList::Unreadable => true,
        }
}

/// A tracked event's name: 1–200 characters, no control characters, not a reserved `$` name.
pub fn validate_event_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(
            "names starting with $ are reserved for the platform (identify calls go to POST /v1/identify)",
        );
    }
    if name.chars().count() > MAX_EVENT_NAME_CHARS {
        return Err("must be at most 200 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// `sdks/core/src/contract.ts`: the built-in trusted list as the browser SDK reads it, so the SDK
/// never carries a hand copy (the test `the_browser_sdk_s_list_is_generated_from_this_one` keeps
/// the committed file current).
pub fn browser_sdk_contract() -> String {
    let mut out = String::from(
        "// Generated from libs/common/src/events.rs; do not edit. Regenerate with\n\
         //   UPDATE_SDK_CONTRACT=1 cargo test -p gamify-common browser_sdk\n\n\
         /** Events only a server may send, with a secret key (the gateway's built-in list). */\n\
         export const TRUSTED_EVENTS: readonly string[] = [\n",
    );
    for name in BUILTIN_TRUSTED_EVENTS {
        out.push_str(&format!("  '{name}',\n"));
    }
    out.push_str("];\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_sdk_s_list_is_generated_from_this_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../sdks/core/src/contract.ts");
        let generated = browser_sdk_contract();
        if std::env::var_os("UPDATE_SDK_CONTRACT").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "sdks/core/src/contract.ts is stale: regenerate it with\n  \
             UPDATE_SDK_CONTRACT=1 cargo test -p gamify-common browser_sdk"
        );
    }

    #[test]
    fn event_names() {
        assert!(validate_event_name("page_view").is_ok());
        assert!(validate_event_name("commission.created").is_ok());
        assert!(validate_event_name(&"é".repeat(200)).is_ok());
        assert!(validate_event_name(&"é".repeat(201)).is_err());
        assert!(validate_event_name("").is_err());
        assert!(validate_event_name("tab\tname").is_err());
        assert!(validate_event_name("nul\0").is_err());
        assert!(validate_event_name(IDENTIFY_EVENT).is_err());
        assert!(validate_event_name("$profile_update").is_err());
        assert!(validate_event_name("price_in_$").is_ok());
    }

    #[test]
    fn trusted_events_need_a_secret_key() {
        let none = NameList::default();
        for event in BUILTIN_TRUSTED_EVENTS {
            assert!(requires_secret_key(event, &none), "{event}");
        }
        for event in CLIENT_SAFE_EVENTS {
            assert!(!requires_secret_key(event, &none), "{event}");
        }
        assert!(!requires_secret_key(IDENTIFY_EVENT, &none));
        let project = NameList::listed(&["bonus.granted"]);
        assert!(requires_secret_key("bonus.granted", &project));
        assert!(!requires_secret_key("bonus.granted", &none));
        assert!(!requires_secret_key("page_view", &project));
        // Names are exact: no case folding that a browser could use to slip past.
        assert!(!requires_secret_key("Purchase", &none));
    }

    #[test]
    fn an_unreadable_list_refuses_rather_than_allows() {
        use serde_json::json;
        assert_eq!(
            NameList::from_json(&json!(["a", "b"])),
            NameList::listed(&["a", "b"])
        );
        for unreadable in [
            json!([1]),
            json!(["a", null]),
            json!({ "a": 1 }),
            json!("a"),
            json!(null),
        ] {
            let list = NameList::from_json(&unreadable);
            assert_eq!(list, NameList::Unreadable, "{unreadable}");
            assert!(requires_secret_key("page_view", &list));
            assert!(requires_secret_key("click", &list));
        }
    }
}
