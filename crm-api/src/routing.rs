//! Routing administration: queues, skills, agents (skills, proficiency, capacity), strategies
//! and escalation steps (inside queues), business hours and holidays, IVR menus, trunks, DIDs
//! and wrap-up codes — stored per tenant, validated as a whole, audit-logged, and published
//! live as an [`acd_core::RoutingConfig`].
//!
//! # Design
//!
//! The routing model is a document: acd-core's `RoutingConfig` plus the telephony objects the
//! engine does not need. It is stored one object per row (`routing_objects`: kind, name, JSON
//! body), so a change touches one row and the audit log shows that object's before/after. But
//! it is *validated as a whole*: every change loads the tenant's model inside the change's
//! transaction, applies the change, and runs acd-core's own `validate()` plus the checks of
//! the telephony objects, so no change can leave a dangling reference (deleting a skill an
//! agent still has is refused, naming the field). The first statement of that transaction
//! bumps `tenants.routing_version`, which takes the write lock on both backends, so two
//! concurrent changes cannot each validate against a model without the other's change.
//! After commit the complete new `RoutingConfig` is published on a broadcast channel
//! ([`AppState::subscribe_routing`]) for the binary to apply to the running engine with
//! `apply_config` (which keeps waiting callers).
//!
//! Object bodies are acd-core's own types (`QueueConfig`, `AgentConfig`, …), deserialised with
//! `deny_unknown_fields`, so the API, the provisioning TOML ([`crate::provision`]) and the
//! what-if simulator all read exactly the same format.

use crate::auth::{Perm, Principal, validate_name};
use crate::customers::normalize_e164;
use crate::error::{ApiError, ApiJson, ApiQuery, Page, PageQuery, StoreError, page_from};
use crate::events::{Envelope, Event, Target};
use crate::ids::{TenantId, uuid_v7_at};
use crate::state::{AUDIT_INSERT, AppState};
use crate::store::{Store, with_pool};
use acd_core::RoutingConfig;
use acd_core::config::{AgentConfig, BusinessHours, QueueConfig, Settings, SkillConfig};
use acd_core::ids::{AgentId, QueueId, SkillId};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;

/// Where an IVR choice or a DID leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EntryTarget {
    /// A queue.
    Queue(String),
    /// Another IVR menu.
    Menu(String),
    /// An external number (E.164).
    Number(String),
    /// Voicemail.
    Voicemail,
    /// Hang up.
    Hangup,
}

/// An IVR menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IvrMenu {
    /// Prompt played on entry (file name of the prompt set).
    pub prompt: String,
    /// Seconds to wait for a digit.
    #[serde(default = "default_ivr_timeout")]
    pub timeout_s: u32,
    /// Digit (`0`-`9`, `*`, `#`) → target.
    #[serde(default)]
    pub options: BTreeMap<String, EntryTarget>,
    /// Where a timeout or an invalid digit leads (after `collect`: where the input leads).
    pub default: EntryTarget,
    /// Digit → contact attributes the choice sets, e.g. `{ "1" = { language = "de" } }`
    /// (`language` also switches the prompts that follow).
    #[serde(default)]
    pub set: BTreeMap<String, BTreeMap<String, String>>,
    /// Digit → extra skill requirement of the contact, e.g. `{ "1" = "german >= 2" }`, so a
    /// choice steers skill routing.
    #[serde(default)]
    pub require: BTreeMap<String, String>,
    /// Read digits (a customer number) into a contact attribute instead of offering options.
    #[serde(default)]
    pub collect: Option<IvrCollect>,
}

/// Digits a caller types in an IVR menu, stored as a contact attribute (screen pop, routing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IvrCollect {
    /// The attribute that receives the digits, e.g. `customer_number`.
    pub attribute: String,
    /// At most this many digits (1-32).
    pub digits: u8,
    /// The key that ends the input early (`#` or `*`; empty: none).
    #[serde(default = "default_terminator")]
    pub terminator: String,
}

fn default_terminator() -> String {
    "#".to_owned()
}

fn default_ivr_timeout() -> u32 {
    5
}

/// Transport of a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrunkTransport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS.
    Tls,
}

/// A carrier trunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    /// Carrier host name or address.
    pub host: String,
    /// Port (default 5060).
    #[serde(default = "default_sip_port")]
    pub port: u16,
    /// Transport.
    #[serde(default = "default_transport")]
    pub transport: TrunkTransport,
    /// Digest user for registration/authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Digest password.
    #[serde(default)]
    pub password: Option<String>,
    /// Whether zentrale registers at the carrier.
    #[serde(default)]
    pub register: bool,
    /// Concurrent call limit (0 = unlimited).
    #[serde(default)]
    pub max_channels: u32,
}

fn default_sip_port() -> u16 {
    5060
}
fn default_transport() -> TrunkTransport {
    TrunkTransport::Udp
}

/// A number (DID) mapped to an entry point. Its object name is the E.164 number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Did {
    /// The trunk it arrives on (any trunk when absent).
    #[serde(default)]
    pub trunk: Option<String>,
    /// Entry point.
    pub target: EntryTarget,
}

/// A wrap-up code (disposition) offered at the end of contacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WrapupCode {
    /// Label shown to agents.
    pub label: String,
    /// Queues offering it (empty: all queues).
    #[serde(default)]
    pub queues: Vec<String>,
}

/// A tenant's whole routing model: acd-core's configuration plus the telephony objects.
/// Also the provisioning file format (TOML).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingModel {
    /// Engine settings.
    #[serde(default)]
    pub settings: Settings,
    /// Skills.
    #[serde(default)]
    pub skills: BTreeMap<SkillId, SkillConfig>,
    /// Queues (strategy, required skills, escalation steps, …).
    #[serde(default)]
    pub queues: BTreeMap<QueueId, QueueConfig>,
    /// Agents (skills with proficiency, queue memberships, capacity).
    #[serde(default)]
    pub agents: BTreeMap<AgentId, AgentConfig>,
    /// Business-hours calendars with holidays.
    #[serde(default)]
    pub business_hours: BTreeMap<String, BusinessHours>,
    /// The what-if simulator's section; accepted so one file serves both, never stored.
    #[serde(default, skip_serializing)]
    pub simulation: Option<toml::Table>,
    /// IVR menus.
    #[serde(default)]
    pub ivr_menus: BTreeMap<String, IvrMenu>,
    /// Carrier trunks.
    #[serde(default)]
    pub trunks: BTreeMap<String, Trunk>,
    /// Numbers (E.164) → entry points.
    #[serde(default)]
    pub dids: BTreeMap<String, Did>,
    /// Wrap-up codes.
    #[serde(default)]
    pub wrapup_codes: BTreeMap<String, WrapupCode>,
}

/// The object kinds of the routing API (`/api/v1/routing/{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Engine settings (one object, named `default`).
    Settings,
    /// Skills.
    Skills,
    /// Queues.
    Queues,
    /// Agents.
    Agents,
    /// Business hours / holidays.
    BusinessHours,
    /// IVR menus.
    IvrMenus,
    /// Trunks.
    Trunks,
    /// DIDs.
    Dids,
    /// Wrap-up codes.
    WrapupCodes,
}

/// All kinds, in load order.
pub const KINDS: [Kind; 9] = [
    Kind::Settings,
    Kind::Skills,
    Kind::Queues,
    Kind::Agents,
    Kind::BusinessHours,
    Kind::IvrMenus,
    Kind::Trunks,
    Kind::Dids,
    Kind::WrapupCodes,
];

impl Kind {
    /// URL and stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Settings => "settings",
            Kind::Skills => "skills",
            Kind::Queues => "queues",
            Kind::Agents => "agents",
            Kind::BusinessHours => "business_hours",
            Kind::IvrMenus => "ivr_menus",
            Kind::Trunks => "trunks",
            Kind::Dids => "dids",
            Kind::WrapupCodes => "wrapup_codes",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        KINDS.into_iter().find(|k| k.as_str() == s)
    }
}

fn from_value<T: DeserializeOwned>(prefix: &str, v: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.inner().to_string();
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        let field = match (prefix.is_empty(), path.is_empty()) {
            (true, _) => path,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{path}"),
        };
        ApiError::validation(field, inner)
    })
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl RoutingModel {
    /// The engine's part.
    pub fn routing_config(&self) -> RoutingConfig {
        RoutingConfig {
            settings: self.settings.clone(),
            skills: self.skills.clone(),
            queues: self.queues.clone(),
            agents: self.agents.clone(),
            business_hours: self.business_hours.clone(),
            ..RoutingConfig::default()
        }
    }

    /// Sets (`Some`) or removes (`None`) one object; `body` is validated against its kind's type.
    pub fn set(&mut self, kind: Kind, name: &str, body: Option<Value>) -> Result<(), ApiError> {
        fn put<K: Ord, T: DeserializeOwned>(
            map: &mut BTreeMap<K, T>,
            key: K,
            body: Option<Value>,
        ) -> Result<(), ApiError> {
            match body {
                Some(v) => {
                    map.insert(key, from_value("", v)?);
                }
                None => {
                    map.remove(&key);
                }
            }
            Ok(())
        }
        match kind {
            Kind::Settings => {
                if name != "default" {
                    return Err(ApiError::validation(
                        "name",
                        "settings has one object, `default`",
                    ));
                }
                self.settings = match body {
                    Some(v) => from_value("", v)?,
                    None => Settings::default(),
                };
                Ok(())
            }
            Kind::Skills => put(&mut self.skills, SkillId::new(name), body),
            Kind::Queues => put(&mut self.queues, QueueId::new(name), body),
            Kind::Agents => put(&mut self.agents, AgentId::new(name), body),
            Kind::BusinessHours => put(&mut self.business_hours, name.to_owned(), body),
            Kind::IvrMenus => put(&mut self.ivr_menus, name.to_owned(), body),
            Kind::Trunks => put(&mut self.trunks, name.to_owned(), body),
            Kind::Dids => put(&mut self.dids, name.to_owned(), body),
            Kind::WrapupCodes => put(&mut self.wrapup_codes, name.to_owned(), body),
        }
    }

    /// One object's body.
    pub fn get(&self, kind: Kind, name: &str) -> Option<Value> {
        match kind {
            Kind::Settings => (name == "default").then(|| to_value(&self.settings)),
            Kind::Skills => self.skills.get(&SkillId::new(name)).map(to_value),
            Kind::Queues => self.queues.get(&QueueId::new(name)).map(to_value),
            Kind::Agents => self.agents.get(&AgentId::new(name)).map(to_value),
            Kind::BusinessHours => self.business_hours.get(name).map(to_value),
            Kind::IvrMenus => self.ivr_menus.get(name).map(to_value),
            Kind::Trunks => self.trunks.get(name).map(to_value),
            Kind::Dids => self.dids.get(name).map(to_value),
            Kind::WrapupCodes => self.wrapup_codes.get(name).map(to_value),
        }
    }

    /// All objects of a kind as (name, body).
    pub fn objects(&self, kind: Kind) -> Vec<(String, Value)> {
        fn all<K: ToString, T: Serialize>(m: &BTreeMap<K, T>) -> Vec<(String, Value)> {
            m.iter()
                .map(|(k, v)| (k.to_string(), to_value(v)))
                .collect()
        }
        match kind {
            Kind::Settings => vec![("default".to_owned(), to_value(&self.settings))],
            Kind::Skills => all(&self.skills),
            Kind::Queues => all(&self.queues),
            Kind::Agents => all(&self.agents),
            Kind::BusinessHours => all(&self.business_hours),
            Kind::IvrMenus => all(&self.ivr_menus),
            Kind::Trunks => all(&self.trunks),
            Kind::Dids => all(&self.dids),
            Kind::WrapupCodes => all(&self.wrapup_codes),
        }
    }

    /// Checks names, acd-core's cross-references and the telephony objects' references.
    pub fn validate(&self) -> Result<(), ApiError> {
        for k in KINDS {
            for (name, _) in self.objects(k) {
                check_object_name(k, &format!("{}.{name}", k.as_str()), &name)?;
            }
        }
        self.routing_config().validate().map_err(|e| match e {
            acd_core::ConfigError::Invalid { field, message } => {
                ApiError::validation(field, message)
            }
            other => ApiError::validation("", other.to_string()),
        })?;
        let target_ok = |field: String, t: &EntryTarget| -> Result<(), ApiError> {
            match t {
                EntryTarget::Queue(q) if !self.queues.contains_key(&QueueId::new(q)) => {
                    Err(ApiError::validation(field, format!("unknown queue `{q}`")))
                }
                EntryTarget::Menu(m) if !self.ivr_menus.contains_key(m) => Err(
                    ApiError::validation(field, format!("unknown IVR menu `{m}`")),
                ),
                EntryTarget::Number(n) if normalize_e164(n).as_deref() != Some(n.as_str()) => {
                    Err(ApiError::validation(field, "not an E.164 number"))
                }
                _ => Ok(()),
            }
        };
        for (name, m) in &self.ivr_menus {
            if m.prompt.is_empty() {
                return Err(ApiError::validation(
                    format!("ivr_menus.{name}.prompt"),
                    "required",
                ));
            }
            if !(1..=60).contains(&m.timeout_s) {
                return Err(ApiError::validation(
                    format!("ivr_menus.{name}.timeout_s"),
                    "1..60",
                ));
            }
            for (digit, t) in &m.options {
                let f = format!("ivr_menus.{name}.options.{digit}");
                if !matches!(
                    digit.as_str(),
                    "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "*" | "#"
                ) {
                    return Err(ApiError::validation(f, "an option is one of 0-9 * #"));
                }
                target_ok(f, t)?;
            }
            target_ok(format!("ivr_menus.{name}.default"), &m.default)?;
            for (digit, attrs) in &m.set {
                let f = format!("ivr_menus.{name}.set.{digit}");
                if !m.options.contains_key(digit) {
                    return Err(ApiError::validation(f, "no option for this digit"));
                }
                for (k, v) in attrs {
                    if k.is_empty()
                        || k.len() > 64
                        || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        || v.len() > 200
                    {
                        return Err(ApiError::validation(
                            format!("{f}.{k}"),
                            "an attribute name of a-z 0-9 _ (up to 64) and a value up to 200 characters",
                        ));
                    }
                }
            }
            for (digit, expr) in &m.require {
                let f = format!("ivr_menus.{name}.require.{digit}");
                if !m.options.contains_key(digit) {
                    return Err(ApiError::validation(f, "no option for this digit"));
                }
                let parsed: acd_core::SkillExpr = expr
                    .parse()
                    .map_err(|e| ApiError::validation(f.clone(), format!("{e}")))?;
                for skill in parsed.skills() {
                    if !self.skills.contains_key(skill) {
                        return Err(ApiError::validation(f, format!("unknown skill `{skill}`")));
                    }
                }
            }
            if let Some(c) = &m.collect {
                let f = format!("ivr_menus.{name}.collect");
                if !m.options.is_empty() {
                    return Err(ApiError::validation(
                        f,
                        "a collect menu has no options (the input leads to `default`)",
                    ));
                }
                if c.attribute.is_empty()
                    || c.attribute.len() > 64
                    || !c
                        .attribute
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(ApiError::validation(
                        format!("{f}.attribute"),
                        "a-z 0-9 _ (up to 64)",
                    ));
                }
                if !(1..=32).contains(&c.digits) {
                    return Err(ApiError::validation(format!("{f}.digits"), "1..32"));
                }
                if !matches!(c.terminator.as_str(), "" | "#" | "*") {
                    return Err(ApiError::validation(
                        format!("{f}.terminator"),
                        "`#`, `*` or empty",
                    ));
                }
            }
        }
        for (name, t) in &self.trunks {
            if t.host.is_empty() || t.host.len() > 253 || t.host.contains(char::is_whitespace) {
                return Err(ApiError::validation(
                    format!("trunks.{name}.host"),
                    "a host name or address",
                ));
            }
            if t.port == 0 {
                return Err(ApiError::validation(
                    format!("trunks.{name}.port"),
                    "1..65535",
                ));
            }
            if t.register && t.username.is_none() {
                return Err(ApiError::validation(
                    format!("trunks.{name}.username"),
                    "registration needs a username",
                ));
            }
        }
        for (number, d) in &self.dids {
            if let Some(t) = &d.trunk
                && !self.trunks.contains_key(t)
            {
                return Err(ApiError::validation(
                    format!("dids.{number}.trunk"),
                    format!("unknown trunk `{t}`"),
                ));
            }
            target_ok(format!("dids.{number}.target"), &d.target)?;
        }
        for (code, w) in &self.wrapup_codes {
            if w.label.is_empty() || w.label.len() > 200 {
                return Err(ApiError::validation(
                    format!("wrapup_codes.{code}.label"),
                    "1..200 characters",
                ));
            }
            for (i, q) in w.queues.iter().enumerate() {
                if !self.queues.contains_key(&QueueId::new(q)) {
                    return Err(ApiError::validation(
                        format!("wrapup_codes.{code}.queues[{i}]"),
                        format!("unknown queue `{q}`"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_object_name(kind: Kind, field: &str, name: &str) -> Result<(), ApiError> {
    match kind {
        Kind::Dids => {
            if normalize_e164(name).as_deref() != Some(name) {
                return Err(ApiError::validation(
                    field,
                    "a DID is named by its E.164 number",
                ));
            }
            Ok(())
        }
        _ => validate_name(field, name),
    }
}

/// A routing change, published after commit.
#[derive(Debug, Clone)]
pub struct RoutingUpdate {
    /// Tenant.
    pub tenant: TenantId,
    /// `tenants.routing_version` after the change.
    pub version: i64,
    /// The engine's complete new configuration (for `Engine::apply_config`).
    pub config: Arc<RoutingConfig>,
    /// The complete model (trunks, DIDs, IVR for the SIP side).
    pub model: Arc<RoutingModel>,
    /// The tenant's agents' SIP credentials (digest HA1, see [`crate::sip_credentials`]).
    pub sip: Arc<Vec<crate::sip_credentials::SipCredential>>,
}

#[derive(sqlx::FromRow)]
struct ObjectRow {
    kind: String,
    name: String,
    body: Json<Value>,
}

/// Loads a tenant's routing model (outside a transaction).
pub async fn load_model(store: &Store, tenant: TenantId) -> Result<RoutingModel, ApiError> {
    let rows = with_pool!(store, |p| {
        sqlx::query_as::<_, ObjectRow>(
            "SELECT kind, name, body FROM routing_objects WHERE tenant_id = $1 ORDER BY kind, name",
        )
        .bind(tenant.as_text())
        .fetch_all(p)
        .await?
    });
    model_from_rows(rows)
}

fn model_from_rows(rows: Vec<ObjectRow>) -> Result<RoutingModel, ApiError> {
    let mut m = RoutingModel::default();
    for r in rows {
        let kind = Kind::parse(&r.kind).ok_or(StoreError::Corrupt("routing_objects"))?;
        m.set(kind, &r.name, Some(r.body.0))
            .map_err(|_| StoreError::Corrupt("routing_objects"))?;
    }
    Ok(m)
}

/// One change of a routing object, or a whole new model.
#[derive(Debug)]
pub enum Change {
    /// Set (`Some`) or delete (`None`) one object.
    Object {
        /// Kind.
        kind: Kind,
        /// Name.
        name: String,
        /// New body.
        body: Option<Value>,
    },
    /// Replace the whole model (provisioning).
    Replace(Box<RoutingModel>),
}

/// Applies a change in one transaction: lock (version bump), load, change, validate, write,
/// audit. Returns the new model and version; nothing is written when validation fails.
pub async fn apply_change(
    store: &Store,
    tenant: TenantId,
    actor: &str,
    now: DateTime<Utc>,
    change: Change,
) -> Result<(RoutingModel, i64, Option<Value>), ApiError> {
    with_pool!(store, |p| {
        let mut tx = p.begin().await?;
        let version: Option<(i64,)> = sqlx::query_as(
            "UPDATE tenants SET routing_version = routing_version + 1 WHERE id = $1 RETURNING routing_version",
        )
        .bind(tenant.as_text())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((version,)) = version else {
            return Err(ApiError::NotFound);
        };
        let rows = sqlx::query_as::<_, ObjectRow>(
            "SELECT kind, name, body FROM routing_objects WHERE tenant_id = $1 ORDER BY kind, name",
        )
        .bind(tenant.as_text())
        .fetch_all(&mut *tx)
        .await?;
        let mut model = model_from_rows(rows)?;
        let (entity, entity_id, action, before, after);
        match change {
            Change::Object { kind, name, body } => {
                check_object_name(kind, "name", &name)?;
                before = model.get(kind, &name);
                if body.is_none() && before.is_none() {
                    return Err(ApiError::NotFound);
                }
                action = match (&before, &body) {
                    (None, _) => "create",
                    (Some(_), Some(_)) => "update",
                    (Some(_), None) => "delete",
                };
                model.set(kind, &name, body)?;
                model.validate()?;
                after = model.get(kind, &name).filter(|_| action != "delete");
                match &after {
                    Some(v) => {
                        sqlx::query(
                            "INSERT INTO routing_objects (tenant_id, kind, name, body, updated_at) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, kind, name) \
                             DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                        )
                        .bind(tenant.as_text())
                        .bind(kind.as_str())
                        .bind(&name)
                        .bind(Json(v))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query(
                            "DELETE FROM routing_objects WHERE tenant_id = $1 AND kind = $2 AND name = $3",
                        )
                        .bind(tenant.as_text())
                        .bind(kind.as_str())
                        .bind(&name)
                        .execute(&mut *tx)
                        .await?;
                        // A deleted agent's phones can no longer register, and its extension
                        // is free again (crate::sip_credentials).
                        if kind == Kind::Agents {
                            sqlx::query(
                                "DELETE FROM agent_sip WHERE tenant_id = $1 AND agent = $2",
                            )
                            .bind(tenant.as_text())
                            .bind(&name)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                }
                entity = kind.as_str().to_owned();
                entity_id = name;
            }
            Change::Replace(new) => {
                new.validate()?;
                before = Some(to_value(&model));
                model = *new;
                sqlx::query("DELETE FROM routing_objects WHERE tenant_id = $1")
                    .bind(tenant.as_text())
                    .execute(&mut *tx)
                    .await?;
                for kind in KINDS {
                    for (name, body) in model.objects(kind) {
                        sqlx::query(
                            "INSERT INTO routing_objects (tenant_id, kind, name, body, updated_at) \
                             VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(tenant.as_text())
                        .bind(kind.as_str())
                        .bind(&name)
                        .bind(Json(&body))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                // SIP credentials of agents the new model no longer has go with them.
                let with_sip: Vec<(String,)> =
                    sqlx::query_as("SELECT agent FROM agent_sip WHERE tenant_id = $1")
                        .bind(tenant.as_text())
                        .fetch_all(&mut *tx)
                        .await?;
                for (agent,) in with_sip {
                    if !model.agents.contains_key(&AgentId::new(&agent)) {
                        sqlx::query("DELETE FROM agent_sip WHERE tenant_id = $1 AND agent = $2")
                            .bind(tenant.as_text())
                            .bind(&agent)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                after = Some(to_value(&model));
                action = "provision";
                entity = "routing".to_owned();
                entity_id = "*".to_owned();
            }
        }
        sqlx::query(AUDIT_INSERT)
            .bind(uuid_v7_at(now).as_hyphenated().to_string())
            .bind(tenant.as_text())
            .bind(actor)
            .bind(now)
            .bind(&entity)
            .bind(&entity_id)
            .bind(action)
            .bind(before.map(Json))
            .bind(after.clone().map(Json))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((model, version, after))
    })
}

impl AppState {
    /// Applies a routing change and publishes the new configuration.
    pub async fn change_routing(
        &self,
        tenant: TenantId,
        actor: &str,
        change: Change,
    ) -> Result<(RoutingModel, Option<Value>), ApiError> {
        let (model, version, after) =
            apply_change(self.store(), tenant, actor, self.now(), change).await?;
        let sip = crate::sip_credentials::load_credentials(self.store(), tenant).await?;
        self.publish_routing(RoutingUpdate {
            tenant,
            version,
            config: Arc::new(model.routing_config()),
            model: Arc::new(model.clone()),
            sip: Arc::new(sip),
        });
        self.events().publish(Envelope {
            tenant,
            target: Target::Tenant,
            event: Event::RoutingChanged {
                change: version.to_string(),
            },
        });
        Ok((model, after))
    }

    /// Publishes the tenant's current model and SIP credentials again (after a change that is
    /// not a routing object, such as an agent's SIP password).
    pub async fn republish_routing(&self, tenant: TenantId) -> Result<(), ApiError> {
        let model = load_model(self.store(), tenant).await?;
        let sip = crate::sip_credentials::load_credentials(self.store(), tenant).await?;
        let version: (i64,) = with_pool!(self.store(), |p| {
            sqlx::query_as("SELECT routing_version FROM tenants WHERE id = $1")
                .bind(tenant.as_text())
                .fetch_one(p)
                .await?
        });
        self.publish_routing(RoutingUpdate {
            tenant,
            version: version.0,
            config: Arc::new(model.routing_config()),
            model: Arc::new(model),
            sip: Arc::new(sip),
        });
        Ok(())
    }

    /// The tenant's current engine configuration (what the binary loads at start).
    pub async fn routing_config(&self, tenant: TenantId) -> Result<RoutingConfig, ApiError> {
        Ok(load_model(self.store(), tenant).await?.routing_config())
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One routing object.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoutingObject {
    /// Kind.
    pub kind: Kind,
    /// Name (a DID's is its number).
    pub name: String,
    /// The object (acd-core's type for settings/skills/queues/agents/business hours).
    #[schema(value_type = Object)]
    pub body: Value,
}

fn parse_kind(s: &str) -> Result<Kind, ApiError> {
    Kind::parse(s).ok_or(ApiError::NotFound)
}

/// Service providers see released queues and the wrap-up codes of those; nothing else.
fn visible(who: &Principal, kind: Kind, name: &str, body: &Value) -> bool {
    if who.release.is_none() {
        return true;
    }
    match kind {
        Kind::Queues => who.sees_queue(name),
        Kind::WrapupCodes => body
            .get("queues")
            .and_then(Value::as_array)
            .is_some_and(|qs| {
                qs.iter()
                    .filter_map(Value::as_str)
                    .any(|q| who.sees_queue(q))
            }),
        _ => false,
    }
}

/// Objects of one kind.
#[utoipa::path(get, path = "/api/v1/routing/{kind}", tag = "routing",
    params(("kind" = Kind, Path, description = "object kind")),
    responses((status = 200, body = Vec<RoutingObject>), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list_objects(
    State(state): State<AppState>,
    who: Principal,
    Path(kind): Path<String>,
) -> Result<axum::Json<Vec<RoutingObject>>, ApiError> {
    who.require(Perm::RoutingRead)?;
    let kind = parse_kind(&kind)?;
    let model = load_model(state.store(), who.tenant).await?;
    Ok(axum::Json(
        model
            .objects(kind)
            .into_iter()
            .filter(|(n, b)| visible(&who, kind, n, b))
            .map(|(name, body)| RoutingObject { kind, name, body })
            .collect(),
    ))
}

/// One object.
#[utoipa::path(get, path = "/api/v1/routing/{kind}/{name}", tag = "routing",
    params(("kind" = Kind, Path, description = "object kind"), ("name" = String, Path, description = "object name")),
    responses((status = 200, body = RoutingObject), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_object(
    State(state): State<AppState>,
    who: Principal,
    Path((kind, name)): Path<(String, String)>,
) -> Result<axum::Json<RoutingObject>, ApiError> {
    who.require(Perm::RoutingRead)?;
    let kind = parse_kind(&kind)?;
    let model = load_model(state.store(), who.tenant).await?;
    let body = model.get(kind, &name).ok_or(ApiError::NotFound)?;
    if !visible(&who, kind, &name, &body) {
        return Err(ApiError::NotFound);
    }
    Ok(axum::Json(RoutingObject { kind, name, body }))
}

/// Creates or replaces an object; the whole model is validated, the change audited and
/// published to the running engine.
#[utoipa::path(put, path = "/api/v1/routing/{kind}/{name}", tag = "routing",
    params(("kind" = Kind, Path, description = "object kind"), ("name" = String, Path, description = "object name")),
    request_body(content = Object, description = "the object of that kind"),
    responses((status = 200, body = RoutingObject), (status = 422, body = crate::error::ErrorBody)))]
pub async fn put_object(
    State(state): State<AppState>,
    who: Principal,
    Path((kind, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> Result<axum::Json<RoutingObject>, ApiError> {
    who.require(Perm::RoutingWrite)?;
    let kind = parse_kind(&kind)?;
    let (_, after) = state
        .change_routing(
            who.tenant,
            &who.actor,
            Change::Object {
                kind,
                name: name.clone(),
                body: Some(body),
            },
        )
        .await?;
    Ok(axum::Json(RoutingObject {
        kind,
        name,
        body: after.unwrap_or(Value::Null),
    }))
}

/// Deletes an object (refused while others refer to it).
#[utoipa::path(delete, path = "/api/v1/routing/{kind}/{name}", tag = "routing",
    params(("kind" = Kind, Path, description = "object kind"), ("name" = String, Path, description = "object name")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn delete_object(
    State(state): State<AppState>,
    who: Principal,
    Path((kind, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    who.require(Perm::RoutingWrite)?;
    let kind = parse_kind(&kind)?;
    state
        .change_routing(
            who.tenant,
            &who.actor,
            Change::Object {
                kind,
                name,
                body: None,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The whole routing model (same shape as the provisioning file).
#[utoipa::path(get, path = "/api/v1/routing", tag = "routing",
    responses((status = 200, description = "RoutingModel", body = Object), (status = 403, body = crate::error::ErrorBody)))]
pub async fn get_config(
    State(state): State<AppState>,
    who: Principal,
) -> Result<axum::Json<Value>, ApiError> {
    who.require(Perm::RoutingRead)?;
    if who.release.is_some() {
        return Err(ApiError::Forbidden);
    }
    Ok(axum::Json(to_value(
        &load_model(state.store(), who.tenant).await?,
    )))
}

/// One audit-log row.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    /// Id (time-ordered).
    pub id: String,
    /// Who.
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Entity type.
    pub entity: String,
    /// Entity id or name.
    pub entity_id: String,
    /// create, update, delete, merge, provision, …
    pub action: String,
    /// Before.
    #[schema(value_type = Option<Object>)]
    pub before: Option<Json<Value>>,
    /// After.
    #[schema(value_type = Option<Object>)]
    pub after: Option<Json<Value>>,
}

/// The tenant's audit log, oldest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "admin", params(PageQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = crate::error::ErrorBody)))]
pub async fn list_audit(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(pq): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<AuditEntry>>, ApiError> {
    who.require(Perm::AuditRead)?;
    let (cursor, limit) = pq.validate()?;
    let sql = format!(
        "SELECT id, actor, at, entity, entity_id, action, before, after FROM audit_log \
         WHERE tenant_id = $1{} ORDER BY id LIMIT {}",
        if cursor.is_some() { " AND id > $2" } else { "" },
        limit + 1
    );
    let rows = with_pool!(state.store(), |p| {
        let mut q = sqlx::query_as::<_, AuditEntry>(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(who.tenant.as_text());
        if let Some(c) = &cursor {
            q = q.bind(c);
        }
        q.fetch_all(p).await?
    });
    Ok(axum::Json(page_from(rows, limit, |r| r.id.clone())))
}
