pub mod api_keys;
pub mod end_users;
pub mod event_message_ids;
pub mod events;
pub mod organizations;
pub mod projects;
