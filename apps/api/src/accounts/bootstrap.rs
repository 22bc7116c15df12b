//! `gamify-api users create`: the operator's way to the first owner of an organization without a
//! console — a single-use sign-in link (an invitation) printed once.

use chrono::{DateTime, Utc};
use gamify_db::{
    Db,
    entities::organizations,
    sea_orm::{ActiveModelTrait, EntityTrait, Set, TransactionTrait},
};
use uuid::Uuid;

use crate::{
    accounts::{audit, caller::Actor, invitations::insert_invitation, roles::Role, sessions},
    config::AccountSettings,
    http::error::Result,
};

#[derive(Debug)]
pub struct Bootstrapped {
    pub organization_id: Uuid,
    pub organization_created: bool,
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// Invites `email` as `role` of `organization` (an existing organization's id, or the name of one
/// to create) and returns the link that sets the password and signs in.
pub async fn invite(
    db: &Db,
    settings: &AccountSettings,
    email: &str,
    organization: &str,
    role: Role,
) -> Result<Bootstrapped> {
    let email = sessions::normalize_email("--email", email)?;
    let txn = db.shared().begin().await?;
    let existing = match organization.parse::<Uuid>() {
        Ok(id) => organizations::Entity::find_by_id(id).one(&txn).await?,
        Err(_) => None,
    };
    let (organization_id, organization_created) = match existing {
        Some(found) => (found.id, false),
        None if organization.parse::<Uuid>().is_ok() => {
            return Err(crate::Error::not_found("organization"));
        }
        None => {
            crate::http::validate::validate_name("--organization", organization)?;
            let now = Utc::now();
            let created = organizations::ActiveModel {
                id: Set(Uuid::now_v7()),
                name: Set(organization.to_owned()),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&txn)
            .await?;
            (created.id, true)
        }
    };
    let invitation = insert_invitation(settings, &txn, organization_id, email, role, None).await?;
    let operator = Actor::Operator;
    audit::record(
        &txn,
        organization_id,
        audit::Entry {
            action: "member.invited",
            target_type: "invitation",
            target_id: Some(invitation.id.to_string()),
            details: serde_json::json!({ "email": invitation.email, "role": role, "via": "cli" }),
            actor: &operator,
            ip: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(Bootstrapped {
        organization_id,
        organization_created,
        url: invitation.url,
        expires_at: invitation.expires_at,
    })
}
