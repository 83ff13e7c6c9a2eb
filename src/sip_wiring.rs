//! Wiring between sip-gateway, the routing engines and the store.
//!
//! sip-gateway knows neither crm-api nor the engine host (DESIGN.md: the crates meet in
//! acd-core's types and in channels the binary wires). This module translates: the crm-api
//! routing model becomes the gateway's [`GatewayModel`], engine actions flow to the gateway,
//! the gateway's routing inputs flow to the tenant's engine, and its CDR rows to the store.
//! It also owns the one task that holds the [`RoutingHost`], so configuration changes and SIP
//! inputs reach each engine in the order they happened.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use acd_core::{Action, Input, QueueId};
use crm_api::ids::TenantId;
use crm_api::routing::{EntryTarget, RoutingModel, RoutingUpdate};
use crm_api::{Store, customers::CdrRecord};
use sip_gateway::gateway::Uuid;
use sip_gateway::gateway::{AgentSip, GatewayConfig, GatewayModel, SipSecret, TenantModel};
use sip_gateway::gateway::{IvrChoice, IvrCollect, IvrMenu, IvrTarget, TenantMedia};
use sip_gateway::media::RelayConfig;
use sip_gateway::sip::transaction::TransportKind;
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::{Config, SipTransport};
use crate::routing_host::RoutingHost;

/// The gateway's settings from `zentrale.toml`.
pub fn gateway_config(config: &Config) -> anyhow::Result<GatewayConfig> {
    let mut listeners = Vec::new();
    for l in &config.sip.listen {
        let kind = match l.transport {
            SipTransport::Udp => TransportKind::Udp,
            SipTransport::Tcp => TransportKind::Tcp,
            other => anyhow::bail!(
                "sip.listen: transport {other:?} on {} is not served yet (udp and tcp are)",
                l.address
            ),
        };
        listeners.push((kind, l.address));
    }
    Ok(GatewayConfig {
        listeners,
        public_address: config.sip.public_address,
        relay: RelayConfig::default()
            .bind_address(config.rtp.address)
            .ports(config.rtp.port_min, config.rtp.port_max)
            .workers(1),
        realm: "zentrale".to_owned(),
        shutdown_grace: Duration::from_secs(30),
        tcp: Default::default(),
        media_dir: Some(config.data_dir.clone()),
    })
}

/// The gateway's view of one tenant. Agents get SIP credentials only in the demo tenant
/// (`demo<extension>`, printed at start): outside `--demo` there are no default passwords,
/// and provisioning of SIP secrets through the API is still to come.
pub fn tenant_model(tenant: TenantId, model: &RoutingModel, demo: bool) -> TenantModel {
    let mut dids = HashMap::new();
    for (number, did) in &model.dids {
        if let EntryTarget::Queue(q) = &did.target {
            dids.insert(number.clone(), QueueId::new(q));
        }
    }
    let mut agents = Vec::new();
    if demo {
        if model.queues.contains_key("support") {
            // `sip:100@host` reaches the demo queue without dialling the full DID.
            dids.entry("100".to_owned())
                .or_insert_with(|| QueueId::new("support"));
        }
        for id in model.agents.keys() {
            agents.push(AgentSip {
                agent: id.clone(),
                extension: id.to_string(),
                secret: SipSecret::new(format!("demo{id}")),
            });
        }
    }
    TenantModel {
        tenant: tenant.0,
        dids,
        agents,
        media: tenant_media(model),
    }
}

/// Queue media, IVR menus and the DIDs that lead to a menu, as the gateway runs them.
pub fn tenant_media(model: &RoutingModel) -> TenantMedia {
    let target = |t: &EntryTarget| match t {
        EntryTarget::Queue(q) => IvrTarget::Queue(QueueId::new(q)),
        EntryTarget::Menu(m) => IvrTarget::Menu(m.clone()),
        EntryTarget::Number(n) => IvrTarget::Number(n.clone()),
        EntryTarget::Voicemail => IvrTarget::Voicemail,
        EntryTarget::Hangup => IvrTarget::Hangup,
    };
    let key = |digit: &str| digit.chars().next().filter(|_| digit.chars().count() == 1);
    let mut media = TenantMedia::default();
    for (id, q) in &model.queues {
        if let Some(m) = &q.media {
            media.queues.insert(id.clone(), m.clone());
        }
    }
    for (name, m) in &model.ivr_menus {
        let mut options = HashMap::new();
        for (digit, t) in &m.options {
            let Some(d) = key(digit) else {
                continue;
            };
            options.insert(
                d,
                IvrChoice {
                    target: target(t),
                    set: m
                        .set
                        .get(digit)
                        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default(),
                    // Validated on save; an expression that no longer parses is dropped.
                    require: m.require.get(digit).and_then(|e| e.parse().ok()),
                },
            );
        }
        media.menus.insert(
            name.clone(),
            IvrMenu {
                prompt: m.prompt.clone(),
                timeout_ms: u64::from(m.timeout_s) * 1000,
                options,
                default: target(&m.default),
                collect: m.collect.as_ref().map(|c| IvrCollect {
                    attribute: c.attribute.clone(),
                    max_digits: c.digits,
                    terminator: c.terminator.chars().next(),
                }),
            },
        );
    }
    for (number, did) in &model.dids {
        if let EntryTarget::Menu(m) = &did.target {
            media.entry_menus.insert(number.clone(), m.clone());
        }
    }
    media
}

/// The CDR row as crm-api stores it.
fn cdr_record(row: &sip_gateway::gateway::CdrRow) -> CdrRecord {
    let time = |ms: u64| {
        chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(0)).unwrap_or_default()
    };
    CdrRecord {
        tenant: TenantId(row.tenant),
        contact_id: row.contact.to_string(),
        leg: row.leg.to_owned(),
        direction: "inbound".to_owned(),
        started_at: time(row.started_ms),
        answered_at: row.answered_ms.map(time),
        ended_at: time(row.ended_ms),
        caller: row.caller.clone(),
        callee: row.callee.clone(),
        result: row.result.to_owned(),
        queue: row.queue.clone(),
        agent: row.agent.clone(),
        wait_ms: i64::try_from(row.wait_ms).unwrap_or(i64::MAX),
        talk_ms: i64::try_from(row.talk_ms).unwrap_or(i64::MAX),
        wrap_ms: 0,
        recording: None,
        quality: serde_json::json!({}),
    }
}

/// Persists CDR rows as they come; a failed write is logged, the call itself is long over.
pub async fn persist_cdrs(
    store: Store,
    mut rows: mpsc::UnboundedReceiver<sip_gateway::gateway::CdrRow>,
) {
    while let Some(row) = rows.recv().await {
        if let Err(e) = store.insert_cdr(&cdr_record(&row)).await {
            tracing::error!(contact = %row.contact, "cannot persist CDR: {e}");
        }
    }
}

/// Forwards engine actions to the gateway (only the ones it acts on, to keep its queue short).
pub async fn forward_actions(
    mut actions: broadcast::Receiver<(TenantId, Action)>,
    gateway: mpsc::UnboundedSender<(Uuid, Action)>,
) {
    loop {
        match actions.recv().await {
            Ok((tenant, action)) => {
                if matches!(
                    action,
                    Action::Offer { .. }
                        | Action::CancelOffer { .. }
                        | Action::Refused { .. }
                        | Action::Overflow { .. }
                        | Action::Announce { .. }
                        | Action::OfferCallback { .. }
                ) && gateway.send((tenant.0, action)).is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::error!("SIP side missed {n} routing actions (overload)");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The task that owns the routing host: applies configuration changes (and rebuilds the
/// gateway's model from them) and feeds SIP inputs, in arrival order.
pub async fn run_routing(
    mut routing: RoutingHost,
    mut updates: broadcast::Receiver<RoutingUpdate>,
    mut sip_inputs: mpsc::UnboundedReceiver<(Uuid, Input)>,
    models: watch::Sender<Arc<GatewayModel>>,
    mut tenants: HashMap<TenantId, (RoutingModel, bool)>,
) {
    let mut sip_open = true;
    loop {
        tokio::select! {
            update = updates.recv() => match update {
                Ok(update) => {
                    let demo = tenants.get(&update.tenant).is_some_and(|(_, d)| *d);
                    tenants.insert(update.tenant, ((*update.model).clone(), demo));
                    routing.apply(update.tenant, update.config).await;
                    publish_model(&models, &tenants);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("missed {n} routing updates; the next one carries the full config");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            input = sip_inputs.recv(), if sip_open => match input {
                Some((tenant, input)) => {
                    if !routing.input(TenantId(tenant), input).await {
                        tracing::warn!(%tenant, "routing input for a tenant without an engine");
                    }
                }
                None => sip_open = false,
            },
        }
    }
}

/// Sends the gateway a model built from every tenant's routing model.
pub fn publish_model(
    models: &watch::Sender<Arc<GatewayModel>>,
    tenants: &HashMap<TenantId, (RoutingModel, bool)>,
) {
    let model = GatewayModel {
        tenants: tenants
            .iter()
            .map(|(id, (m, demo))| tenant_model(*id, m, *demo))
            .collect(),
    };
    models.send_replace(Arc::new(model));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_tenant_gets_did_short_code_and_demo_credentials_only_in_demo() {
        let model: RoutingModel = crm_api::provision::parse(
            "[queues.support]\n[agents.1001]\nqueues=[\"support\"]\n[dids.\"+4930123456\"]\ntarget = { queue = \"support\" }\n",
        )
        .expect("valid model");
        let tenant = TenantId(Uuid::from_u128(1));
        let demo = tenant_model(tenant, &model, true);
        assert_eq!(
            demo.dids.get("+4930123456").map(QueueId::as_str),
            Some("support")
        );
        assert_eq!(demo.dids.get("100").map(QueueId::as_str), Some("support"));
        assert_eq!(demo.agents.len(), 1);
        assert_eq!(demo.agents[0].extension, "1001");
        let real = tenant_model(tenant, &model, false);
        assert!(
            real.agents.is_empty(),
            "no default passwords outside --demo"
        );
        assert!(!real.dids.contains_key("100"));
    }
}
