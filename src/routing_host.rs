//! One routing-engine task per tenant: the thin async shell around `acd_core::Engine`.
//!
//! acd-core is sans-IO, so something has to own each tenant's engine, feed it inputs, wake it at
//! `poll_timeout`, and carry out what it asks for. That is this module (STYLE.md §4: one driver
//! task `select!`s over commands and the timer, feeds the state machine, executes its outputs).
//! One task per tenant keeps the engine single-owner and lock-free, and matches the cluster
//! design in which exactly one node owns a tenant's engine. The engine's state is soft: a
//! restarted task rebuilds it from the stored configuration plus what the SIP side reports.
//!
//! Outputs today: queue-log rows are persisted through crm-api's store by one writer task that
//! batches whatever has accumulated into one transaction, so an engine never waits for a disk
//! write between two routing decisions (at 1,000 calls/s a commit per drained batch made the
//! engines fall seconds behind). Every action is also published on a broadcast channel for
//! the SIP side to act on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use acd_core::{Action, Engine, Input, RoutingConfig, Timestamp};
use crm_api::ids::TenantId;
use crm_api::{QueueLogEntry, Store};
use tokio::sync::{broadcast, mpsc};

/// What the host's tasks can be told.
#[derive(Debug)]
pub enum Command {
    /// Replace the configuration live (waiting contacts and calls in progress are kept).
    Apply(Arc<RoutingConfig>),
    /// A routing input from the SIP side or the API.
    Input(Input),
}

/// The wall clock in the engine's unit. The engine never reads a clock itself; this is the
/// one place the live system turns real time into its argument.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp(ms)
}

/// Routes commands to per-tenant engine tasks, starting a task on a tenant's first config.
pub struct RoutingHost {
    log: mpsc::UnboundedSender<QueueLogEntry>,
    tenants: HashMap<TenantId, mpsc::Sender<Command>>,
    actions: broadcast::Sender<(TenantId, Action)>,
}

impl RoutingHost {
    /// A host persisting queue-log rows to `store`.
    pub fn new(store: Store) -> Self {
        let (actions, _) = broadcast::channel(4096);
        let (log, rows) = mpsc::unbounded_channel();
        tokio::spawn(write_queue_log(store, rows));
        Self {
            log,
            tenants: HashMap::new(),
            actions,
        }
    }

    /// Every action of every tenant's engine, for the SIP side to carry out.
    pub fn subscribe_actions(&self) -> broadcast::Receiver<(TenantId, Action)> {
        self.actions.subscribe()
    }

    /// Applies `config` to the tenant's engine, starting the engine if it is not running.
    pub async fn apply(&mut self, tenant: TenantId, config: Arc<RoutingConfig>) {
        if let Some(tx) = self.tenants.get(&tenant)
            && tx.send(Command::Apply(config.clone())).await.is_ok()
        {
            return;
        }
        match Engine::new((*config).clone(), seed_for(tenant)) {
            Ok(engine) => {
                let (tx, rx) = mpsc::channel(1024);
                tokio::spawn(drive(
                    tenant,
                    engine,
                    rx,
                    self.log.clone(),
                    self.actions.clone(),
                ));
                self.tenants.insert(tenant, tx);
                tracing::info!(%tenant, "routing engine started");
            }
            Err(e) => tracing::error!(%tenant, "routing configuration refused by the engine: {e}"),
        }
    }

    /// Sends a routing input to a tenant's engine.
    pub async fn input(&self, tenant: TenantId, input: Input) -> bool {
        match self.tenants.get(&tenant) {
            Some(tx) => tx.send(Command::Input(input)).await.is_ok(),
            None => false,
        }
    }
}

/// Offer ids must differ between tenants and restarts; the tenant id's bits make a good seed.
fn seed_for(tenant: TenantId) -> u64 {
    let text = tenant.as_text();
    text.bytes()
        .fold(now().0, |h, b| h.rotate_left(5) ^ u64::from(b))
}

async fn drive(
    tenant: TenantId,
    mut engine: Engine,
    mut commands: mpsc::Receiver<Command>,
    log: mpsc::UnboundedSender<QueueLogEntry>,
    actions: broadcast::Sender<(TenantId, Action)>,
) {
    loop {
        let sleep = match engine.poll_timeout() {
            Some(at) => Duration::from_millis(at.0.saturating_sub(now().0)),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Apply(config)) => {
                    if let Err(e) = engine.apply_config(now(), (*config).clone()) {
                        tracing::error!(%tenant, "live reconfiguration refused: {e}");
                    } else {
                        tracing::info!(%tenant, "routing configuration applied live");
                    }
                }
                Some(Command::Input(input)) => {
                    // A transfer the engine cannot hand to the new agent (logged out of
                    // routing, no room) still took the call away from the transferor: end the
                    // contact for routing so the transferor wraps up now instead of staying
                    // busy until the caller hangs up.
                    let fallback = match &input {
                        Input::AssignToAgent { contact, .. } => Some(*contact),
                        _ => None,
                    };
                    if let Err(e) = engine.handle_input(now(), input) {
                        if let Some(contact) = fallback {
                            tracing::warn!(%tenant, "transfer not assigned ({e}); contact ended for routing");
                            let _ = engine.handle_input(now(), Input::ContactEnded { contact });
                        } else {
                            tracing::warn!(%tenant, "routing input refused: {e}");
                        }
                    }
                }
                None => break,
            },
            () = tokio::time::sleep(sleep) => engine.handle_timeout(now()),
        }
        drain(tenant, &mut engine, &log, &actions);
    }
    tracing::info!(%tenant, "routing engine stopped");
}

/// The drain rule: after every input, take actions until there are none.
fn drain(
    tenant: TenantId,
    engine: &mut Engine,
    log: &mpsc::UnboundedSender<QueueLogEntry>,
    actions: &broadcast::Sender<(TenantId, Action)>,
) {
    while let Some(action) = engine.poll_action() {
        if let Action::QueueLog(event) = &action {
            // The writer only stops when the runtime does.
            let _ = log.send(queue_log_entry(tenant, event));
        }
        // Nobody listening (no SIP side yet) is not an error.
        let _ = actions.send((tenant, action));
    }
}

/// Persists queue-log rows: waits for one, takes every row already queued behind it (up to a
/// bound), writes them in one transaction, repeats.
async fn write_queue_log(store: Store, mut rows: mpsc::UnboundedReceiver<QueueLogEntry>) {
    const MAX_BATCH: usize = 2000;
    while let Some(first) = rows.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rows.try_recv() {
                Ok(row) => batch.push(row),
                Err(_) => break,
            }
        }
        if let Err(e) = store.append_queue_log(&batch).await {
            tracing::error!(rows = batch.len(), "cannot persist queue-log rows: {e}");
        }
    }
}

fn queue_log_entry(tenant: TenantId, event: &acd_core::QueueLogEvent) -> QueueLogEntry {
    let data = serde_json::to_value(&event.kind).unwrap_or(serde_json::Value::Null);
    let name = data
        .get("event")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_owned();
    let time = chrono::DateTime::from_timestamp_millis(i64::try_from(event.at.0).unwrap_or(0))
        .unwrap_or_default();
    QueueLogEntry {
        tenant,
        time,
        contact_id: event.contact.map(|c| c.to_string()).unwrap_or_default(),
        queue: event.queue.as_ref().map(ToString::to_string),
        agent: event.agent.as_ref().map(ToString::to_string),
        event: name,
        data,
    }
}
