//! Event names and event classes.

pub const MAX_EVENT_NAME_CHARS: usize = 200;

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
}
