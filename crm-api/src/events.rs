//! The per-user event stream (`/api/v1/events`, a WebSocket) and screen pop.
//!
//! # Design
//!
//! One `tokio::sync::broadcast` channel carries every event of the installation, each tagged
//! with its tenant and target (a routing agent or the whole tenant); each socket task filters
//! for its principal. A broadcast send is one clone of an `Arc` per socket, which for the
//! hundreds of sockets of one node is cheaper and simpler than a registry of per-user senders
//! that must be cleaned up on disconnect. A socket that falls behind by more than the channel
//! capacity is told so (`lagged`) instead of silently missing events.

use crate::auth::{Perm, Principal};
use crate::customers::{Customer, TimelineItem};
use crate::error::ApiError;
use crate::ids::TenantId;
use crate::state::AppState;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Who an event is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Target {
    /// The users linked to this routing agent.
    Agent(String),
    /// Every user of the tenant allowed to see events.
    Tenant,
}

/// An event on the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A call was offered to or answered by the agent: the customer card (if the caller is
    /// known) and the latest timeline items.
    ScreenPop {
        /// The contact (acd-core contact id, text form).
        contact_id: String,
        /// Caller number as received.
        caller_number: String,
        /// The customer whose identity matches, if any.
        customer: Option<Box<Customer>>,
        /// Latest timeline items of that customer, newest first.
        timeline: Vec<TimelineItem>,
        /// What the call brought along: the dialled number, IVR choices (e.g. `language`) and
        /// digits the caller entered (e.g. a customer number), by attribute name.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        attributes: std::collections::BTreeMap<String, String>,
    },
    /// The tenant's routing configuration changed (supervisor wallboards reload).
    RoutingChanged {
        /// Version counter (audit id of the change).
        change: String,
    },
    /// The socket missed events because it did not keep up.
    Lagged {
        /// How many were missed.
        missed: u64,
    },
}

/// An event with its address.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Tenant.
    pub tenant: TenantId,
    /// Recipient(s).
    pub target: Target,
    /// Payload.
    pub event: Event,
}

/// Fan-out of events to sockets.
#[derive(Debug, Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<Envelope>>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    /// A hub with room for 1024 undelivered events per socket.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }
    /// Publishes; returns how many sockets are listening (not how many match).
    pub fn publish(&self, env: Envelope) -> usize {
        self.tx.send(Arc::new(env)).unwrap_or(0)
    }
    /// A new receiver.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.tx.subscribe()
    }
}

/// Whether `env` is for `who`.
pub fn is_for(env: &Envelope, who: &Principal) -> bool {
    if env.tenant != who.tenant {
        return false;
    }
    match &env.target {
        Target::Tenant => true,
        Target::Agent(a) => who.agent.as_deref() == Some(a.as_str()),
    }
}

/// The caller's event stream (WebSocket; JSON text frames, one [`Event`] each).
/// Authenticate with the session cookie, a bearer header or `?access_token=`.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    responses((status = 101, description = "WebSocket of Event"), (status = 401, body = crate::error::ErrorBody)))]
pub async fn events_ws(
    State(state): State<AppState>,
    who: Principal,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    who.require(Perm::Events)?;
    // Subscribe before the upgrade completes so nothing published after the 101 is lost.
    let rx = state.events().subscribe();
    Ok(ws.on_upgrade(move |socket| pump(socket, rx, who)))
}

async fn pump(mut socket: WebSocket, mut rx: broadcast::Receiver<Arc<Envelope>>, who: Principal) {
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let event = match msg {
                    Ok(env) if is_for(&env, &who) => env.event.clone(),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => Event::Lagged { missed },
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                let Ok(text) = serde_json::to_string(&event) else { continue };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => {
                match incoming {
                    // Clients send nothing meaningful; pings are answered by axum.
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}
