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
use crm_api::calls::{
    CallAction, CallError, CallOp, CallPhase, CallReply, CallRequest, LiveCall, MonitorMode,
    Monitoring, RecordingState, TransferTo,
};
use crm_api::customers::CdrWrapUp;
use crm_api::ids::TenantId;
use crm_api::routing::{EntryTarget, RoutingModel, RoutingUpdate, TrunkTransport};
use crm_api::sip_credentials::SipCredential;
use crm_api::{Store, customers::CdrRecord};
use sip_gateway::b2bua::control::CallPhase as GwPhase;
use sip_gateway::b2bua::control::{
    CallControl, CallInfo, ControlError, ControlMessage, ControlRequest, RecordingStatus,
    SupervisorMode, TransferTarget,
};
use sip_gateway::b2bua::model::TenantPrompts;
use sip_gateway::gateway::Uuid;
use sip_gateway::gateway::{AgentSip, GatewayConfig, GatewayModel, SipSecret, TenantModel};
use sip_gateway::gateway::{IvrChoice, IvrCollect, IvrMenu, IvrTarget, TenantMedia};
use sip_gateway::gateway::{TenantTrunks, TrunkCredentials, TrunkModel, TrunkSecret};
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
        trusted_sources_only: config.sip.trusted_sources_only,
        digest_algorithms: config
            .sip
            .digest_algorithms
            .iter()
            .map(|a| match a {
                crate::config::DigestAlgorithm::Md5 => sip_gateway::sip::auth::Algorithm::Md5,
                crate::config::DigestAlgorithm::Sha256 => sip_gateway::sip::auth::Algorithm::Sha256,
            })
            .collect(),
    })
}

/// Where recordings go (`<data_dir>/recordings`) and which queues record every call.
pub fn recording_settings(data_dir: &std::path::Path) -> sip_gateway::b2bua::RecordingSettings {
    sip_gateway::b2bua::RecordingSettings {
        dir: Some(data_dir.join("recordings")),
        queues: Default::default(),
    }
}

/// What the wiring keeps per tenant: its routing model, whether it is the demo tenant (which
/// gets the `100` short code), and its agents' SIP credentials (HA1, set through the API).
pub type TenantEntry = (RoutingModel, bool, Arc<Vec<SipCredential>>);

/// The gateway's view of one tenant. Agents get a SIP identity when an admin set their SIP
/// password (crm-api stores HA1 for the tenant's realm; the demo seed sets `demo<extension>`
/// the same way); there are no default passwords. Credentials of agents no longer in the
/// routing model are left out.
pub fn tenant_model(
    tenant: TenantId,
    model: &RoutingModel,
    demo: bool,
    sip: &[SipCredential],
) -> TenantModel {
    let mut dids = HashMap::new();
    for (number, did) in &model.dids {
        if let EntryTarget::Queue(q) = &did.target {
            dids.insert(number.clone(), QueueId::new(q));
        }
    }
    let mut agents = Vec::new();
    if demo && model.queues.contains_key("support") {
        // `sip:100@host` reaches the demo queue without dialling the full DID.
        dids.entry("100".to_owned())
            .or_insert_with(|| QueueId::new("support"));
    }
    for c in sip {
        let agent = acd_core::AgentId::new(&c.agent);
        if !model.agents.contains_key(&agent) {
            continue;
        }
        agents.push(AgentSip {
            agent,
            extension: c.extension.clone(),
            secret: SipSecret::from_ha1(&c.realm, &c.ha1.md5, &c.ha1.sha256),
        });
    }
    TenantModel {
        tenant: tenant.0,
        dids,
        agents,
        media: tenant_media(model),
        trunks: tenant_trunks(model),
    }
}

/// The tenant's trunks in failover order (by name: crm-api keeps them in a sorted map, so an
/// admin orders failover by naming, e.g. `1-primary`, `2-backup`) and the DIDs bound to one.
/// A host name is resolved here (blocking, once per routing change); a trunk whose host does
/// not resolve is kept without addresses (it is skipped for outbound calls and identifies no
/// inbound source) and logged.
pub fn tenant_trunks(model: &RoutingModel) -> TenantTrunks {
    use std::net::ToSocketAddrs;
    let mut trunks = Vec::new();
    for (name, t) in &model.trunks {
        let addresses: Vec<std::net::SocketAddr> = match t.host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![std::net::SocketAddr::new(ip, t.port)],
            Err(_) => match (t.host.as_str(), t.port).to_socket_addrs() {
                Ok(a) => a.collect(),
                Err(e) => {
                    tracing::warn!(trunk = %name, host = %t.host, "trunk host does not resolve: {e}");
                    Vec::new()
                }
            },
        };
        let transport = match t.transport {
            TrunkTransport::Udp => TransportKind::Udp,
            TrunkTransport::Tcp => TransportKind::Tcp,
            TrunkTransport::Tls => {
                tracing::warn!(trunk = %name, "TLS trunks are not served yet; using TCP");
                TransportKind::Tcp
            }
        };
        let credentials = match (&t.username, &t.password) {
            (Some(u), Some(p)) => Some(TrunkCredentials {
                username: u.clone(),
                password: TrunkSecret::new(p.clone()),
            }),
            _ => None,
        };
        trunks.push(TrunkModel {
            name: name.clone(),
            host: t.host.clone(),
            addresses,
            transport,
            credentials,
            register: t.register,
            max_channels: t.max_channels,
        });
    }
    let did_trunks = model
        .dids
        .iter()
        .filter_map(|(number, d)| d.trunk.clone().map(|t| (number.clone(), t)))
        .collect();
    TenantTrunks { trunks, did_trunks }
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
                // A prompt is named without its extension (`welcome`, not `welcome.wav`).
                prompt: m.prompt.trim_end_matches(".wav").to_owned(),
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
        // Set when the agent's wrap-up ends (the engine's `WrapUpEnd` queue-log row).
        wrap_ms: 0,
        recording: row.recording.as_ref().map(|r| r.path.display().to_string()),
        quality: {
            let mut q = match row.mos_x100 {
                Some(m) => serde_json::json!({ "mos": f64::from(m) / 100.0 }),
                None => serde_json::json!({}),
            };
            // The recording's pauses (payment card numbers) as [start, end] ms from its start:
            // the CDR has no column of its own for them.
            if let Some(r) = row.recording.as_ref().filter(|r| !r.pauses.is_empty()) {
                q["recording_pauses_ms"] = serde_json::json!(r.pauses);
            }
            q
        },
        mos_x100: row.mos_x100.map(i32::from),
        recording_ms: row
            .recording
            .as_ref()
            .map(|r| i64::try_from(r.duration_ms).unwrap_or(i64::MAX)),
        voicemail: row.voicemail.clone(),
        transfer: row.transfer.clone(),
    }
}

/// Most CDR rows (or wrap-up updates) written in one transaction.
const CDR_BATCH: usize = 2000;
/// How many batches a wrap-up whose CDR has not arrived yet is retried for.
const WRAP_RETRIES: u8 = 20;

/// Persists CDR rows and the agents' wrap-up times, batched like the queue-log writer: wait
/// for one item, take whatever has accumulated behind it (up to [`CDR_BATCH`]), write the
/// rows in one transaction and then the wrap-ups in another, repeat. At 1,000 calls/s a
/// transaction per row fell behind; a drained batch costs one commit. A committed batch is
/// durable; only rows still in memory are lost in a crash (as before, when each was in
/// flight on its own). A failed batch is logged and dropped: the calls are long over. The
/// task ends once the gateway's CDR channel closes and the last batch is written.
///
/// The wrap-up time is known only when the engine ends the agent's wrap-up (its
/// `QueueLogKind::WrapUpEnd` row, seconds after the CDR), so it is written as an update of
/// the contact's CDR rows. A wrap-up of 0 s can overtake its CDR (two channels); those are
/// kept and retried with the next batches.
pub async fn persist_cdrs(
    store: Store,
    mut rows: mpsc::UnboundedReceiver<sip_gateway::gateway::CdrRow>,
    mut actions: broadcast::Receiver<(TenantId, Action)>,
) {
    let mut rows_open = true;
    let mut actions_open = true;
    let mut retry: Vec<(CdrWrapUp, u8)> = Vec::new();
    // Ends when the gateway is gone (its CDR channel closed): wrap-ups still to come would
    // find no new rows, and the binary waits for this task before closing the database.
    while rows_open {
        let mut batch = Vec::new();
        let mut wraps: Vec<(CdrWrapUp, u8)> = std::mem::take(&mut retry);
        tokio::select! {
            row = rows.recv(), if rows_open => match row {
                Some(row) => batch.push(cdr_record(&row)),
                None => rows_open = false,
            },
            action = actions.recv(), if actions_open => match action {
                Ok((tenant, action)) => wraps.extend(wrap_up(tenant, &action).map(|w| (w, 0))),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("CDR writer missed {n} routing actions; some wrap-up times are lost");
                }
                Err(broadcast::error::RecvError::Closed) => actions_open = false,
            },
        }
        while batch.len() < CDR_BATCH {
            match rows.try_recv() {
                Ok(row) => batch.push(cdr_record(&row)),
                Err(_) => break,
            }
        }
        while wraps.len() < CDR_BATCH {
            match actions.try_recv() {
                Ok((tenant, action)) => wraps.extend(wrap_up(tenant, &action).map(|w| (w, 0))),
                Err(_) => break,
            }
        }
        retry = write_cdr_batch(&store, &batch, wraps).await;
    }
}

/// Writes one batch; returns the wrap-ups to try again.
async fn write_cdr_batch(
    store: &Store,
    batch: &[CdrRecord],
    wraps: Vec<(CdrWrapUp, u8)>,
) -> Vec<(CdrWrapUp, u8)> {
    if !batch.is_empty()
        && let Err(e) = store.insert_cdrs(batch).await
    {
        tracing::error!(rows = batch.len(), "cannot persist CDRs: {e}");
    }
    if wraps.is_empty() {
        return wraps;
    }
    let list: Vec<CdrWrapUp> = wraps.iter().map(|(w, _)| w.clone()).collect();
    match store.record_wrap_ups(&list).await {
        Ok(found) => wraps
            .into_iter()
            .zip(found)
            .filter(|((_, tries), found)| !found && *tries < WRAP_RETRIES)
            .map(|((w, tries), _)| (w, tries + 1))
            .collect(),
        Err(e) => {
            tracing::error!(rows = list.len(), "cannot record wrap-up times: {e}");
            Vec::new()
        }
    }
}

/// The wrap-up end in an engine action, if it is one.
fn wrap_up(tenant: TenantId, action: &Action) -> Option<CdrWrapUp> {
    let Action::QueueLog(event) = action else {
        return None;
    };
    let acd_core::io::QueueLogKind::WrapUpEnd { wrap_up_ms } = event.kind else {
        return None;
    };
    Some(CdrWrapUp {
        tenant,
        contact_id: event.contact?.to_string(),
        wrap_ms: i64::try_from(wrap_up_ms).unwrap_or(i64::MAX),
    })
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
                        | Action::DialCallback { .. }
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
    mut tenants: HashMap<TenantId, TenantEntry>,
    pops: mpsc::UnboundedSender<(TenantId, Input)>,
    (mut prompts, mut prompt_sets): (
        HashMap<TenantId, TenantPrompts>,
        mpsc::UnboundedReceiver<(TenantId, TenantPrompts)>,
    ),
) {
    let mut prompts_open = true;
    let mut sip_open = true;
    // Two changes of a tenant publish after their commits, in either order; a snapshot older
    // than one already applied (lower `routing_version`) must not win.
    let mut versions: HashMap<TenantId, i64> = HashMap::new();
    loop {
        tokio::select! {
            update = updates.recv() => match update {
                Ok(update) => {
                    let last = versions.entry(update.tenant).or_insert(i64::MIN);
                    if update.version < *last {
                        tracing::debug!(tenant = %update.tenant, version = update.version, "stale routing snapshot skipped");
                        continue;
                    }
                    *last = update.version;
                    let demo = tenants.get(&update.tenant).is_some_and(|(_, d, _)| *d);
                    tenants.insert(
                        update.tenant,
                        ((*update.model).clone(), demo, update.sip.clone()),
                    );
                    routing.apply(update.tenant, update.config).await;
                    publish_model(&models, &tenants, &prompts);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("missed {n} routing updates; the next one carries the full config");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            set = prompt_sets.recv(), if prompts_open => match set {
                Some((tenant, set)) => {
                    tracing::info!(%tenant, prompts = set.len(), "tenant prompts changed");
                    prompts.insert(tenant, set);
                    publish_model(&models, &tenants, &prompts);
                }
                None => prompts_open = false,
            },
            input = sip_inputs.recv(), if sip_open => match input {
                Some((tenant, input)) => {
                    // The screen pop needs the contact's attributes and the acceptance.
                    if matches!(
                        input,
                        Input::NewContact(_)
                            | Input::OfferAccepted { .. }
                            | Input::OfferRejected { .. }
                            | Input::ContactEnded { .. }
                    ) {
                        let _ = pops.send((TenantId(tenant), input.clone()));
                    }
                    if !routing.input(TenantId(tenant), input).await {
                        tracing::warn!(%tenant, "routing input for a tenant without an engine");
                    }
                }
                None => sip_open = false,
            },
        }
    }
}

/// Serves crm-api's call-control port: each request is translated into the gateway's
/// [`ControlMessage`], and the gateway's answer back into crm-api's plain types. Each answer
/// is awaited in its own task so one slow reply never holds up the next request.
pub async fn serve_call_control(
    mut requests: mpsc::Receiver<CallRequest>,
    gateway: mpsc::UnboundedSender<ControlMessage>,
) {
    while let Some(req) = requests.recv().await {
        let CallRequest { tenant, op, reply } = req;
        match op {
            CallOp::List => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if gateway
                    .send(ControlMessage::Calls {
                        tenant: tenant.0,
                        reply: tx,
                    })
                    .is_err()
                {
                    let _ = reply.send(Err(CallError::Unavailable));
                    continue;
                }
                tokio::spawn(async move {
                    let answer = match rx.await {
                        Ok(calls) => Ok(CallReply::Calls(calls.iter().map(live_call).collect())),
                        Err(_) => Err(CallError::Unavailable),
                    };
                    let _ = reply.send(answer);
                });
            }
            CallOp::Control { contact, action } => {
                let Some(control) = call_control(action) else {
                    let _ = reply.send(Err(CallError::Refused(
                        "not supported by this node".to_owned(),
                    )));
                    continue;
                };
                let request = ControlRequest {
                    tenant: tenant.0,
                    contact: acd_core::ContactId(contact),
                    control,
                };
                let (tx, rx) = tokio::sync::oneshot::channel();
                if gateway
                    .send(ControlMessage::Control { request, reply: tx })
                    .is_err()
                {
                    let _ = reply.send(Err(CallError::Unavailable));
                    continue;
                }
                tokio::spawn(async move {
                    let answer = match rx.await {
                        Ok(Ok(())) => Ok(CallReply::Done),
                        Ok(Err(ControlError::NoSuchCall)) => Err(CallError::NoSuchCall),
                        Ok(Err(ControlError::Unavailable)) | Err(_) => Err(CallError::Unavailable),
                        Ok(Err(e)) => Err(CallError::Refused(e.to_string())),
                    };
                    let _ = reply.send(answer);
                });
            }
            _ => {
                let _ = reply.send(Err(CallError::Unavailable));
            }
        }
    }
}

fn supervisor_mode(mode: MonitorMode) -> SupervisorMode {
    match mode {
        MonitorMode::Listen => SupervisorMode::Listen,
        MonitorMode::Whisper => SupervisorMode::Whisper,
        MonitorMode::Barge => SupervisorMode::Barge,
    }
}

/// crm-api's action as the gateway's control; `None` for an action crm-api has and this
/// binary does not translate yet (both enums are non-exhaustive).
fn call_control(action: CallAction) -> Option<CallControl> {
    Some(match action {
        CallAction::Hold => CallControl::Hold,
        CallAction::Resume => CallControl::Resume,
        CallAction::Transfer(to) => CallControl::Transfer {
            target: match to {
                TransferTo::Queue(q) => TransferTarget::Queue(QueueId::new(q)),
                TransferTo::Agent(a) => TransferTarget::Agent(acd_core::AgentId::new(a)),
                TransferTo::Number(n) => TransferTarget::Number(n),
            },
        },
        CallAction::RecordingStart => CallControl::RecordingStart,
        CallAction::RecordingStop => CallControl::RecordingStop,
        CallAction::RecordingPause => CallControl::RecordingPause,
        CallAction::RecordingResume => CallControl::RecordingResume,
        CallAction::Monitor { supervisor, mode } => CallControl::Monitor {
            supervisor: acd_core::AgentId::new(supervisor),
            mode: supervisor_mode(mode),
        },
        CallAction::StopMonitor => CallControl::StopMonitor,
        CallAction::Hangup => CallControl::Hangup,
        _ => return None,
    })
}

/// The gateway's live call as crm-api lists it.
fn live_call(c: &CallInfo) -> LiveCall {
    let time = |ms: u64| {
        chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(0)).unwrap_or_default()
    };
    LiveCall {
        contact: c.contact.0,
        queue: c.queue.to_string(),
        agent: c.agent.as_ref().map(ToString::to_string),
        phase: match c.phase {
            GwPhase::Queued => CallPhase::Queued,
            GwPhase::Ringing => CallPhase::Ringing,
            _ => CallPhase::Connected,
        },
        caller: c.caller.clone(),
        since: time(c.since_ms),
        answered_at: c.answered_ms.map(time),
        recording: match c.recording {
            RecordingStatus::Off => RecordingState::Off,
            RecordingStatus::Paused => RecordingState::Paused,
            _ => RecordingState::On,
        },
        monitored_by: c.monitored_by.as_ref().map(|(s, m)| Monitoring {
            supervisor: s.to_string(),
            mode: match m {
                SupervisorMode::Listen => MonitorMode::Listen,
                SupervisorMode::Whisper => MonitorMode::Whisper,
                SupervisorMode::Barge => MonitorMode::Barge,
            },
        }),
    }
}

/// Sends the gateway a model built from every tenant's routing model and uploaded prompts.
pub fn publish_model(
    models: &watch::Sender<Arc<GatewayModel>>,
    tenants: &HashMap<TenantId, TenantEntry>,
    prompts: &HashMap<TenantId, TenantPrompts>,
) {
    let model = GatewayModel {
        tenants: tenants
            .iter()
            .map(|(id, (m, demo, sip))| {
                let mut t = tenant_model(*id, m, *demo, sip);
                t.media.prompts = prompts.get(id).cloned().unwrap_or_default();
                t
            })
            .collect(),
    };
    models.send_replace(Arc::new(model));
}

/// A tenant's uploaded prompts (`crm_api::prompts::tenant_dir`), converted to 8 kHz mono.
/// Blocking (file I/O and resampling): call it at start or in `spawn_blocking`. A file that
/// does not load is skipped with a log line (crm-api validated it on upload, so only a
/// damaged disk gets here) rather than costing the tenant its other prompts.
pub fn load_tenant_prompts(data_dir: &std::path::Path, tenant: TenantId) -> TenantPrompts {
    let dir = crm_api::prompts::tenant_dir(data_dir, tenant);
    let mut set = HashMap::new();
    let Ok(langs) = std::fs::read_dir(&dir) else {
        return TenantPrompts::default();
    };
    for lang in langs.flatten() {
        let Some(language) = lang.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(files) = std::fs::read_dir(lang.path()) else {
            continue;
        };
        for f in files.flatten() {
            let path = f.path();
            if path.extension().and_then(|e| e.to_str()) != Some("wav") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            let loaded = std::fs::File::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|file| {
                    sip_gateway::audio::prompt::Prompt::from_wav(std::io::BufReader::new(file))
                        .map_err(|e| e.to_string())
                });
            match loaded {
                Ok(p) => {
                    set.insert((language.clone(), name), Arc::new(p));
                }
                Err(e) => tracing::warn!(path = %path.display(), "tenant prompt not loaded: {e}"),
            }
        }
    }
    TenantPrompts::new(set)
}

/// Every tenant's uploaded prompts under `<data_dir>/prompts/tenants` (start-up; blocking).
pub fn load_all_prompts(data_dir: &std::path::Path) -> HashMap<TenantId, TenantPrompts> {
    let mut all = HashMap::new();
    let Ok(dirs) = std::fs::read_dir(data_dir.join("prompts").join("tenants")) else {
        return all;
    };
    for d in dirs.flatten() {
        if let Some(tenant) = d.file_name().to_str().and_then(TenantId::parse) {
            let set = load_tenant_prompts(data_dir, tenant);
            if !set.is_empty() {
                all.insert(tenant, set);
            }
        }
    }
    all
}

/// Reloads a tenant's prompts off the SIP and routing tasks whenever crm-api reports an
/// upload or delete, and hands the new set to [`run_routing`], which publishes it with the
/// model. One task, one change at a time: two quick uploads are applied in order.
pub async fn reload_prompts(
    data_dir: std::path::PathBuf,
    mut changes: broadcast::Receiver<TenantId>,
    sets: mpsc::UnboundedSender<(TenantId, TenantPrompts)>,
) {
    loop {
        let tenants: Vec<TenantId> = match changes.recv().await {
            Ok(tenant) => vec![tenant],
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("missed {n} prompt changes; reloading every tenant's prompts");
                let dir = data_dir.clone();
                tokio::task::spawn_blocking(move || load_all_prompts(&dir).into_keys().collect())
                    .await
                    .unwrap_or_default()
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for tenant in tenants {
            let dir = data_dir.clone();
            match tokio::task::spawn_blocking(move || load_tenant_prompts(&dir, tenant)).await {
                Ok(set) => {
                    if sets.send((tenant, set)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!(%tenant, "loading tenant prompts failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(agent: &str, extension: &str) -> SipCredential {
        SipCredential {
            tenant: TenantId(Uuid::from_u128(1)),
            agent: agent.to_owned(),
            extension: extension.to_owned(),
            realm: "demo.zentrale".to_owned(),
            ha1: crm_api::sip_credentials::Ha1::derive(extension, "demo.zentrale", "demo1001"),
        }
    }

    #[test]
    fn agents_get_sip_identities_only_from_stored_credentials() {
        let model: RoutingModel = crm_api::provision::parse(
            "[queues.support]\n[agents.1001]\nqueues=[\"support\"]\n[agents.1002]\nqueues=[\"support\"]\n[dids.\"+4930123456\"]\ntarget = { queue = \"support\" }\n",
        )
        .expect("valid model");
        let tenant = TenantId(Uuid::from_u128(1));
        // 1002 has no password set; `gone` is no longer in the routing model.
        let sip = [credential("1001", "1001"), credential("gone", "1009")];
        let demo = tenant_model(tenant, &model, true, &sip);
        assert_eq!(
            demo.dids.get("+4930123456").map(QueueId::as_str),
            Some("support")
        );
        assert_eq!(demo.dids.get("100").map(QueueId::as_str), Some("support"));
        assert_eq!(demo.agents.len(), 1);
        assert_eq!(demo.agents[0].extension, "1001");
        assert_eq!(demo.agents[0].secret.realm(), "demo.zentrale");
        let real = tenant_model(tenant, &model, false, &[]);
        assert!(real.agents.is_empty(), "no default passwords");
        assert!(!real.dids.contains_key("100"));
    }

    #[test]
    fn tenant_uploads_are_loaded_resampled_and_published_with_the_model() {
        let data =
            std::env::temp_dir().join(format!("zentrale-wiring-prompts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let tenant = TenantId(Uuid::from_u128(7));
        let dir = crm_api::prompts::tenant_dir(&data, tenant).join("en");
        std::fs::create_dir_all(&dir).expect("dir");
        let mut wav = std::io::Cursor::new(Vec::new());
        sip_gateway::audio::wav::write_8k_mono(&mut wav, &[1000i16; 1600]).expect("wav");
        std::fs::write(dir.join("my_music.wav"), wav.into_inner()).expect("write");
        // Neither a temporary file of an upload in progress nor a broken file is loaded.
        std::fs::write(dir.join(".x.wav.tmp-1"), b"half").expect("write");
        std::fs::write(dir.join("broken.wav"), b"RIFF").expect("write");

        let all = load_all_prompts(&data);
        let _ = std::fs::remove_dir_all(&data);
        let set = all.get(&tenant).expect("the tenant's set");
        assert_eq!(set.len(), 1);
        assert_eq!(
            set.get("en", "my_music").map(|p| p.duration_ms()),
            Some(200)
        );

        let model: RoutingModel =
            crm_api::provision::parse("[queues.support]\n").expect("valid model");
        let tenants = HashMap::from([(tenant, (model, false, Arc::new(Vec::new())))]);
        let (models, rx) = watch::channel(Arc::new(GatewayModel::default()));
        publish_model(&models, &tenants, &all);
        assert_eq!(rx.borrow().tenants[0].media.prompts, *set);
    }

    fn cdr_row(
        tenant: Uuid,
        contact: acd_core::ContactId,
        leg: &'static str,
    ) -> sip_gateway::gateway::CdrRow {
        sip_gateway::gateway::CdrRow {
            tenant,
            contact,
            leg,
            started_ms: 1_800_000_000_000,
            answered_ms: Some(1_800_000_001_000),
            ended_ms: 1_800_000_060_000,
            caller: "+4930555".to_owned(),
            callee: "100".to_owned(),
            result: "answered",
            queue: Some("support".to_owned()),
            agent: Some("1001".to_owned()),
            wait_ms: 1000,
            talk_ms: 59_000,
            recording: None,
            mos_x100: Some(420),
            voicemail: None,
            transfer: None,
        }
    }

    fn wrap_end(contact: acd_core::ContactId, ms: u64) -> Action {
        Action::QueueLog(acd_core::QueueLogEvent {
            at: acd_core::Timestamp(1_800_000_070_000),
            queue: Some(QueueId::new("support")),
            contact: Some(contact),
            agent: Some(acd_core::AgentId::new("1001")),
            kind: acd_core::io::QueueLogKind::WrapUpEnd { wrap_up_ms: ms },
        })
    }

    /// The batch writer: everything sent lands (in a few transactions), wrap-up times reach
    /// the contact's rows even when the wrap-up end overtakes the CDR, and the task ends when
    /// both inputs close.
    #[tokio::test]
    async fn batch_writer_persists_every_cdr_and_the_wrap_up_times() {
        let store = Store::open("sqlite::memory:").await.expect("store");
        let tenant = store
            .create_tenant("acme", "Acme", chrono::Utc::now())
            .await
            .expect("tenant");
        let (rows_tx, rows_rx) = mpsc::unbounded_channel();
        let (actions_tx, actions_rx) = broadcast::channel(4096);
        // The wrap-up end of the first contact overtakes its CDR (two channels).
        let first = acd_core::ContactId::from_u128(1);
        actions_tx
            .send((tenant, wrap_end(first, 2_000)))
            .expect("send");
        let writer = tokio::spawn(persist_cdrs(store.clone(), rows_rx, actions_rx));
        tokio::task::yield_now().await;
        for i in 1..=600u128 {
            let contact = acd_core::ContactId::from_u128(i);
            rows_tx
                .send(cdr_row(tenant.0, contact, "caller"))
                .expect("send");
            rows_tx
                .send(cdr_row(tenant.0, contact, "agent"))
                .expect("send");
        }
        let second = acd_core::ContactId::from_u128(2);
        actions_tx
            .send((tenant, wrap_end(second, 4_500)))
            .expect("send");
        // Both inputs close: the writer drains and ends.
        drop(rows_tx);
        drop(actions_tx);
        tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("writer ends")
            .expect("no panic");
        assert_eq!(store.cdr_count(tenant).await.expect("count"), 1200);
        let legs = store
            .cdrs_of_contact(tenant, &second.to_string())
            .await
            .expect("rows");
        assert_eq!(legs.len(), 2);
        assert!(legs.iter().all(|l| l.wrap_ms == 4_500), "{legs:?}");
        assert!(legs.iter().all(|l| l.mos_x100 == Some(420)));
        let legs = store
            .cdrs_of_contact(tenant, &first.to_string())
            .await
            .expect("rows");
        assert_eq!(legs.len(), 2);
        assert!(legs.iter().all(|l| l.wrap_ms == 2_000), "{legs:?}");
    }

    #[test]
    fn ivr_menus_and_queue_media_reach_the_gateway_and_bad_menus_are_refused() {
        let base = "[skills.german]\n[queues.support]\n[queues.support.media]\nmusic = \"hold_music\"\n[queues.sales]\n[agents.1001]\nqueues=[\"support\"]\n[dids.\"+4930999\"]\ntarget = { menu = \"main\" }\n";
        let good = format!(
            "{base}[ivr_menus.main]\nprompt = \"language_menu\"\noptions = {{ \"1\" = {{ queue = \"support\" }}, \"2\" = {{ menu = \"number\" }} }}\nset = {{ \"1\" = {{ language = \"de\" }} }}\nrequire = {{ \"1\" = \"german >= 2\" }}\ndefault = {{ queue = \"support\" }}\n[ivr_menus.number]\nprompt = \"please_hold\"\ncollect = {{ attribute = \"customer_number\", digits = 8 }}\ndefault = {{ queue = \"sales\" }}\n"
        );
        let model: RoutingModel = crm_api::provision::parse(&good).expect("parses");
        model.validate().expect("valid");
        let media = tenant_media(&model);
        assert_eq!(media.entry_menus["+4930999"], "main");
        assert!(media.queues.contains_key(&QueueId::new("support")));
        let main = &media.menus["main"];
        assert_eq!(main.timeout_ms, 5000);
        let one = &main.options[&'1'];
        assert_eq!(one.target, IvrTarget::Queue(QueueId::new("support")));
        assert_eq!(one.set, vec![("language".to_owned(), "de".to_owned())]);
        assert_eq!(
            one.require.as_ref().map(ToString::to_string).as_deref(),
            Some("german >= 2")
        );
        let collect = media.menus["number"].collect.clone().expect("collect");
        assert_eq!((collect.max_digits, collect.terminator), (8, Some('#')));
        for bad in [
            // A requirement naming an unknown skill.
            "[ivr_menus.main]\nprompt = \"p\"\noptions = { \"1\" = \"hangup\" }\nrequire = { \"1\" = \"klingon\" }\ndefault = \"hangup\"\n",
            // Attributes for a key that is no option.
            "[ivr_menus.main]\nprompt = \"p\"\noptions = { \"1\" = \"hangup\" }\nset = { \"2\" = { language = \"de\" } }\ndefault = \"hangup\"\n",
            // Collect and options at once.
            "[ivr_menus.main]\nprompt = \"p\"\noptions = { \"1\" = \"hangup\" }\ncollect = { attribute = \"n\", digits = 4 }\ndefault = \"hangup\"\n",
            // No digits to collect.
            "[ivr_menus.main]\nprompt = \"p\"\ncollect = { attribute = \"n\", digits = 0 }\ndefault = \"hangup\"\n",
        ] {
            let model: RoutingModel =
                crm_api::provision::parse(&format!("{base}{bad}")).expect("parses");
            assert!(model.validate().is_err(), "accepted: {bad}");
        }
    }
}
