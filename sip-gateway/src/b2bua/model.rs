//! What the gateway needs to know about each tenant, in plain types the binary fills in.
//!
//! sip-gateway must not depend on crm-api (DESIGN.md, "Who talks to whom"), so the binary
//! translates its routing model (DIDs, agents, trunks) into a [`GatewayModel`] and hands a new
//! one over whenever an admin changes something; the gateway swaps it in between two messages.
//! Tenants are identified by crm-api's UUID, queues and agents by acd-core's ids.

use std::collections::HashMap;
use std::sync::Arc;

use acd_core::config::QueueMedia;
use acd_core::{AgentId, QueueId};
use uuid::Uuid;

use crate::sip::auth::DigestHa1;

/// An agent's SIP secret as the registrar needs it: digest HA1 (MD5 and SHA-256) and the
/// realm it was computed for (the tenant's), never the password. crm-api stores exactly this
/// (see its `sip_credentials` module for why HA1 is the standard trade-off); the binary hands
/// it over. Redacted from `Debug` (HA1 is a password-equivalent in its realm).
#[derive(Clone, PartialEq, Eq)]
pub struct SipSecret(DigestHa1);

impl SipSecret {
    /// Stored HA1 material (lower-case hex) for `realm`.
    pub fn from_ha1(
        realm: impl Into<String>,
        md5: impl Into<String>,
        sha256: impl Into<String>,
    ) -> SipSecret {
        SipSecret(DigestHa1 {
            realm: realm.into(),
            md5: md5.into(),
            sha256: sha256.into(),
        })
    }

    /// Derives HA1 from a password (tests; the demo derives it in crm-api like any other).
    pub fn from_password(user: &str, realm: &str, password: &str) -> SipSecret {
        SipSecret(DigestHa1::from_password(user, realm, password))
    }

    /// The realm challenges for this agent name.
    pub fn realm(&self) -> &str {
        &self.0.realm
    }

    pub(crate) fn ha1(&self) -> &DigestHa1 {
        &self.0
    }
}

impl std::fmt::Debug for SipSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SipSecret(realm {:?}, ..)", self.0.realm)
    }
}

/// One agent's SIP identity: the extension its phone registers as, and the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSip {
    /// The routing engine's agent.
    pub agent: AgentId,
    /// The phone's user name (the AOR's user part), e.g. `1001`.
    pub extension: String,
    /// The digest secret.
    pub secret: SipSecret,
}

/// One tenant's telephony.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantModel {
    /// crm-api's tenant id.
    pub tenant: Uuid,
    /// Dialled number (as the carrier sends it, E.164 with `+`, or a short code) → queue.
    pub dids: HashMap<String, QueueId>,
    /// Agents that may register phones.
    pub agents: Vec<AgentSip>,
    /// What callers hear and choose: queue media, IVR menus, DIDs that lead to a menu.
    pub media: TenantMedia,
    /// Carrier trunks and which DIDs are bound to one (`trunk/`, core/trunks.rs).
    pub trunks: TenantTrunks,
}

/// A tenant's carrier trunks.
///
/// Inbound identification policy: an INVITE whose source IP is one of a trunk's addresses is
/// attributed to that trunk (and counts against its `max_channels`). A DID bound to a trunk
/// (`did_trunks`) is reached only by calls from that trunk; a DID without a trunk is reached
/// from any source, unless the gateway runs with `trusted_sources_only`, which refuses every
/// INVITE to a DID that does not come from a configured trunk (phones of registered agents
/// are not affected: they never call DIDs through the B2BUA's inbound path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantTrunks {
    /// The trunks in failover order (outbound calls try them first to last).
    pub trunks: Vec<crate::trunk::TrunkModel>,
    /// DID → the name of the trunk it must arrive on.
    pub did_trunks: HashMap<String, String>,
}

/// A tenant's caller experience (core/queue_media.rs, core/ivr.rs, core/voicemail.rs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantMedia {
    /// Queues with media (answer, greeting, music, announcements); absent = ringback only.
    pub queues: HashMap<QueueId, QueueMedia>,
    /// IVR menus by name.
    pub menus: HashMap<String, IvrMenu>,
    /// Dialled number → the menu it enters (DIDs that lead to a queue are in
    /// [`TenantModel::dids`]).
    pub entry_menus: HashMap<String, String>,
    /// The tenant's own uploaded prompts and music, looked up before the operator's overrides
    /// and the built-ins (core/queue_media.rs).
    pub prompts: TenantPrompts,
}

/// A tenant's uploaded prompts, already converted to 8 kHz mono, by (language, name).
///
/// Shared (`Arc`) because the model is cloned into the gateway's index on every change and a
/// music file is megabytes; the binary loads it off the SIP task (the resampling is the slow
/// part) and hands it over with the model. Equality compares the audio, `Debug` only the names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TenantPrompts(Arc<HashMap<(String, String), Arc<crate::audio::prompt::Prompt>>>);

impl TenantPrompts {
    /// A set from `(language, name) → prompt`.
    pub fn new(
        prompts: HashMap<(String, String), Arc<crate::audio::prompt::Prompt>>,
    ) -> TenantPrompts {
        TenantPrompts(Arc::new(prompts))
    }

    /// The upload `name` in `lang`.
    pub fn get(&self, lang: &str, name: &str) -> Option<Arc<crate::audio::prompt::Prompt>> {
        self.0.get(&(lang.to_owned(), name.to_owned())).cloned()
    }

    /// The upload `name` in any language (the alphabetically first), for a call whose
    /// language has no such upload and no operator or built-in prompt of that name either.
    pub fn get_any(&self, name: &str) -> Option<Arc<crate::audio::prompt::Prompt>> {
        self.0
            .iter()
            .filter(|((_, n), _)| n == name)
            .min_by(|a, b| a.0.0.cmp(&b.0.0))
            .map(|(_, p)| p.clone())
    }

    /// How many uploads.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for TenantPrompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.0.keys().map(|(l, n)| format!("{l}/{n}")).collect();
        names.sort();
        f.debug_tuple("TenantPrompts").field(&names).finish()
    }
}

/// Where an IVR choice leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvrTarget {
    /// Enter a queue.
    Queue(QueueId),
    /// Another menu.
    Menu(String),
    /// An external number (E.164), dialled through the tenant's trunks.
    Number(String),
    /// Leave a voicemail.
    Voicemail,
    /// Say goodbye and hang up.
    Hangup,
}

/// One option of a menu: where it leads, and what it says about the contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvrChoice {
    /// Where the digit leads.
    pub target: IvrTarget,
    /// Contact attributes set by the choice (e.g. `language = de`); `language` also selects
    /// the language of the prompts that follow.
    pub set: Vec<(String, String)>,
    /// An extra skill requirement for the contact (e.g. `german >= 2`), so the choice steers
    /// skill routing.
    pub require: Option<acd_core::SkillExpr>,
}

/// Digits the caller types in (a customer number), stored as a contact attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvrCollect {
    /// The attribute that receives the digits.
    pub attribute: String,
    /// At most this many digits; the input ends when reached.
    pub max_digits: u8,
    /// A key that ends the input early (usually `#`).
    pub terminator: Option<char>,
}

/// An IVR menu as the gateway runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvrMenu {
    /// The prompt played on entry (a prompt name).
    pub prompt: String,
    /// How long to wait for a key after the prompt, ms.
    pub timeout_ms: u64,
    /// Key → choice.
    pub options: HashMap<char, IvrChoice>,
    /// Where a timeout (or too many invalid keys) leads; after `collect` also where the
    /// collected input leads.
    pub default: IvrTarget,
    /// Read digits instead of choosing an option.
    pub collect: Option<IvrCollect>,
}

/// Every tenant the gateway serves. Extensions and DIDs must be unique across tenants on one
/// node (the first tenant listed wins a clash, which the binary logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayModel {
    /// The tenants.
    pub tenants: Vec<TenantModel>,
}

/// The model indexed for the per-message look-ups.
#[derive(Debug, Default)]
pub(crate) struct ModelIndex {
    pub(crate) dids: HashMap<String, (Uuid, QueueId)>,
    pub(crate) extensions: HashMap<String, (Uuid, AgentId, SipSecret)>,
    pub(crate) agents: HashMap<(Uuid, AgentId), String>,
    /// Dialled number → (tenant, menu).
    pub(crate) entry_menus: HashMap<String, (Uuid, String)>,
    /// Each tenant's caller experience.
    pub(crate) media: HashMap<Uuid, Arc<TenantMedia>>,
    /// Source IP → (tenant, trunk name): inbound identification.
    pub(crate) trunk_sources: HashMap<std::net::IpAddr, (Uuid, String)>,
    /// Source address (IP and port) → (tenant, trunk name): preferred over the IP alone when
    /// several trunks share an address (carriers with one IP and several ports, tests).
    pub(crate) trunk_source_addrs: HashMap<std::net::SocketAddr, (Uuid, String)>,
    /// Each tenant's trunks in failover order.
    pub(crate) trunks: HashMap<Uuid, Vec<crate::trunk::TrunkModel>>,
    /// DID (as configured) → the trunk it is bound to.
    pub(crate) did_trunks: HashMap<String, String>,
}

impl ModelIndex {
    pub(crate) fn build(model: &Arc<GatewayModel>) -> ModelIndex {
        let mut idx = ModelIndex::default();
        for t in &model.tenants {
            for (did, queue) in &t.dids {
                idx.dids
                    .entry(did.clone())
                    .or_insert_with(|| (t.tenant, queue.clone()));
            }
            for (did, menu) in &t.media.entry_menus {
                idx.entry_menus
                    .entry(did.clone())
                    .or_insert_with(|| (t.tenant, menu.clone()));
            }
            idx.media.insert(t.tenant, Arc::new(t.media.clone()));
            for trunk in &t.trunks.trunks {
                for a in &trunk.addresses {
                    idx.trunk_source_addrs
                        .entry(*a)
                        .or_insert_with(|| (t.tenant, trunk.name.clone()));
                    idx.trunk_sources
                        .entry(a.ip())
                        .or_insert_with(|| (t.tenant, trunk.name.clone()));
                }
            }
            idx.trunks.insert(t.tenant, t.trunks.trunks.clone());
            for (did, trunk) in &t.trunks.did_trunks {
                idx.did_trunks.insert(did.clone(), trunk.clone());
            }
            for a in &t.agents {
                idx.extensions
                    .entry(a.extension.clone())
                    .or_insert_with(|| (t.tenant, a.agent.clone(), a.secret.clone()));
                idx.agents
                    .insert((t.tenant, a.agent.clone()), a.extension.clone());
            }
        }
        idx
    }

    /// The menu a dialled number leads to (when it leads to no queue).
    pub(crate) fn route_menu(&self, dialled: &str) -> Option<&(Uuid, String)> {
        self.entry_menus
            .get(dialled)
            .or_else(|| normalize_e164(dialled).and_then(|n| self.entry_menus.get(&n)))
    }

    /// The queue a dialled number leads to: as dialled, then E.164-normalised.
    pub(crate) fn route(&self, dialled: &str) -> Option<&(Uuid, QueueId)> {
        self.dids
            .get(dialled)
            .or_else(|| normalize_e164(dialled).and_then(|n| self.dids.get(&n)))
    }
}

/// E.164 normalisation of what carriers send: visual separators dropped, `00` → `+`.
/// Returns `None` when nothing number-like remains.
pub fn normalize_e164(dialled: &str) -> Option<String> {
    let plus = dialled.starts_with('+');
    let digits: String = dialled.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty()
        || dialled
            .chars()
            .any(|c| !(c.is_ascii_digit() || "+-. ()".contains(c)))
    {
        return None;
    }
    if plus {
        Some(format!("+{digits}"))
    } else if let Some(rest) = digits.strip_prefix("00") {
        Some(format!("+{rest}"))
    } else {
        Some(digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrier_number_formats_normalise_to_e164() {
        assert_eq!(
            normalize_e164("+49 30 123456").as_deref(),
            Some("+4930123456")
        );
        assert_eq!(
            normalize_e164("004930123456").as_deref(),
            Some("+4930123456")
        );
        assert_eq!(normalize_e164("100").as_deref(), Some("100"));
        assert_eq!(normalize_e164("support"), None);
    }

    #[test]
    fn did_lookup_tries_the_normalised_form() {
        let tenant = Uuid::from_u128(7);
        let model = Arc::new(GatewayModel {
            tenants: vec![TenantModel {
                tenant,
                dids: HashMap::from([("+4930123456".to_owned(), QueueId::new("support"))]),
                agents: vec![],
                media: TenantMedia::default(),
                trunks: Default::default(),
            }],
        });
        let idx = ModelIndex::build(&model);
        assert_eq!(
            idx.route("004930123456").map(|r| r.1.as_str()),
            Some("support")
        );
        assert!(idx.route("4930999").is_none());
    }
}
