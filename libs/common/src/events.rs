//! Event names and event classes. The trusted (server-only) list lives here once; gateway and
//! worker both decide with [`requires_secret_key`].

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
    "$profile_update",
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

/// Whether `event` may be sent only with a secret key: a built-in trusted name or one of the
/// project's own `trustedEvents`.
pub fn requires_secret_key(event: &str, project_trusted_events: &[String]) -> bool {
    BUILTIN_TRUSTED_EVENTS.contains(&event) || project_trusted_events.iter().any(|e| e == event)
}

/// An event name is 1–200 characters with no control characters.
pub fn validate_event_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.chars().count() > MAX_EVENT_NAME_CHARS {
        return Err("must be at most 200 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names() {
        assert!(validate_event_name("page_view").is_ok());
        assert!(validate_event_name("commission.created").is_ok());
        assert!(validate_event_name(&"é".repeat(200)).is_ok());
        assert!(validate_event_name(&"é".repeat(201)).is_err());
        assert!(validate_event_name("").is_err());
        assert!(validate_event_name("tab\tname").is_err());
        assert!(validate_event_name("nul\0").is_err());
    }

    #[test]
    fn trusted_events_need_a_secret_key() {
        let none: Vec<String> = vec![];
        for event in BUILTIN_TRUSTED_EVENTS {
            assert!(requires_secret_key(event, &none), "{event}");
        }
        for event in CLIENT_SAFE_EVENTS {
            assert!(!requires_secret_key(event, &none), "{event}");
        }
        assert!(!requires_secret_key(IDENTIFY_EVENT, &none));
        let project = vec!["bonus.granted".to_owned()];
        assert!(requires_secret_key("bonus.granted", &project));
        assert!(!requires_secret_key("bonus.granted", &none));
        // Names are exact: no case folding that a browser could use to slip past.
        assert!(!requires_secret_key("Purchase", &none));
    }
}
