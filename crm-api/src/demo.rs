//! The demo tenant behind `zentrale serve --demo`: web logins admin `admin`/`demo-admin`,
//! agents `1001`/`demo1001` and `1002`/`demo1002` (the same agents as the SIP demo), a queue
//! `support` (callers are answered at once with a greeting, hold music and position/wait
//! announcements), and a couple of customers with a timeline.

use crate::auth::{NewUser, Role, create_user};
use crate::customers::{Identity, IdentityKind, NewCustomer, create_customer};
use crate::error::ApiError;
use crate::ids::TenantId;
use crate::routing::{Change, RoutingModel, apply_change};
use crate::store::Store;
use chrono::Utc;

/// Slug of the demo tenant.
pub const DEMO_TENANT: &str = "demo";

/// The demo logins as (username, password, role), for printing at start.
pub const DEMO_LOGINS: &[(&str, &str, &str)] = &[
    ("admin", "demo-admin", "admin"),
    ("1001", "demo1001", "agent"),
    ("1002", "demo1002", "agent"),
];

const DEMO_ROUTING: &str = r#"
[skills.german]
name = "Deutsch"
[skills.english]
name = "English"

[queues.support]
strategy = "longest_idle"
wrap_up_s = 10
service_level_s = 20
announce = { on_entry = true, every_s = 30 }

# Callers are answered at once: greeting, then music with position and waiting-time
# announcements every 30 s (built-in English prompts).
[queues.support.media]
greeting = "welcome"
music = "hold_music"
language = "en"

[agents.1001]
skills = { german = 3, english = 2 }
queues = ["support"]

[agents.1002]
skills = { german = 2, english = 4 }
queues = ["support"]

[dids."+4930123456"]
target = { queue = "support" }

[wrapup_codes.solved]
label = "Solved"
[wrapup_codes.callback]
label = "Callback needed"
queues = ["support"]
"#;

/// The demo phones' SIP passwords (extension = agent id), stored as HA1 like any other.
pub const DEMO_SIP: &[(&str, &str)] = &[("1001", "demo1001"), ("1002", "demo1002")];

/// Gives the demo agents their SIP credentials where they have none (an admin's change stays).
async fn seed_sip(store: &Store, tenant: TenantId) -> Result<(), ApiError> {
    let have = crate::sip_credentials::load_credentials(store, tenant).await?;
    let model = crate::routing::load_model(store, tenant).await?;
    for (agent, password) in DEMO_SIP {
        if have.iter().any(|c| c.agent == *agent)
            || !model
                .agents
                .contains_key(&acd_core::ids::AgentId::new(*agent))
        {
            continue;
        }
        crate::sip_credentials::set_credentials(
            store,
            tenant,
            "demo",
            Utc::now(),
            agent,
            &crate::sip_credentials::SetSipCredentials {
                password: (*password).to_owned(),
                extension: None,
            },
        )
        .await?;
    }
    Ok(())
}

/// Creates the demo tenant if it does not exist yet (idempotent) and returns its id.
pub async fn seed(store: &Store) -> Result<TenantId, ApiError> {
    if let Some(t) = store.tenant_by_slug(DEMO_TENANT).await? {
        let tenant = TenantId::parse(&t.id).ok_or(ApiError::NotFound)?;
        // A demo database from before SIP credentials were stored gets them now.
        seed_sip(store, tenant).await?;
        return Ok(tenant);
    }
    let now = Utc::now();
    let tenant = store.create_tenant(DEMO_TENANT, "Demo GmbH", now).await?;
    for (username, password, role) in DEMO_LOGINS {
        let role = match *role {
            "admin" => Role::Admin,
            _ => Role::Agent,
        };
        create_user(
            store,
            tenant,
            &NewUser {
                username: (*username).to_owned(),
                display_name: if role == Role::Admin {
                    "Administrator".to_owned()
                } else {
                    format!("Agent {username}")
                },
                password: (*password).to_owned(),
                role,
                agent: (role == Role::Agent).then(|| (*username).to_owned()),
                provider_id: None,
            },
            now,
        )
        .await?;
    }
    let model: RoutingModel = crate::provision::parse(DEMO_ROUTING)
        .map_err(|e| ApiError::validation("demo", e.to_string()))?;
    apply_change(store, tenant, "demo", now, Change::Replace(Box::new(model))).await?;
    seed_sip(store, tenant).await?;
    for (name, company, phone, email) in [
        (
            "Erika Mustermann",
            Some("Muster AG"),
            "+4930111222",
            "erika@example.com",
        ),
        ("Max Müller", None, "+4989333444", "max@example.org"),
    ] {
        create_customer(
            store,
            tenant,
            "demo",
            &NewCustomer {
                name: name.to_owned(),
                company: company.map(str::to_owned),
                identities: vec![
                    Identity {
                        kind: IdentityKind::Phone,
                        value: phone.to_owned(),
                    },
                    Identity {
                        kind: IdentityKind::Email,
                        value: email.to_owned(),
                    },
                ],
                custom: Default::default(),
            },
            now,
        )
        .await?;
    }
    Ok(tenant)
}
