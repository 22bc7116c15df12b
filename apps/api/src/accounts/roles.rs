//! Who may do what: members' roles, management tokens' scopes, and the one table that maps each
//! permission a route asks for to the least role and the token scope that grant it.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A member's role in one organization, from least to most trusted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads only.
    Viewer,
    /// Keys, rules, webhooks, and reads.
    Developer,
    /// Members, tokens and projects besides.
    Admin,
    /// Everything, including managing owners.
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Admin, Role::Owner];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    pub fn allows(self, permission: Permission) -> bool {
        self >= permission.least_role()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an organization management token may be scoped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "read")]
    Read,
    #[serde(rename = "projects:write")]
    ProjectsWrite,
    #[serde(rename = "keys:write")]
    KeysWrite,
    #[serde(rename = "rules:write")]
    RulesWrite,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "members:write")]
    MembersWrite,
    #[serde(rename = "audit:read")]
    AuditRead,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Read,
        Scope::ProjectsWrite,
        Scope::KeysWrite,
        Scope::RulesWrite,
        Scope::WebhooksWrite,
        Scope::MembersWrite,
        Scope::AuditRead,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::ProjectsWrite => "projects:write",
            Scope::KeysWrite => "keys:write",
            Scope::RulesWrite => "rules:write",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::MembersWrite => "members:write",
            Scope::AuditRead => "audit:read",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == text)
    }
}

/// What a management route asks of its caller on the organization that owns the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// See the organization, its projects, keys, rules, webhooks and members.
    Read,
    ProjectsWrite,
    KeysWrite,
    RulesWrite,
    WebhooksWrite,
    /// Invite, change roles below owner, remove members below owner.
    MembersWrite,
    /// Create and revoke management tokens: people only, never a token.
    TokensWrite,
    AuditRead,
    /// Grant, change or remove the owner role; rename the organization.
    OwnersWrite,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::Read,
        Permission::ProjectsWrite,
        Permission::KeysWrite,
        Permission::RulesWrite,
        Permission::WebhooksWrite,
        Permission::MembersWrite,
        Permission::TokensWrite,
        Permission::AuditRead,
        Permission::OwnersWrite,
    ];

    /// The authorization table: the least role that holds the permission, and the token scope
    /// that grants it (`None`: no token may).
    pub const fn rule(self) -> (Role, Option<Scope>) {
        match self {
            Permission::Read => (Role::Viewer, Some(Scope::Read)),
            Permission::KeysWrite => (Role::Developer, Some(Scope::KeysWrite)),
            Permission::RulesWrite => (Role::Developer, Some(Scope::RulesWrite)),
            Permission::WebhooksWrite => (Role::Developer, Some(Scope::WebhooksWrite)),
            Permission::ProjectsWrite => (Role::Admin, Some(Scope::ProjectsWrite)),
            Permission::MembersWrite => (Role::Admin, Some(Scope::MembersWrite)),
            Permission::AuditRead => (Role::Admin, Some(Scope::AuditRead)),
            Permission::TokensWrite => (Role::Admin, None),
            Permission::OwnersWrite => (Role::Owner, None),
        }
    }

    pub const fn least_role(self) -> Role {
        self.rule().0
    }

    pub const fn scope(self) -> Option<Scope> {
        self.rule().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_scopes_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
            assert_eq!(serde_json::to_value(scope).unwrap(), scope.as_str());
        }
        assert_eq!(Role::parse("Owner"), None);
        assert_eq!(Scope::parse("tokens:write"), None);
    }

    #[test]
    fn a_higher_role_holds_everything_a_lower_one_does() {
        for permission in Permission::ALL {
            for (lower, higher) in Role::ALL.iter().zip(Role::ALL.iter().skip(1)) {
                assert!(!lower.allows(permission) || higher.allows(permission));
            }
            assert!(Role::Owner.allows(permission));
        }
    }

    #[test]
    fn the_table_matches_the_roles_the_product_describes() {
        use Permission::*;
        let holds = |role: Role| -> Vec<Permission> {
            Permission::ALL
                .into_iter()
                .filter(|p| role.allows(*p))
                .collect()
        };
        assert_eq!(holds(Role::Viewer), vec![Read]);
        assert_eq!(
            holds(Role::Developer),
            vec![Read, KeysWrite, RulesWrite, WebhooksWrite]
        );
        assert_eq!(
            holds(Role::Admin),
            vec![
                Read,
                ProjectsWrite,
                KeysWrite,
                RulesWrite,
                WebhooksWrite,
                MembersWrite,
                TokensWrite,
                AuditRead
            ]
        );
        // A token can never create tokens, nor touch owners.
        assert_eq!(TokensWrite.scope(), None);
        assert_eq!(OwnersWrite.scope(), None);
    }
}
